//! Traffic per route and consumer, counted from the usage log Envoy streams
//! to this port (`envoy.service.accesslog.v3`, batched by Envoy, off the
//! request's path): Prometheus counters whose consumer label is bounded,
//! and hourly counts reported to the control plane, which keeps them as
//! usage rows (`GET /v1/usage`).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use gatehouse_proto::{
    accesslog_data::HttpAccessLogEntry,
    accesslog_service::{
        StreamAccessLogsMessage, StreamAccessLogsResponse,
        access_log_service_server::{AccessLogService, AccessLogServiceServer},
        stream_access_logs_message::LogEntries,
    },
    auth::{TrafficCount, TrafficReport, traffic_usage_client::TrafficUsageClient},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The header ext-authz (or `jwt_authn`) sets to the authenticated consumer;
/// Envoy removes any a client sends before its filters run.
const CONSUMER_HEADER: &str = "x-gatehouse-consumer";
/// Dynamic metadata ext-authz sets, naming the consumer of a 403 too.
const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// Consumer label of requests without an authenticated consumer.
const ANONYMOUS: &str = "anonymous";
/// Consumer label of every consumer past the labelled ones.
const OTHER: &str = "other";
/// Most route-consumer-hour counts held while the control plane cannot be
/// reached; past it new ones are dropped (and counted).
const MAX_PENDING: usize = 50_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    consumer: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    route: String,
    consumer: String,
    direction: &'static str,
}

/// What one route and consumer did in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub unauthorized: u64,
    pub forbidden: u64,
    pub rate_limited: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.unauthorized += other.unauthorized;
        self.forbidden += other.forbidden;
        self.rate_limited += other.rate_limited;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }

    /// Requests by outcome, as the metric's `outcome` label names them.
    fn outcomes(&self) -> [(&'static str, u64); 6] {
        let errors = self.unauthorized
            + self.forbidden
            + self.rate_limited
            + self.client_errors
            + self.server_errors;
        [
            ("ok", self.requests.saturating_sub(errors)),
            ("unauthorized", self.unauthorized),
            ("forbidden", self.forbidden),
            ("rate_limited", self.rate_limited),
            ("client_error", self.client_errors),
            ("server_error", self.server_errors),
        ]
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Key {
    hour_ms: i64,
    route: String,
    consumer: String,
}

#[derive(Debug, Default)]
struct Pending {
    counts: HashMap<Key, Counts>,
    /// Consumers with their own label (at most `labelled_max`).
    labelled: HashSet<String>,
}

/// The counts of one ext-authz instance, shared by the log service, the
/// metrics and the reporter.
#[derive(Debug, Clone)]
pub struct Traffic {
    pending: Arc<Mutex<Pending>>,
    labelled_max: usize,
    requests: Family<RequestLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    dropped: Counter,
}

impl Traffic {
    /// Registers the metrics; at most `labelled_max` consumers get their
    /// own label, the rest count as `other`.
    pub fn new(registry: &mut Registry, labelled_max: usize) -> Self {
        let requests = Family::default();
        registry.register(
            "usage_requests",
            "Requests by route, consumer (the first consumers seen; later ones as \"other\") and outcome",
            requests.clone(),
        );
        let bytes = Family::default();
        registry.register(
            "usage_bytes",
            "Request and response bytes (headers and body) by route, consumer and direction",
            bytes.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "usage_counts_dropped",
            "Hourly counts dropped because the control plane was unreachable for too long",
            dropped.clone(),
        );
        Self {
            pending: Arc::default(),
            labelled_max,
            requests,
            bytes,
            dropped,
        }
    }

    pub fn service(&self) -> AccessLogServiceServer<UsageLog> {
        AccessLogServiceServer::new(UsageLog {
            traffic: self.clone(),
        })
    }

    /// Counts a batch of Envoy's log entries; requests no route matched are
    /// not counted.
    pub fn count(&self, entries: Vec<HttpAccessLogEntry>) {
        // Each key with the position it first appeared at: consumers get
        // their labels in the order Envoy saw them.
        let mut batch: HashMap<Key, (usize, Counts)> = HashMap::new();
        for (n, entry) in entries.into_iter().enumerate() {
            if let Some((key, counts)) = classify(entry) {
                batch
                    .entry(key)
                    .or_insert((n, Counts::default()))
                    .1
                    .add(&counts);
            }
        }
        if batch.is_empty() {
            return;
        }
        let mut batch: Vec<(Key, (usize, Counts))> = batch.into_iter().collect();
        batch.sort_unstable_by_key(|(_, (n, _))| *n);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, (_, counts)) in batch {
            let label = self.label(&mut pending.labelled, &key.consumer);
            for (outcome, n) in counts.outcomes() {
                if n > 0 {
                    self.requests
                        .get_or_create(&RequestLabels {
                            route: key.route.clone(),
                            consumer: label.clone(),
                            outcome,
                        })
                        .inc_by(n);
                }
            }
            for (direction, n) in [("in", counts.bytes_in), ("out", counts.bytes_out)] {
                self.bytes
                    .get_or_create(&BytesLabels {
                        route: key.route.clone(),
                        consumer: label.clone(),
                        direction,
                    })
                    .inc_by(n);
            }
            self.hold(&mut pending, key, &counts);
        }
    }

    /// Adds `counts` to what the next report sends, if there is room.
    fn hold(&self, pending: &mut Pending, key: Key, counts: &Counts) {
        if let Some(held) = pending.counts.get_mut(&key) {
            held.add(counts);
        } else if pending.counts.len() < MAX_PENDING {
            pending.counts.insert(key, *counts);
        } else {
            self.dropped.inc();
        }
    }

    /// The consumer's metric label: its name while there is room.
    fn label(&self, labelled: &mut HashSet<String>, consumer: &str) -> String {
        if consumer.is_empty() {
            return ANONYMOUS.to_owned();
        }
        if labelled.contains(consumer) {
            return consumer.to_owned();
        }
        if labelled.len() < self.labelled_max {
            labelled.insert(consumer.to_owned());
            return consumer.to_owned();
        }
        OTHER.to_owned()
    }

    /// Takes the counts held for the next report.
    fn take(&self) -> HashMap<Key, Counts> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut pending.counts)
    }

    /// Puts back counts a report could not deliver.
    fn restore(&self, counts: HashMap<Key, Counts>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, held) in counts {
            self.hold(&mut pending, key, &held);
        }
    }
}

