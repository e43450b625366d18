//! ratelimit-service's Prometheus metrics.

use std::sync::Arc;

use crate::counters::RedisCounters;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `ok`, `over_limit`, `shadow_over_limit`.
    pub result: &'static str,
    /// `policy:<name>` or `plan:<name>`.
    pub limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

/// The quota protocol's side: what Envoys report and what they are assigned.
#[derive(Debug, Clone, Default)]
pub struct QuotaMetrics {
    pub reports: Counter,
    pub assignments: Counter,
    pub streams: Gauge,
    pub buckets: Gauge,
    /// Requests Envoys reported allowed and denied, by policy.
    pub allowed: Family<PolicyLabel, Counter>,
    pub denied: Family<PolicyLabel, Counter>,
}

impl QuotaMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "quota_reports",
            "Usage reports received from Envoys (one per stream and interval)",
            self.reports.clone(),
        );
        registry.register(
            "quota_assignments",
            "Token bucket assignments sent to Envoys",
            self.assignments.clone(),
        );
        registry.register(
            "quota_streams",
            "Envoys connected over the quota protocol",
            self.streams.clone(),
        );
        registry.register(
            "quota_buckets",
            "Quota buckets with at least one reporting Envoy",
            self.buckets.clone(),
        );
        registry.register(
            "quota_allowed",
            "Requests Envoys reported allowed by their quota, by policy",
            self.allowed.clone(),
        );
        registry.register(
            "quota_denied",
            "Requests Envoys reported denied by their quota, by policy",
            self.denied.clone(),
        );
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub requests: Family<ResultLabel, Counter>,
    pub decision_seconds: Histogram,
    pub store_seconds: Histogram,
    pub store_errors: Counter,
    pub degraded_decisions: Counter,
    pub config_updates: Family<ResultLabel, Counter>,
    pub ready: Gauge,
    pub quota: QuotaMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// The service's metrics, with the Redis backend's counters if it has one.
    pub fn new(redis: Option<RedisCounters>) -> Self {
        let mut registry = Registry::with_prefix("gatehouse_ratelimit");
        gatehouse_service_kit::trace::DroppedSpans::register(&mut registry);
        if let Some(redis) = redis {
            registry.register(
                "redis_requests",
                "Requests whose counters were decided in Redis",
                redis.redis_requests,
            );
            registry.register(
                "redis_script_calls",
                "Script calls sent to Redis (one may carry several requests)",
                redis.script_calls,
            );
            registry.register(
                "lease_requests",
                "Requests decided from hits leased from Redis, without a round trip",
                redis.lease_requests,
            );
            registry.register(
                "lease_renewals_in_flight",
                "Lease renewals sent to Redis and not answered yet",
                redis.renewals_in_flight,
            );
        }
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Counter decisions by result and limit",
            decisions.clone(),
        );
        let requests = Family::default();
        registry.register(
            "requests",
            "ShouldRateLimit answers by overall result",
            requests.clone(),
        );
        let decision_seconds = Histogram::new(exponential_buckets(0.000_005, 2.5, 14));
        registry.register(
            "decision_duration_seconds",
            "Time to answer one ShouldRateLimit",
            decision_seconds.clone(),
        );
        let store_seconds = Histogram::new(exponential_buckets(0.000_005, 2.5, 14));
        registry.register(
            "store_duration_seconds",
            "Time the counter store took per request",
            store_seconds.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Counter store calls that failed",
            store_errors.clone(),
        );
        let degraded_decisions = Counter::default();
        registry.register(
            "degraded_decisions",
            "Decisions taken without the counter store (fail open or closed)",
            degraded_decisions.clone(),
        );
        let config_updates = Family::default();
        registry.register(
            "config_updates",
            "Configuration snapshots received, by result",
            config_updates.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 once a configuration snapshot has been received",
            ready.clone(),
        );
        let quota = QuotaMetrics::default();
        quota.register(&mut registry);
        Self {
            quota,
            registry: Arc::new(registry),
            decisions,
            requests,
            decision_seconds,
            store_seconds,
            store_errors,
            degraded_decisions,
            config_updates,
            ready,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
