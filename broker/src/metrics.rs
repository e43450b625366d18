//! The broker's Prometheus metrics: connections, subscriptions per topic
//! resource, messages in and out, drops and disconnects by reason, and the
//! delay from publish to a subscriber's socket.

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

/// A topic resource's name (never the concrete topic name: bounded).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Why connections end (`gatehouse_broker_disconnects_total{reason}`).
pub const DISCONNECT_REASONS: [&str; 7] = [
    "client",
    "slow_consumer",
    "stalled",
    "dead",
    "flood",
    "protocol",
    "going_away",
];

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub connections: Gauge,
    pub subscriptions: Family<TopicLabel, Gauge>,
    pub published: Family<TopicLabel, Counter>,
    pub delivered: Family<TopicLabel, Counter>,
    pub dropped: Family<TopicLabel, Counter>,
    pub disconnects: Family<ReasonLabel, Counter>,
    pub refused: Family<ReasonLabel, Counter>,
    pub delivery_seconds: Histogram,
    pub config_updates: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse_broker");
        gatehouse_service_kit::trace::DroppedSpans::register(&mut registry);
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let subscriptions = Family::default();
        registry.register(
            "subscriptions",
            "Subscriptions by topic resource",
            subscriptions.clone(),
        );
        let published = Family::default();
        registry.register(
            "messages_published",
            "Messages published, by topic resource",
            published.clone(),
        );
        let delivered = Family::default();
        registry.register(
            "messages_delivered",
            "Messages written to subscribers' connections, by topic resource",
            delivered.clone(),
        );
        let dropped = Family::default();
        registry.register(
            "messages_dropped",
            "Messages dropped from a full queue (drop_oldest topics), by topic resource",
            dropped.clone(),
        );
        let disconnects: Family<ReasonLabel, Counter> = Family::default();
        // Every reason's series exists from the start, so a rate over it
        // (the slow-consumer alert) has data before the first disconnect.
        for reason in DISCONNECT_REASONS {
            let _ = disconnects.get_or_create(&ReasonLabel { reason });
        }
        registry.register(
            "disconnects",
            "Connections closed, by reason (client, slow_consumer, stalled, dead, flood, protocol, going_away)",
            disconnects.clone(),
        );
        let refused = Family::default();
        registry.register(
            "refusals",
            "Refused publishes, upgrades and subscriptions, by reason",
            refused.clone(),
        );
        let delivery_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "delivery_duration_seconds",
            "From a message's publish to its write to a subscriber",
            delivery_seconds.clone(),
        );
        let config_updates = Family::default();
        registry.register(
            "config_updates",
            "Topic configurations received from the control plane, by result",
            config_updates.clone(),
        );
        Self {
            registry: Arc::new(registry),
            connections,
            subscriptions,
            published,
            delivered,
            dropped,
            disconnects,
            refused,
            delivery_seconds,
            config_updates,
        }
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
