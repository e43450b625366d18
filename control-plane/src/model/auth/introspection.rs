//! OAuth2 token introspection providers (RFC 7662) for opaque tokens.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretRef, check_http_url, jwt_issuer::default_consumer_claim};
use crate::model::{FieldError, Kind, NAME_PATTERN, Resource, check_name};

fn default_max_cache_seconds() -> u32 {
    60
}
fn default_introspection_timeout_ms() -> u32 {
    200
}

/// An RFC 7662 token introspection endpoint for opaque OAuth2 tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionProvider {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The team it belongs to (`/v1/owners`); absent: the operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub owner: Option<String>,
    /// Free key/value labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: crate::model::Labels,
    /// Other owners' resources may refer to it (set by the operators).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    pub endpoint: String,
    pub client_id: String,
    /// The client secret, by reference.
    pub client_secret: SecretRef,
    /// How long an active answer is reused (never past the token's exp).
    #[serde(default = "default_max_cache_seconds")]
    #[schemars(range(max = 3600))]
    pub max_cache_seconds: u32,
    /// Per-call timeout; keep it below the gateway's ext_authz timeout.
    #[serde(default = "default_introspection_timeout_ms")]
    #[schemars(range(min = 1, max = 5000))]
    pub timeout_ms: u32,
    /// The response field that names the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
}

impl Resource for IntrospectionProvider {
    const KIND: Kind = Kind::IntrospectionProvider;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if let Err(e) = check_http_url(&self.endpoint) {
            errors.push(FieldError::new("endpoint", e));
        }
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            errors.push(FieldError::new("client_id", "must be 1-256 characters"));
        }
        self.client_secret.validate("client_secret", &mut errors);
        if self.max_cache_seconds > 3600 {
            errors.push(FieldError::new("max_cache_seconds", "must be at most 3600"));
        }
        if !(1..=5000).contains(&self.timeout_ms) {
            errors.push(FieldError::new("timeout_ms", "must be between 1 and 5000"));
        }
        if self.consumer_claim.is_empty() || self.consumer_claim.len() > 128 {
            errors.push(FieldError::new(
                "consumer_claim",
                "must be 1-128 characters",
            ));
        }
        errors
    }
}
