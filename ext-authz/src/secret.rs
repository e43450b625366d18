//! Resolves secret references (`{env: NAME}` / `{file: PATH}`) from this
//! process's environment and filesystem. Values are never logged.

use gatehouse_proto::auth::{SecretRef, secret_ref::Source};

/// A secret's value; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads the secret; the error names where it looked, never what it found.
pub fn resolve(reference: &SecretRef) -> Result<Secret, String> {
    let value = match &reference.source {
        Some(Source::Env(name)) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
        }
        Some(Source::File(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {path}: {}", e.kind()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => return Err("no source given".into()),
    };
    if value.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(Secret(value))
}
