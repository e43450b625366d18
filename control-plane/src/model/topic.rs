//! Topics of the message broker (`gatehouse-broker`): which topic names a
//! resource covers (one name, or `prefix.*`), who may publish and subscribe
//! (scopes and roles of the authenticated consumer), the largest message,
//! how many messages are kept for subscribers that reconnect, and what
//! happens to a subscriber that does not keep up.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Kind, NAME_PATTERN, Resource, check_name};

/// Largest `max_message_bytes`: 1 MiB.
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
/// Most messages kept per topic name.
pub const MAX_RETAIN: u32 = 10_000;

/// A topic (or a family of topics) of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topic {
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
    /// The topic names covered: one name (lower-case letters, digits, `.`,
    /// `_`, `-`), or `prefix.*` for every name under `prefix.`. Defaults to
    /// the resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Who may publish (none listed: any authenticated consumer).
    #[serde(default, skip_serializing_if = "TopicAccess::is_open")]
    pub publish: TopicAccess,
    /// Who may subscribe (none listed: any authenticated consumer).
    #[serde(default, skip_serializing_if = "TopicAccess::is_open")]
    pub subscribe: TopicAccess,
    /// Largest message body, in bytes (default 64 KiB, at most 1 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// Messages kept per topic name for subscribers that reconnect with
    /// their last event id (default 100, at most 10,000; 0 keeps none).
    #[serde(default = "default_retain")]
    pub retain: u32,
    /// A subscriber whose queue is full: `disconnect` (close code 4000) or
    /// `drop_oldest` (its oldest queued message is dropped).
    #[serde(default)]
    pub slow_consumer: SlowConsumer,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicAccess {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl TopicAccess {
    fn is_open(&self) -> bool {
        self.scopes.is_empty() && self.roles.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumer {
    #[default]
    Disconnect,
    DropOldest,
}

fn default_max_message_bytes() -> u32 {
    64 * 1024
}

fn default_retain() -> u32 {
    100
}

pub use gatehouse_proto::broker::is_topic_name;

impl Topic {
    /// The pattern in force: `pattern`, or the resource's name.
    pub fn pattern(&self) -> &str {
        self.pattern.as_deref().unwrap_or(&self.name)
    }
}

fn check_access(access: &TopicAccess, field: &str, errors: &mut Vec<FieldError>) {
    for (list, values) in [("scopes", &access.scopes), ("roles", &access.roles)] {
        for (i, value) in values.iter().enumerate() {
            if value.is_empty() || value.len() > 128 || value.contains(char::is_whitespace) {
                errors.push(FieldError::new(
                    format!("{field}.{list}[{i}]"),
                    "1 to 128 characters, no spaces",
                ));
            }
        }
    }
}

impl Resource for Topic {
    const KIND: Kind = Kind::Topic;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if let Some(pattern) = &self.pattern {
            let name = pattern.strip_suffix(".*").unwrap_or(pattern);
            if !is_topic_name(name) {
                errors.push(FieldError::new(
                    "pattern",
                    "a topic name (a-z, 0-9, '.', '_', '-'; up to 128) or prefix.*",
                ));
            }
        }
        check_access(&self.publish, "publish", &mut errors);
        check_access(&self.subscribe, "subscribe", &mut errors);
        if !(1..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            errors.push(FieldError::new(
                "max_message_bytes",
                format!("must be between 1 and {MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.retain > MAX_RETAIN {
            errors.push(FieldError::new(
                "retain",
                format!("must be at most {MAX_RETAIN}"),
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(json: serde_json::Value) -> Topic {
        serde_json::from_value(json).expect("a topic")
    }

    #[test]
    fn topics_are_checked_by_field() {
        let ok = topic(serde_json::json!({"name": "orders", "pattern": "orders.*",
            "publish": {"scopes": ["orders:publish"]}, "retain": 10}));
        assert!(ok.validate().is_empty());
        assert_eq!(ok.pattern(), "orders.*");
        assert_eq!(topic(serde_json::json!({"name": "news"})).pattern(), "news");
        for (json, field) in [
            (
                serde_json::json!({"name": "a", "pattern": "Orders"}),
                "pattern",
            ),
            (serde_json::json!({"name": "a", "pattern": "*"}), "pattern"),
            (
                serde_json::json!({"name": "a", "max_message_bytes": 0}),
                "max_message_bytes",
            ),
            (serde_json::json!({"name": "a", "retain": 10001}), "retain"),
            (
                serde_json::json!({"name": "a", "subscribe": {"scopes": ["a b"]}}),
                "subscribe.scopes[0]",
            ),
        ] {
            let errors = topic(json.clone()).validate();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{json}: {errors:?}"
            );
        }
        assert!(is_topic_name("orders.eu-1") && !is_topic_name(".x") && !is_topic_name(""));
    }
}
