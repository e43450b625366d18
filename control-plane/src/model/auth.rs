//! Who may call the APIs behind the gateway: consumers, their API keys, JWT
//! issuers, OAuth2 introspection providers, and the per-route policy.
//!
//! Secrets never enter this model: API keys are stored as SHA-256 hashes, and
//! the HMAC and client secrets are references (`{env: NAME}` / `{file: PATH}`)
//! that ext-authz resolves from its own environment.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::FieldError;

/// Consumer names: user or application identifiers (emails, ids), safe in a URL path.
pub const CONSUMER_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$";
/// Plans, roles and scopes: single tokens (they travel space-separated).
pub(super) const TOKEN_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$";
pub(super) const MAX_LIST: usize = 64;
pub(super) const MAX_METADATA: usize = 32;

mod api_key;
mod consumer;
mod introspection;
mod jwt_issuer;
mod route_auth;

pub use crate::secret::{API_KEY_PREFIX, MintedKey, mint_api_key};
pub use api_key::{ApiKeyStatus, StoredApiKey};
pub use consumer::{CertificateIdentity, Consumer, is_consumer_name};
pub use introspection::IntrospectionProvider;
pub use jwt_issuer::{JwtAlgorithm, JwtIssuer};
pub use route_auth::{AuthMethod, FailureMode, RouteAuth, VerifyIn};

pub(crate) fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'))
}

pub(super) fn token_message() -> String {
    "must be a single token: letters, digits, '.', '_', ':', '/', '-' (at most 128)".into()
}

pub(super) fn check_tokens(field: &str, tokens: &[String], errors: &mut Vec<FieldError>) {
    if tokens.len() > MAX_LIST {
        errors.push(FieldError::new(
            field,
            format!("at most {MAX_LIST} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        if !is_token(token) {
            errors.push(FieldError::new(format!("{field}[{i}]"), token_message()));
        } else if !seen.insert(token) {
            errors.push(FieldError::new(format!("{field}[{i}]"), "listed twice"));
        }
    }
}

/// Where a secret lives. ext-authz reads it from its own environment or
/// filesystem, so secret values never reach the store, the API or the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable of the ext-authz process.
    Env(String),
    /// A file readable by the ext-authz process (e.g. a mounted secret).
    File(String),
}

impl SecretRef {
    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        match self {
            SecretRef::Env(name) => {
                let valid = !name.is_empty()
                    && name.len() <= 128
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push(FieldError::new(
                        format!("{field}.env"),
                        "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    ));
                }
            }
            SecretRef::File(path) => {
                if !path.starts_with('/') || path.len() > 1024 || path.contains('\0') {
                    errors.push(FieldError::new(
                        format!("{field}.file"),
                        "must be an absolute path",
                    ));
                }
            }
        }
    }
}

pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty()
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be an absolute URL with a host".into());
    }
    Ok(())
}
