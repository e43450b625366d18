//! A route's retries and its priority class. Translated in
//! `translate/retry.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, MAX_TIMEOUT_MS};

/// When and how a failed request is tried again, on another endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Conditions: `5xx`, `gateway-error` (502, 503, 504), `reset`,
    /// `connect-failure`, `retriable-4xx` (409), `refused-stream`.
    #[serde(default = "default_on")]
    pub on: Vec<String>,
    /// Further statuses that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// Retries after the first attempt.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Each attempt's own timeout (a hung endpoint is left for the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u32>,
    /// Exponential backoff with jitter between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Retry methods that are not idempotent (POST, PATCH) too. By default
    /// only GET, HEAD, OPTIONS, PUT and DELETE are retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_idempotent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub base_ms: u32,
    /// At least `base_ms` (default: ten times it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u32>,
}

/// A route's priority class: `high` routes use the services' high-priority
/// circuit-breaker budget, so they are served when default traffic has
/// used up its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoutePriority {
    #[default]
    Default,
    High,
}

/// The retry conditions a route may name (Envoy's `x-envoy-retry-on`).
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
];

/// Methods retried unless `non_idempotent` is set.
pub const IDEMPOTENT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];

pub const MAX_RETRY_ATTEMPTS: u32 = 10;

fn default_on() -> Vec<String> {
    vec![
        "gateway-error".into(),
        "reset".into(),
        "connect-failure".into(),
    ]
}

fn default_attempts() -> u32 {
    2
}

impl Retries {
    pub fn validate(&self, field: &str, timeout_ms: Option<u32>, errors: &mut Vec<FieldError>) {
        let at = |name: &str| format!("{field}.{name}");
        if self.on.is_empty() && self.status_codes.is_empty() {
            errors.push(FieldError::new(
                at("on"),
                "name at least one condition (or status_codes)",
            ));
        }
        for (i, condition) in self.on.iter().enumerate() {
            if !RETRY_ON.contains(&condition.as_str()) {
                errors.push(FieldError::new(
                    format!("{field}.on[{i}]"),
                    format!("must be one of {}", RETRY_ON.join(", ")),
                ));
            }
        }
        for (i, status) in self.status_codes.iter().enumerate() {
            if !(100..=599).contains(status) {
                errors.push(FieldError::new(
                    format!("{field}.status_codes[{i}]"),
                    "must be an HTTP status (100-599)",
                ));
            }
        }
        if !(1..=MAX_RETRY_ATTEMPTS).contains(&self.attempts) {
            errors.push(FieldError::new(
                at("attempts"),
                format!("must be between 1 and {MAX_RETRY_ATTEMPTS}"),
            ));
        }
        if let Some(per_try) = self.per_try_timeout_ms {
            if !(1..=MAX_TIMEOUT_MS).contains(&per_try) {
                errors.push(FieldError::new(
                    at("per_try_timeout_ms"),
                    format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                ));
            } else if timeout_ms.is_some_and(|timeout| per_try > timeout) {
                errors.push(FieldError::new(
                    at("per_try_timeout_ms"),
                    "must not exceed the route's timeout_ms",
                ));
            }
        }
        if let Some(backoff) = &self.backoff {
            if !(1..=MAX_TIMEOUT_MS).contains(&backoff.base_ms) {
                errors.push(FieldError::new(
                    at("backoff.base_ms"),
                    format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                ));
            }
            if let Some(max) = backoff.max_ms
                && (max < backoff.base_ms || max > MAX_TIMEOUT_MS)
            {
                errors.push(FieldError::new(
                    at("backoff.max_ms"),
                    format!("must be between backoff.base_ms and {MAX_TIMEOUT_MS}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(value: serde_json::Value, timeout: Option<u32>) -> Vec<String> {
        let retries: Retries = serde_json::from_value(value).expect("json");
        let mut errors = Vec::new();
        retries.validate("retries", timeout, &mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn retries_are_checked_field_by_field() {
        assert!(fields(json!({}), None).is_empty(), "the defaults are valid");
        assert_eq!(
            fields(
                json!({"on": ["5xx", "sometimes"], "attempts": 0, "status_codes": [42],
                       "backoff": {"base_ms": 100, "max_ms": 50}}),
                None
            ),
            [
                "retries.on[1]",
                "retries.status_codes[0]",
                "retries.attempts",
                "retries.backoff.max_ms"
            ]
        );
        assert_eq!(
            fields(json!({"per_try_timeout_ms": 2000}), Some(1000)),
            ["retries.per_try_timeout_ms"]
        );
    }
}
