//! How a service's endpoints are protected and checked: active health
//! checks, passive outlier detection, and circuit breakers (with the
//! defaults an edge gateway needs, not Envoy's 1,024). Translated in
//! `translate/resilience.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::FieldError;

/// Active health checking: unhealthy endpoints get no traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (a GET of `path`), `grpc` (the gRPC health service) or `tcp`
    /// (a connection).
    #[serde(rename = "type")]
    pub kind: HealthCheckKind,
    /// HTTP: the path to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"))]
    pub path: Option<String>,
    /// HTTP: statuses that count as healthy (default 200).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
    /// HTTP: the Host header (default: the service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// gRPC: the service name asked about (default: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u32,
    /// Checks in a row that mark an unhealthy endpoint healthy again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Checks in a row that mark an endpoint unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Random extra time added to each interval, so checks spread out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    Http,
    Grpc,
    Tcp,
}

/// Passive outlier detection: endpoints that fail are ejected for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Eject after this many 5xx answers in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many gateway failures (502, 503, 504, connection
    /// failures) in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_failures: Option<u32>,
    /// Eject an endpoint whose share of failed requests over an interval
    /// reaches `threshold` percent ("50 % over 10 s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentage>,
    /// Eject an endpoint whose success rate falls this far below the
    /// others' (Envoy's statistical outlier test; needs several endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
    /// How often the failure percentage is computed and ejections end.
    #[serde(default = "default_outlier_interval_ms")]
    pub interval_ms: u32,
    /// The first ejection's length; each further one of the same endpoint
    /// lasts one more base time.
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u32,
    /// At most this share of the endpoints ejected at once (at least one
    /// can always be).
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailurePercentage {
    /// Percent of failed requests that ejects (1–100).
    pub threshold: u32,
    /// Requests an endpoint must have had in the interval to be judged.
    #[serde(default = "default_minimum_requests")]
    pub minimum_requests: u32,
}

/// Ejects endpoints whose success rate is below the mean of all judged
/// endpoints by more than `stdev_factor` standard deviations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessRate {
    /// Endpoints that must each have `minimum_requests` in the interval for
    /// the test to run at all (at least 2: it compares them).
    #[serde(default = "default_success_rate_hosts")]
    pub minimum_hosts: u32,
    /// Requests an endpoint must have had in the interval to be judged.
    #[serde(default = "default_success_rate_requests")]
    pub minimum_requests: u32,
    /// Standard deviations below the mean that eject, in thousandths
    /// (1900 = 1.9, Envoy's default).
    #[serde(default = "default_stdev_factor")]
    pub stdev_factor: u32,
}

/// Limits on what one service may hold at once; past them Envoy answers at
/// once with 503 (response flag `UO`) instead of queueing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// For default-priority routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Thresholds>,
    /// For `priority: high` routes: their own budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<Thresholds>,
}

/// One priority class's limits; unset fields take the documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Retries in flight at once; with `retry_budget` the larger applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Retries allowed as a share of the requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries in flight as a percent of active requests (1–100).
    pub percent: u32,
    /// Retries always allowed, however few requests are active.
    #[serde(default = "default_min_retry_concurrency")]
    pub min_concurrency: u32,
}

/// The defaults: sized for an edge gateway in front of many services.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
pub const DEFAULT_MAX_PENDING_REQUESTS: u32 = 10_000;
pub const DEFAULT_MAX_REQUESTS: u32 = 10_000;
/// Retries: 20 % of the active requests, at least 3 at once.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
pub const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

const MAX_INTERVAL_MS: u32 = 3_600_000;
const MAX_THRESHOLD: u32 = 1_000_000;

