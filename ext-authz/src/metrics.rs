//! ext-authz's Prometheus metrics.

use std::sync::Arc;

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

use crate::traffic::Traffic;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub result: &'static str,
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub check_seconds: Histogram,
    pub config_updates: Family<ResultLabel, Counter>,
    pub ready: Gauge,
    jwks_fetches: Family<SourceLabels, Counter>,
    introspections: Family<SourceLabels, Counter>,
    /// Handles for the hot path: allowed decisions by method, resolved once.
    allowed: [Counter; 4],
    /// Traffic per route and consumer, from Envoy's usage log.
    pub traffic: Traffic,
}

/// Consumers with their own usage label unless configured otherwise.
pub const DEFAULT_USAGE_CONSUMERS: usize = 100;

impl Default for Metrics {
    fn default() -> Self {
        Self::new(DEFAULT_USAGE_CONSUMERS)
    }
}

impl Metrics {
    /// The metrics, with at most `usage_consumers` consumers labelled by
    /// name in the usage counters.
    pub fn new(usage_consumers: usize) -> Self {
        let mut registry = Registry::with_prefix("gatehouse_ext_authz");
        gatehouse_service_kit::trace::DroppedSpans::register(&mut registry);
        let decisions: Family<DecisionLabels, Counter> = Family::default();
        registry.register(
            "decisions",
            "Authorization decisions by result, method and error code",
            decisions.clone(),
        );
        // 5 µs .. ~1.3 s
        let check_seconds = Histogram::new(exponential_buckets(0.000_005, 2.5, 14));
        registry.register(
            "check_duration_seconds",
            "Time to decide one Check",
            check_seconds.clone(),
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
        let jwks_fetches = Family::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by issuer and result",
            jwks_fetches.clone(),
        );
        let introspections = Family::default();
        registry.register(
            "introspections",
            "Token introspection calls by provider and result",
            introspections.clone(),
        );
        let allowed = ["api_key", "jwt", "introspection", "mtls"].map(|method| {
            decisions
                .get_or_create(&DecisionLabels {
                    result: "allow",
                    method,
                    code: "ok",
                })
                .clone()
        });
        let traffic = Traffic::new(&mut registry, usage_consumers);
        Self {
            allowed,
            traffic,
            registry: Arc::new(registry),
            decisions,
            check_seconds,
            config_updates,
            ready,
            jwks_fetches,
            introspections,
        }
    }

    /// Counts an allowed decision (0 API key, 1 JWT, 2 introspection).
    pub fn allowed(&self, method_index: usize) {
        if let Some(counter) = self.allowed.get(method_index) {
            counter.inc();
        }
    }

    pub fn jwks_fetch(&self, issuer: &str, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&SourceLabels {
                source: issuer.to_owned(),
                result,
            })
            .inc();
    }

    pub fn introspection(&self, provider: &str, result: &'static str) {
        self.introspections
            .get_or_create(&SourceLabels {
                source: provider.to_owned(),
                result,
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