/// One entry's route, consumer and hour, and what it counts for.
fn classify(entry: HttpAccessLogEntry) -> Option<(Key, Counts)> {
    let common = entry.common_properties?;
    if common.route_name.is_empty() {
        return None;
    }
    let mut request = entry.request.unwrap_or_default();
    let response = entry.response.unwrap_or_default();
    let from_metadata = common
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(EXT_AUTHZ_NAMESPACE))
        .and_then(|s| s.fields.get("consumer"))
        .and_then(|v| match &v.kind {
            Some(gatehouse_proto::protobuf::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    let consumer = from_metadata
        .or_else(|| request.request_headers.remove(CONSUMER_HEADER))
        .unwrap_or_default();
    let started_ms = common
        .start_time
        .map_or(0, |t| t.seconds.saturating_mul(1000));
    let status = response.response_code.map_or(0, |c| c.value);
    let mut counts = Counts {
        requests: 1,
        bytes_in: request.request_headers_bytes + request.request_body_bytes,
        bytes_out: response.response_headers_bytes + response.response_body_bytes,
        ..Counts::default()
    };
    match status {
        401 => counts.unauthorized = 1,
        403 => counts.forbidden = 1,
        429 => counts.rate_limited = 1,
        400..=499 => counts.client_errors = 1,
        // No response at all (0) is a failure of the gateway's too.
        0 | 500..=599 => counts.server_errors = 1,
        _ => {}
    }
    let key = Key {
        hour_ms: started_ms - started_ms.rem_euclid(HOUR_MS),
        route: common.route_name,
        consumer,
    };
    Some((key, counts))
}

/// The access log service Envoy streams its usage log to.
#[derive(Debug, Clone)]
pub struct UsageLog {
    traffic: Traffic,
}

#[tonic::async_trait]
impl AccessLogService for UsageLog {
    async fn stream_access_logs(
        &self,
        request: tonic::Request<tonic::Streaming<StreamAccessLogsMessage>>,
    ) -> Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        while let Some(message) = stream.message().await? {
            if let Some(LogEntries::HttpLogs(logs)) = message.log_entries {
                self.traffic.count(logs.log_entry);
            }
        }
        Ok(tonic::Response::new(StreamAccessLogsResponse {}))
    }
}

/// Sends what was counted since the last delivered report, every
/// `reporting.interval`; what a failed report held goes with the next.
pub async fn report(reporting: crate::usage::Reporting, traffic: Traffic, stop: CancellationToken) {
    let Some(channel) = reporting.channel() else {
        return;
    };
    let mut client = TrafficUsageClient::new(channel);
    let mut tick = tokio::time::interval(reporting.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let counts = traffic.take();
        if !counts.is_empty() {
            let report = TrafficReport {
                counts: counts
                    .iter()
                    .map(|(key, c)| TrafficCount {
                        hour_ms: key.hour_ms,
                        route: key.route.clone(),
                        consumer: key.consumer.clone(),
                        requests: c.requests,
                        unauthorized: c.unauthorized,
                        forbidden: c.forbidden,
                        rate_limited: c.rate_limited,
                        client_errors: c.client_errors,
                        server_errors: c.server_errors,
                        bytes_in: c.bytes_in,
                        bytes_out: c.bytes_out,
                    })
                    .collect(),
            };
            let mut request = tonic::Request::new(report);
            if let Some(token) = &reporting.token {
                token.authorize(&mut request);
            }
            if let Err(e) = client.report(request).await {
                debug!(error = %e, "traffic usage report failed");
                traffic.restore(counts);
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::{
        accesslog_data::{AccessLogCommon, HttpRequestProperties, HttpResponseProperties},
        protobuf::{Timestamp, UInt32Value},
    };

    use super::*;

    fn entry(route: &str, consumer: &str, status: u32) -> HttpAccessLogEntry {
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                route_name: route.into(),
                start_time: Some(Timestamp {
                    seconds: 7_200 + 59,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            request: Some(HttpRequestProperties {
                request_headers: [(CONSUMER_HEADER.to_owned(), consumer.to_owned())]
                    .into_iter()
                    .filter(|(_, c)| !c.is_empty())
                    .collect(),
                request_headers_bytes: 10,
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: status }),
                response_body_bytes: 5,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_go_by_hour_and_outcome_and_labels_stay_bounded() {
        let traffic = Traffic::new(&mut Registry::default(), 1);
        traffic.count(vec![
            entry("orders", "alice", 200),
            entry("orders", "bob", 429),
            entry("orders", "", 401),
            entry("", "", 404),
        ]);
        let counts = traffic.take();
        assert_eq!(counts.len(), 3, "no row for an unrouted request");
        let alice = Key {
            hour_ms: 7_200_000,
            route: "orders".into(),
            consumer: "alice".into(),
        };
        assert_eq!(counts[&alice].requests, 1);
        assert_eq!(counts[&alice].bytes_in, 10);
        assert_eq!(counts[&alice].bytes_out, 5);
        let bob = Key {
            consumer: "bob".into(),
            ..alice.clone()
        };
        assert_eq!(counts[&bob].rate_limited, 1);
        let labels = |consumer: &str| {
            traffic
                .requests
                .get(&RequestLabels {
                    route: "orders".into(),
                    consumer: consumer.into(),
                    outcome: if consumer == "alice" {
                        "ok"
                    } else {
                        "rate_limited"
                    },
                })
                .map(|c| c.get())
        };
        assert_eq!(labels("alice"), Some(1));
        assert_eq!(labels("other"), Some(1), "bob past the bound");
        assert_eq!(labels("bob"), None);

        // An undelivered report's counts go with the next one.
        traffic.count(vec![entry("orders", "alice", 200)]);
        traffic.restore(counts);
        assert_eq!(traffic.take()[&alice].requests, 2);
    }
}