fn default_interval_ms() -> u32 {
    5_000
}
fn default_check_timeout_ms() -> u32 {
    1_000
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_outlier_interval_ms() -> u32 {
    10_000
}
fn default_base_ejection_ms() -> u32 {
    30_000
}
fn default_max_ejection_percent() -> u32 {
    50
}
fn default_minimum_requests() -> u32 {
    20
}
fn default_success_rate_hosts() -> u32 {
    3
}
fn default_success_rate_requests() -> u32 {
    100
}
fn default_stdev_factor() -> u32 {
    1_900
}
fn default_min_retry_concurrency() -> u32 {
    DEFAULT_MIN_RETRY_CONCURRENCY
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn in_range(
    value: u32,
    range: std::ops::RangeInclusive<u32>,
    field: String,
    errors: &mut Vec<FieldError>,
) {
    if !range.contains(&value) {
        errors.push(FieldError::new(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
}

impl HealthCheck {
    pub fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        let at = |name: &str| format!("{field}.{name}");
        match self.kind {
            HealthCheckKind::Http => match &self.path {
                Some(path) if path.starts_with('/') && !path.chars().any(char::is_whitespace) => {}
                Some(_) => errors.push(FieldError::new(
                    at("path"),
                    "must start with / and hold no spaces",
                )),
                None => errors.push(FieldError::new(
                    at("path"),
                    "required for an http health check",
                )),
            },
            HealthCheckKind::Grpc | HealthCheckKind::Tcp => {
                for (name, set) in [
                    ("path", self.path.is_some()),
                    ("expected_statuses", !self.expected_statuses.is_empty()),
                    ("host", self.host.is_some()),
                ] {
                    if set {
                        errors.push(FieldError::new(at(name), "only for an http health check"));
                    }
                }
            }
        }
        if self.kind != HealthCheckKind::Grpc && self.grpc_service.is_some() {
            errors.push(FieldError::new(
                at("grpc_service"),
                "only for a grpc health check",
            ));
        }
        for (i, status) in self.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(status) {
                errors.push(FieldError::new(
                    format!("{field}.expected_statuses[{i}]"),
                    "must be an HTTP status (100-599)",
                ));
            }
        }
        if let Some(host) = &self.host
            && !super::is_dns_name(host)
        {
            errors.push(FieldError::new(at("host"), "must be a DNS name"));
        }
        in_range(
            self.interval_ms,
            1..=MAX_INTERVAL_MS,
            at("interval_ms"),
            errors,
        );
        in_range(
            self.timeout_ms,
            1..=MAX_INTERVAL_MS,
            at("timeout_ms"),
            errors,
        );
        in_range(
            self.healthy_threshold,
            1..=1_000,
            at("healthy_threshold"),
            errors,
        );
        in_range(
            self.unhealthy_threshold,
            1..=1_000,
            at("unhealthy_threshold"),
            errors,
        );
        in_range(self.jitter_ms, 0..=MAX_INTERVAL_MS, at("jitter_ms"), errors);
    }
}

impl OutlierDetection {
    pub fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        let at = |name: &str| format!("{field}.{name}");
        if self.consecutive_5xx.is_none()
            && self.consecutive_gateway_failures.is_none()
            && self.failure_percentage.is_none()
            && self.success_rate.is_none()
        {
            errors.push(FieldError::new(
                field,
                "set at least one of consecutive_5xx, consecutive_gateway_failures, failure_percentage, success_rate",
            ));
        }
        if let Some(n) = self.consecutive_5xx {
            in_range(n, 1..=MAX_THRESHOLD, at("consecutive_5xx"), errors);
        }
        if let Some(n) = self.consecutive_gateway_failures {
            in_range(
                n,
                1..=MAX_THRESHOLD,
                at("consecutive_gateway_failures"),
                errors,
            );
        }
        if let Some(p) = &self.failure_percentage {
            in_range(
                p.threshold,
                1..=100,
                at("failure_percentage.threshold"),
                errors,
            );
            in_range(
                p.minimum_requests,
                1..=MAX_THRESHOLD,
                at("failure_percentage.minimum_requests"),
                errors,
            );
        }
        if let Some(s) = &self.success_rate {
            in_range(
                s.minimum_hosts,
                2..=MAX_THRESHOLD,
                at("success_rate.minimum_hosts"),
                errors,
            );
            in_range(
                s.minimum_requests,
                1..=MAX_THRESHOLD,
                at("success_rate.minimum_requests"),
                errors,
            );
            in_range(
                s.stdev_factor,
                100..=10_000,
                at("success_rate.stdev_factor"),
                errors,
            );
        }
        in_range(
            self.interval_ms,
            1..=MAX_INTERVAL_MS,
            at("interval_ms"),
            errors,
        );
        in_range(
            self.base_ejection_ms,
            1..=MAX_INTERVAL_MS,
            at("base_ejection_ms"),
            errors,
        );
        in_range(
            self.max_ejection_percent,
            1..=100,
            at("max_ejection_percent"),
            errors,
        );
    }
}

impl CircuitBreakers {
    pub fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        for (class, thresholds) in [("default", &self.default), ("high", &self.high)] {
            let Some(t) = thresholds else { continue };
            let at = |name: &str| format!("{field}.{class}.{name}");
            for (name, value) in [
                ("max_connections", t.max_connections),
                ("max_pending_requests", t.max_pending_requests),
                ("max_requests", t.max_requests),
            ] {
                if let Some(value) = value {
                    in_range(value, 1..=MAX_THRESHOLD, at(name), errors);
                }
            }
            if let Some(value) = t.max_retries {
                in_range(value, 0..=MAX_THRESHOLD, at("max_retries"), errors);
            }
            if let Some(budget) = &t.retry_budget {
                in_range(budget.percent, 1..=100, at("retry_budget.percent"), errors);
                in_range(
                    budget.min_concurrency,
                    0..=MAX_THRESHOLD,
                    at("retry_budget.min_concurrency"),
                    errors,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields<T>(value: serde_json::Value, check: impl Fn(&T, &mut Vec<FieldError>)) -> Vec<String>
    where
        T: serde::de::DeserializeOwned,
    {
        let parsed: T = serde_json::from_value(value).expect("json");
        let mut errors = Vec::new();
        check(&parsed, &mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn health_checks_are_checked_field_by_field() {
        let check = |h: &HealthCheck, e: &mut Vec<FieldError>| h.validate("health_check", e);
        assert_eq!(
            fields(json!({"type": "http", "path": "/healthz"}), check),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(
                json!({"type": "http", "interval_ms": 0, "expected_statuses": [700]}),
                check
            ),
            [
                "health_check.path",
                "health_check.expected_statuses[0]",
                "health_check.interval_ms"
            ]
        );
        assert_eq!(
            fields(
                json!({"type": "tcp", "path": "/x", "grpc_service": "a"}),
                check
            ),
            ["health_check.path", "health_check.grpc_service"]
        );
    }

    #[test]
    fn outlier_detection_needs_a_trigger_and_sane_numbers() {
        let check =
            |o: &OutlierDetection, e: &mut Vec<FieldError>| o.validate("outlier_detection", e);
        assert_eq!(fields(json!({}), check), ["outlier_detection"]);
        assert_eq!(
            fields(
                json!({"failure_percentage": {"threshold": 101}, "max_ejection_percent": 0}),
                check
            ),
            [
                "outlier_detection.failure_percentage.threshold",
                "outlier_detection.max_ejection_percent"
            ]
        );
    }

    #[test]
    fn circuit_breakers_refuse_zero_limits() {
        let check =
            |c: &CircuitBreakers, e: &mut Vec<FieldError>| c.validate("circuit_breakers", e);
        assert_eq!(
            fields(
                json!({"high": {"max_requests": 0, "retry_budget": {"percent": 0}}}),
                check
            ),
            [
                "circuit_breakers.high.max_requests",
                "circuit_breakers.high.retry_budget.percent"
            ]
        );
    }
}
