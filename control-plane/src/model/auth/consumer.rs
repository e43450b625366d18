//! Consumers: who calls the APIs, with their plan, roles and metadata.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    CONSUMER_NAME_PATTERN, MAX_METADATA, TOKEN_PATTERN, check_tokens, is_token, token_message,
};
use crate::model::{FieldError, Kind, Resource};

/// Someone who calls the APIs: the identity behind a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[schemars(regex(pattern = CONSUMER_NAME_PATTERN))]
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
    /// Free-text tier (free, pro, enterprise...) used by rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOKEN_PATTERN))]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Resource for Consumer {
    const KIND: Kind = Kind::Consumer;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn is_valid_name(name: &str) -> bool {
        is_consumer_name(name)
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_consumer_name(&self.name) {
            errors.push(FieldError::new(
                "name",
                "must be 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            ));
        }
        if let Some(plan) = &self.plan
            && !is_token(plan)
        {
            errors.push(FieldError::new("plan", token_message()));
        }
        check_tokens("roles", &self.roles, &mut errors);
        if self.metadata.len() > MAX_METADATA {
            errors.push(FieldError::new(
                "metadata",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        for (key, value) in &self.metadata {
            if key.is_empty() || key.len() > 64 || value.len() > 1024 {
                errors.push(FieldError::new(
                    format!("metadata.{key}"),
                    "keys must be 1-64 bytes and values at most 1024 bytes",
                ));
            }
        }
        errors
    }
}

pub fn is_consumer_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn consumer_names_and_tokens() {
        let consumer = Consumer {
            owner: None,
            labels: Default::default(),
            shared: false,
            name: "alice@example.com".into(),
            plan: Some("pro".into()),
            roles: vec!["admin".into(), "admin".into(), "has space".into()],
            metadata: BTreeMap::new(),
        };
        assert_eq!(fields(consumer.validate()), vec!["roles[1]", "roles[2]"]);
        assert!(!is_consumer_name("../etc"));
        assert!(!is_consumer_name(""));
    }
}
