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

/// Why a secret cannot be read: names where it looked, never what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    Unset(String),
    #[error("cannot read {path}: {kind}")]
    Unreadable {
        path: String,
        kind: std::io::ErrorKind,
    },
    #[error("no source given")]
    NoSource,
    #[error("no client secret configured")]
    NotConfigured,
    #[error("the secret is empty")]
    Empty,
}

/// Reads the secret.
pub fn resolve(reference: &SecretRef) -> Result<Secret, SecretError> {
    let value = match &reference.source {
        Some(Source::Env(name)) => {
            std::env::var(name).map_err(|_| SecretError::Unset(name.clone()))?
        }
        Some(Source::File(path)) => std::fs::read_to_string(path)
            .map_err(|e| SecretError::Unreadable {
                path: path.clone(),
                kind: e.kind(),
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => return Err(SecretError::NoSource),
    };
    if value.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(Secret(value))
}
