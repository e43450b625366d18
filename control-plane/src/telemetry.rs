//! Logging setup and the control plane's Prometheus metrics.

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

/// Logging: the same flag and setup as every Gatehouse service
/// (`gatehouse_service_kit::trace`).
pub use gatehouse_service_kit::LogFormat;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    pub certificate: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: u16,
}

/// Every metric the control plane exports, registered once.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub xds_streams: Gauge,
    pub xds_nodes_held: Gauge,
    pub xds_responses: Family<TypeLabel, Counter>,
    pub xds_acks: Family<TypeLabel, Counter>,
    pub xds_nacks: Family<TypeLabel, Counter>,
    pub snapshot_builds: Family<ResultLabel, Counter>,
    pub snapshot_build_seconds: Histogram,
    /// From the control plane serving a version to a node acknowledging
    /// it, by type: how long a change takes to reach the fleet.
    pub xds_ack_delay_seconds: Family<TypeLabel, Histogram, fn() -> Histogram>,
    pub snapshot_version: Gauge,
    /// Unix time the served version began to be served (its age is
    /// `time() - this`).
    pub snapshot_served_at_seconds: Gauge,
    pub store_errors: Family<ResultLabel, Counter>,
    /// notAfter of each served uploaded certificate (alert 14 days before).
    pub certificate_not_after_seconds: Family<CertificateLabel, Gauge>,
    pub admin_requests: Family<HttpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        gatehouse_service_kit::trace::DroppedSpans::register(&mut registry);
        let xds_streams = Gauge::default();
        registry.register("xds_streams", "Connected ADS streams", xds_streams.clone());
        let xds_nodes_held = Gauge::default();
        registry.register(
            "xds_nodes_held",
            "Nodes held on the configuration they have: they hold one this store does not (alert when above 0)",
            xds_nodes_held.clone(),
        );
        let xds_responses = Family::default();
        registry.register(
            "xds_responses",
            "xDS responses sent, by type",
            xds_responses.clone(),
        );
        let xds_acks = Family::default();
        registry.register(
            "xds_acks",
            "xDS responses acknowledged, by type",
            xds_acks.clone(),
        );
        let xds_nacks = Family::default();
        registry.register(
            "xds_nacks",
            "xDS responses rejected (NACK), by type",
            xds_nacks.clone(),
        );
        let snapshot_builds = Family::default();
        registry.register(
            "snapshot_builds",
            "Snapshot builds, by result",
            snapshot_builds.clone(),
        );
        let xds_ack_delay_seconds: Family<TypeLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "xds_ack_delay_seconds",
            "From serving a config version to a node's ACK of it, by type",
            xds_ack_delay_seconds.clone(),
        );
        let snapshot_build_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "snapshot_build_seconds",
            "Time to load the store and translate a snapshot",
            snapshot_build_seconds.clone(),
        );
        let snapshot_version = Gauge::default();
        registry.register(
            "snapshot_version",
            "Config version of the snapshot being served",
            snapshot_version.clone(),
        );
        let snapshot_served_at_seconds = Gauge::default();
        registry.register(
            "snapshot_served_at_seconds",
            "Unix time the served config version began to be served",
            snapshot_served_at_seconds.clone(),
        );
        let store_errors = Family::default();
        registry.register(
            "store_errors",
            "Store failures, by kind",
            store_errors.clone(),
        );
        let certificate_not_after_seconds = Family::default();
        registry.register(
            "certificate_not_after_seconds",
            "notAfter (Unix time) of each uploaded certificate being served",
            certificate_not_after_seconds.clone(),
        );
        let admin_requests = Family::default();
        registry.register(
            "admin_requests",
            "Admin API requests, by method and status",
            admin_requests.clone(),
        );
        Self {
            registry: Arc::new(registry),
            xds_streams,
            xds_nodes_held,
            xds_responses,
            xds_acks,
            xds_nacks,
            snapshot_builds,
            snapshot_build_seconds,
            xds_ack_delay_seconds,
            snapshot_version,
            snapshot_served_at_seconds,
            store_errors,
            certificate_not_after_seconds,
            admin_requests,
        }
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
