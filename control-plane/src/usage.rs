//! What ext-authz reports back: API key use (`gatehouse.auth.v1.KeyUsage`),
//! recorded as each key's last use, and traffic per route and consumer
//! (`TrafficUsage`), added to hourly usage rows. Not configuration: no
//! version, no history. Served on the xDS port next to ADS.

use gatehouse_proto::auth::{
    KeyUsageReply, KeyUsageReport, TrafficCount, TrafficReply, TrafficReport,
    key_usage_server::{KeyUsage, KeyUsageServer},
    traffic_usage_server::{TrafficUsage, TrafficUsageServer},
};

use crate::store::{Store, TrafficCounts, TrafficRow};

/// Most uses accepted in one report.
const MAX_USES: usize = 100_000;

pub struct KeyUsageService {
    store: Store,
}

impl KeyUsageService {
    pub fn server(store: Store) -> KeyUsageServer<Self> {
        KeyUsageServer::new(Self { store })
    }
}

fn is_key_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tonic::async_trait]
impl KeyUsage for KeyUsageService {
    async fn report(
        &self,
        request: tonic::Request<KeyUsageReport>,
    ) -> Result<tonic::Response<KeyUsageReply>, tonic::Status> {
        let uses = request.into_inner().uses;
        if uses.len() > MAX_USES {
            return Err(tonic::Status::invalid_argument(format!(
                "at most {MAX_USES} uses per report"
            )));
        }
        let used: Vec<(String, i64)> = uses
            .into_iter()
            .filter(|u| is_key_id(&u.id) && u.last_used_ms > 0)
            .map(|u| (u.id, u.last_used_ms))
            .collect();
        self.store.record_key_usage(&used).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot record API key usage");
            tonic::Status::unavailable("store unavailable")
        })?;
        Ok(tonic::Response::new(KeyUsageReply {}))
    }
}

/// Most route-consumer-hour counts accepted in one traffic report.
const MAX_COUNTS: usize = 100_000;
/// Longest route or consumer name kept.
const MAX_NAME: usize = 256;
const HOUR_MS: i64 = 3_600_000;

/// Traffic per route and consumer reported by ext-authz
/// (`gatehouse.auth.v1.TrafficUsage`), added to hourly usage rows; rows
/// older than the retention are dropped at most once an hour.
pub struct TrafficUsageService {
    store: Store,
    retention_ms: i64,
    last_prune_ms: std::sync::atomic::AtomicI64,
}

impl TrafficUsageService {
    pub fn server(store: Store, retention: std::time::Duration) -> TrafficUsageServer<Self> {
        TrafficUsageServer::new(Self {
            store,
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            last_prune_ms: std::sync::atomic::AtomicI64::new(0),
        })
    }

    async fn prune(&self, now: i64) {
        use std::sync::atomic::Ordering;
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now - last < HOUR_MS
            || self
                .last_prune_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.store.prune_traffic(now - self.retention_ms).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "usage rows past the retention dropped"),
            Err(e) => tracing::warn!(error = %e, "cannot drop old usage rows"),
        }
    }
}

/// A reported count as a row, unless it is malformed.
fn traffic_row(count: TrafficCount) -> Option<TrafficRow> {
    let well_formed = count.hour_ms > 0
        && count.hour_ms % HOUR_MS == 0
        && !count.route.is_empty()
        && count.route.len() <= MAX_NAME
        && count.consumer.len() <= MAX_NAME;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    well_formed.then(|| TrafficRow {
        hour_ms: Some(count.hour_ms),
        route: count.route,
        consumer: count.consumer,
        counts: TrafficCounts {
            requests: n(count.requests),
            unauthorized: n(count.unauthorized),
            forbidden: n(count.forbidden),
            rate_limited: n(count.rate_limited),
            client_errors: n(count.client_errors),
            server_errors: n(count.server_errors),
            bytes_in: n(count.bytes_in),
            bytes_out: n(count.bytes_out),
        },
    })
}

#[tonic::async_trait]
impl TrafficUsage for TrafficUsageService {
    async fn report(
        &self,
        request: tonic::Request<TrafficReport>,
    ) -> Result<tonic::Response<TrafficReply>, tonic::Status> {
        let counts = request.into_inner().counts;
        if counts.len() > MAX_COUNTS {
            return Err(tonic::Status::invalid_argument(format!(
                "at most {MAX_COUNTS} counts per report"
            )));
        }
        let rows: Vec<TrafficRow> = counts.into_iter().filter_map(traffic_row).collect();
        self.store.record_traffic(&rows).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot record traffic usage");
            tonic::Status::unavailable("store unavailable")
        })?;
        self.prune(crate::clock::now_ms()).await;
        Ok(tonic::Response::new(TrafficReply {}))
    }
}
