//! Rate limits: policies attached to routes (or global) and per-plan quotas.
//!
//! A policy counts requests by a key built from `by` (consumer, plan, client
//! IP, route, a request header, or a combination) and allows `limit`
//! requests per period, decided per request by ratelimit-service
//! (`exact`) or inside Envoy from quota assignments (`quota`). Plans give
//! every consumer on them default quotas.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Kind, NAME_PATTERN, Reference, Resource, check_name, is_header_name};

const MAX_REQUESTS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

impl Period {
    pub fn seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
        }
    }
}

/// `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: u64,
    pub per: Period,
}

impl Limit {
    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            errors.push(FieldError::new(
                format!("{field}.requests"),
                format!("must be between 1 and {MAX_REQUESTS}"),
            ));
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    /// Counts per calendar window (cheapest; allows a burst at window edges).
    #[default]
    FixedWindow,
    /// Weighs the previous window by how much of it still overlaps.
    SlidingWindow,
    /// Refills `limit.requests` per period up to `burst`.
    TokenBucket,
}

/// What a policy does when its counter store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Allow, within a local in-memory limit per instance (grace mode).
    #[default]
    Open,
    /// Refuse (429).
    Closed,
}

/// Where a policy's requests are decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// ratelimit-service decides every request (Envoy's rate limit
    /// service): exact counts, RateLimit headers.
    #[default]
    Exact,
    /// Envoy decides in process from a share of the limit that
    /// ratelimit-service assigns it by demand (Envoy's quota protocol,
    /// RLQS): no call per request, approximate, for high-volume limits.
    Quota,
}

/// One part of the key a policy counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountBy {
    Consumer,
    Plan,
    ClientIp,
    Route,
    Header(String),
}

impl CountBy {
    pub fn parse(s: &str) -> Option<CountBy> {
        Some(match s {
            "consumer" => CountBy::Consumer,
            "plan" => CountBy::Plan,
            "client_ip" => CountBy::ClientIp,
            "route" => CountBy::Route,
            other => {
                let header = other.strip_prefix("header:")?;
                (is_header_name(header) && header.to_ascii_lowercase() == header)
                    .then(|| CountBy::Header(header.to_owned()))?
            }
        })
    }
}

/// A rate limit attached to routes, or to every route (`global`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
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
    pub limit: Limit,
    #[serde(default)]
    pub algorithm: RateLimitAlgorithm,
    /// Token bucket capacity (default: `limit.requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// What the counter key is made of: `consumer`, `plan`, `client_ip`,
    /// `route`, `header:<name>`; several combine (per consumer per route).
    /// Empty: one counter shared by every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<String>,
    /// Count and report, never block.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    #[serde(default)]
    pub on_store_failure: StoreFailure,
    /// The routes it applies to (unless `global`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Applies to every route.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global: bool,
    /// `exact` (default) or `quota`.
    #[serde(default, skip_serializing_if = "is_exact")]
    pub enforcement: Enforcement,
}

fn is_exact(e: &Enforcement) -> bool {
    *e == Enforcement::Exact
}

impl RateLimitPolicy {
    pub fn is_quota(&self) -> bool {
        self.enforcement == Enforcement::Quota
    }
}

