//! API keys as stored: the SHA-256 of the key and its state, never the key.
//! Minting lives in `crate::secret`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{API_KEY_PREFIX, check_tokens};
use crate::model::FieldError;

/// An API key as stored: only the SHA-256 of the key, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApiKey {
    pub id: String,
    pub consumer: String,
    /// SHA-256 of the whole key, hex.
    pub sha256: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

/// The state of a key at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyStatus {
    Active,
    Expired,
    Revoked,
}

impl StoredApiKey {
    pub fn status(&self, now_ms: i64) -> ApiKeyStatus {
        if self.revoked_at_ms.is_some() {
            ApiKeyStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            ApiKeyStatus::Expired
        } else {
            ApiKeyStatus::Active
        }
    }

    /// The public part shown in listings: `gk_<id>`.
    pub fn prefix(&self) -> String {
        format!("{API_KEY_PREFIX}{}", self.id)
    }

    /// Validates requested scopes for a new key.
    pub fn check_scopes(scopes: &[String]) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_tokens("scopes", scopes, &mut errors);
        errors
    }
}