impl Resource for RateLimitPolicy {
    const KIND: Kind = Kind::RateLimitPolicy;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        self.limit.validate("limit", &mut errors);
        match (self.algorithm, self.burst) {
            (RateLimitAlgorithm::TokenBucket, Some(burst))
                if !(1..=MAX_REQUESTS).contains(&burst) =>
            {
                errors.push(FieldError::new(
                    "burst",
                    format!("must be between 1 and {MAX_REQUESTS}"),
                ));
            }
            (RateLimitAlgorithm::TokenBucket, _) | (_, None) => {}
            (_, Some(_)) => errors.push(FieldError::new(
                "burst",
                "only applies to algorithm token_bucket",
            )),
        }
        if self.by.len() > 4 {
            errors.push(FieldError::new("by", "at most 4 parts"));
        }
        for (i, part) in self.by.iter().enumerate() {
            if CountBy::parse(part).is_none() {
                errors.push(FieldError::new(
                    format!("by[{i}]"),
                    "must be consumer, plan, client_ip, route or header:<lowercase header name>",
                ));
            } else if self.by[..i].contains(part) {
                errors.push(FieldError::new(format!("by[{i}]"), "listed twice"));
            }
        }
        if self.is_quota() {
            if self.algorithm == RateLimitAlgorithm::SlidingWindow {
                errors.push(FieldError::new(
                    "algorithm",
                    "enforcement quota assigns token buckets: use token_bucket or fixed_window (enforced as a token bucket)",
                ));
            }
            if self.shadow {
                errors.push(FieldError::new(
                    "shadow",
                    "shadow mode needs enforcement exact (Envoy's quota filter cannot report without enforcing per policy)",
                ));
            }
        }
        match (self.global, self.routes.is_empty()) {
            (true, false) => errors.push(FieldError::new(
                "routes",
                "a global policy applies to every route: leave routes empty",
            )),
            (false, true) => errors.push(FieldError::new(
                "routes",
                "name the routes it applies to, or set global: true",
            )),
            _ => {}
        }
        errors
    }

    fn references(&self) -> Vec<Reference> {
        self.routes
            .iter()
            .enumerate()
            .map(|(i, route)| Reference {
                field: format!("routes[{i}]"),
                kind: Kind::Route,
                name: route.clone(),
            })
            .collect()
    }
}

/// Default quotas for every consumer on a plan (the consumer's `plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan name consumers carry (`free`, `pro`...).
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
    pub limits: Vec<Limit>,
    #[serde(default)]
    pub algorithm: RateLimitAlgorithm,
}

impl Resource for Plan {
    const KIND: Kind = Kind::Plan;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if self.limits.is_empty() || self.limits.len() > 4 {
            errors.push(FieldError::new("limits", "1 to 4 limits"));
        }
        for (i, limit) in self.limits.iter().enumerate() {
            limit.validate(&format!("limits[{i}]"), &mut errors);
            if self.limits[..i].iter().any(|l| l.per == limit.per) {
                errors.push(FieldError::new(
                    format!("limits[{i}].per"),
                    "one limit per period",
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> RateLimitPolicy {
        serde_json::from_value(json).unwrap()
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn policies_name_their_routes_or_are_global() {
        let p = policy(
            serde_json::json!({"name": "p", "limit": {"requests": 10, "per": "minute"}, "routes": ["orders"], "by": ["consumer", "route"]}),
        );
        assert!(p.validate().is_empty());
        assert_eq!(p.references()[0].name, "orders");
        let neither =
            policy(serde_json::json!({"name": "p", "limit": {"requests": 10, "per": "minute"}}));
        assert_eq!(fields(neither.validate()), vec!["routes"]);
        let both = policy(
            serde_json::json!({"name": "p", "limit": {"requests": 10, "per": "minute"}, "global": true, "routes": ["x"]}),
        );
        assert_eq!(fields(both.validate()), vec!["routes"]);
    }

    #[test]
    fn keys_bursts_and_limits_are_checked() {
        let p = policy(
            serde_json::json!({"name": "p", "limit": {"requests": 0, "per": "second"}, "global": true,
            "burst": 5, "by": ["consumer", "header:X-Tenant", "consumer", "ip"]}),
        );
        assert_eq!(
            fields(p.validate()),
            vec!["limit.requests", "burst", "by[1]", "by[2]", "by[3]"]
        );
        assert_eq!(
            CountBy::parse("header:x-tenant"),
            Some(CountBy::Header("x-tenant".into()))
        );
    }

    #[test]
    fn plans_have_one_limit_per_period() {
        let plan: Plan = serde_json::from_value(serde_json::json!({"name": "free",
            "limits": [{"requests": 10, "per": "second"}, {"requests": 20, "per": "second"}]}))
        .unwrap();
        assert_eq!(fields(plan.validate()), vec!["limits[1].per"]);
    }
}
