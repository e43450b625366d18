//! Envoy's rate limit quota service (RLQS,
//! `envoy.service.rate_limit_quota.v3`) for policies with `enforcement:
//! quota`: each Envoy reports every second how many requests of each bucket
//! it allowed and denied; the service splits the policy's limit among the
//! Envoys reporting the bucket, in proportion to their demand, with a floor
//! so a newcomer gets a share at once, and answers each report with a token
//! bucket that Envoy enforces in process. An Envoy that stops reporting
//! gives its share back after a few of its reporting intervals.
//!
//! Several instances on one Redis share the split ([`fleet`]): each takes
//! the part of the limit its Envoys' demand is of the fleet's.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_proto::{
    http_types::{RateLimitStrategy, TokenBucket, rate_limit_strategy::Strategy},
    protobuf,
    quota_service::{
        BucketId, RateLimitQuotaResponse, RateLimitQuotaUsageReports,
        rate_limit_quota_response::{
            BucketAction,
            bucket_action::{BucketAction as Action, QuotaAssignmentAction},
        },
        rate_limit_quota_service_server::{RateLimitQuotaService, RateLimitQuotaServiceServer},
    },
    ratelimit::descriptor,
};
use tokio_stream::wrappers::ReceiverStream;

pub mod fleet;

use crate::{
    metrics::{PolicyLabel, QuotaMetrics},
    rules::QuotaLimit,
    server::SharedRules,
};

/// An Envoy that has not reported a bucket for this many of its reporting
/// intervals (and at least [`STALE_MIN_MS`]: Envoy 1.40 reports every 5 s
/// whatever the bucket's interval says) no longer holds a share of it.
const STALE_INTERVALS: f64 = 2.5;
pub const STALE_MIN_MS: u64 = 12_000;
/// An assignment holds for this many reporting intervals (at least
/// [`TTL_MIN`]) if no newer one comes.
const TTL_INTERVALS: u32 = 3;
const TTL_MIN: Duration = Duration::from_secs(10);
/// Each reporter's share has this part of the limit spread evenly, so an
/// Envoy with little recent demand still admits some at once.
const FLOOR: f64 = 0.1;
/// A share within this fraction of the one last assigned is not changed:
/// Envoy starts a changed token bucket full, so every change admits up to a
/// refill more than the limit.
const HYSTERESIS: f64 = 0.2;
/// Weight of the newest report in an Envoy's demand (the rest is its past).
const SMOOTHING: f64 = 0.5;
/// Most buckets tracked; reports of others are not answered.
const MAX_BUCKETS: usize = 100_000;

type BucketKey = Vec<(String, String)>;

#[derive(Debug, Clone, Copy)]
struct Reporter {
    /// Requests per second it saw (allowed and denied).
    demand: f64,
    at: Instant,
    /// Time between its reports.
    interval: Duration,
    /// Requests per second it was last assigned.
    assigned: Option<f64>,
}

#[derive(Debug, Default)]
struct Ledger {
    buckets: HashMap<BucketKey, HashMap<u64, Reporter>>,
}

impl Ledger {
    /// Records `stream`'s demand for a bucket and splits `limit` (requests
    /// per second) among the Envoys reporting it: returns each reporter whose
    /// share changed (the reporting one always), with its share.
    #[cfg(test)]
    fn shares(
        &mut self,
        key: &BucketKey,
        stream: u64,
        demand: f64,
        interval: Duration,
        limit: f64,
        now: Instant,
    ) -> Vec<(u64, f64)> {
        if self.record(key, stream, demand, interval, now).is_none() {
            return Vec::new();
        }
        self.split(key, stream, limit)
    }

    /// Records `stream`'s demand for a bucket (smoothed), forgets reporters
    /// gone silent, and returns the demand of all this instance's reporters
    /// of the bucket; `None` past [`MAX_BUCKETS`].
    fn record(
        &mut self,
        key: &BucketKey,
        stream: u64,
        demand: f64,
        interval: Duration,
        now: Instant,
    ) -> Option<f64> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= MAX_BUCKETS {
            return None;
        }
        let reporters = self.buckets.entry(key.clone()).or_default();
        reporters.retain(|_, r| {
            let stale = r
                .interval
                .mul_f64(STALE_INTERVALS)
                .max(Duration::from_millis(STALE_MIN_MS));
            now.duration_since(r.at) < stale
        });
        let known = reporters.get(&stream).copied();
        let demand = known.map_or(demand, |r| {
            r.demand * (1.0 - SMOOTHING) + demand * SMOOTHING
        });
        reporters.insert(
            stream,
            Reporter {
                demand,
                at: now,
                interval,
                assigned: known.and_then(|r| r.assigned),
            },
        );
        Some(reporters.values().map(|r| r.demand).sum())
    }

    /// Splits `limit` among the bucket's reporters by demand: each reporter
    /// whose share changed (`stream`, the one reporting, always).
    fn split(&mut self, key: &BucketKey, stream: u64, limit: f64) -> Vec<(u64, f64)> {
        let Some(reporters) = self.buckets.get_mut(key) else {
            return Vec::new();
        };
        let total: f64 = reporters.values().map(|r| r.demand).sum();
        let floor = (total * FLOOR / reporters.len().max(1) as f64).max(1e-3);
        let weights: f64 = reporters.values().map(|r| r.demand + floor).sum();
        let fair = |r: &Reporter| limit * (r.demand + floor) / weights;
        // Small changes are left alone, unless keeping them would let the
        // fleet admit more than the limit.
        let kept = |r: &Reporter| match r.assigned {
            Some(previous) if (fair(r) - previous).abs() <= previous * HYSTERESIS => previous,
            _ => fair(r),
        };
        let exact = reporters.values().map(kept).sum::<f64>() > limit * 1.02;
        let mut changed = Vec::new();
        for (id, r) in reporters.iter_mut() {
            let share = if exact { fair(r) } else { kept(r) };
            if *id == stream || r.assigned != Some(share) {
                r.assigned = Some(share);
                changed.push((*id, share));
            }
        }
        changed
    }

    /// Forgets a stream that ended: its shares go back at once (to the
    /// others with their next report). Returns the buckets no Envoy here
    /// reports any more.
    fn forget(&mut self, stream: u64) -> Vec<BucketKey> {
        let mut emptied = Vec::new();
        self.buckets.retain(|key, reporters| {
            let empty = reporters.remove(&stream).is_some() && reporters.is_empty();
            if empty {
                emptied.push(key.clone());
            }
            !empty
        });
        emptied
    }
}

/// A token bucket admitting `per_second` on average: refilled every second
/// (or once per token, for slow rates: Envoy's quota filter takes whole
/// seconds, a shorter interval counting as none), holding a refill's worth
/// unless the policy sets a burst (split like the rate).
fn token_bucket(per_second: f64, burst: Option<f64>) -> TokenBucket {
    let fill_seconds = (1.0 / per_second.max(1e-6)).ceil().clamp(1.0, 3_600.0);
    let per_fill = (per_second * fill_seconds).round().max(1.0);
    let capacity = burst.unwrap_or(per_fill).round().max(per_fill);
    TokenBucket {
        max_tokens: capacity.min(f64::from(u32::MAX)) as u32,
        tokens_per_fill: Some(protobuf::UInt32Value {
            value: per_fill.min(f64::from(u32::MAX)) as u32,
        }),
        fill_interval: Some(protobuf::Duration {
            seconds: fill_seconds as i64,
            nanos: 0,
        }),
    }
}

type Answers = tokio::sync::mpsc::Sender<Result<RateLimitQuotaResponse, tonic::Status>>;

/// The service: one task per Envoy stream, one ledger for all.
#[derive(Clone)]
pub struct QuotaService {
    rules: SharedRules,
    ledger: Arc<Mutex<Ledger>>,
    /// Each stream's way back, for assignments pushed when another Envoy's
    /// report changed its share.
    streams: Arc<Mutex<HashMap<u64, Answers>>>,
    next_stream: Arc<AtomicU64>,
    metrics: QuotaMetrics,
    /// The split shared with other instances through Redis, if any.
    fleet: Option<Arc<fleet::Fleet>>,
}

/// The assignment of `share` requests per second of a bucket.
fn assignment(bucket: &BucketId, share: f64, limit: QuotaLimit, ttl: Duration) -> BucketAction {
    let burst = limit
        .burst
        .map(|b| b as f64 * share / limit.per_second.max(1e-9));
    BucketAction {
        bucket_id: Some(bucket.clone()),
        bucket_action: Some(Action::QuotaAssignmentAction(QuotaAssignmentAction {
            assignment_time_to_live: Some(protobuf::Duration {
                seconds: ttl.as_secs() as i64,
                nanos: 0,
            }),
            rate_limit_strategy: Some(RateLimitStrategy {
                strategy: Some(Strategy::TokenBucket(token_bucket(share, burst))),
            }),
        })),
    }
}

impl QuotaService {
    pub fn server(
        rules: SharedRules,
        metrics: QuotaMetrics,
        fleet: Option<Arc<fleet::Fleet>>,
    ) -> RateLimitQuotaServiceServer<Self> {
        RateLimitQuotaServiceServer::new(Self {
            rules,
            ledger: Arc::default(),
            streams: Arc::default(),
            next_stream: Arc::default(),
            metrics,
            fleet,
        })
    }

    /// The assignments one report changes, by stream: the reporting
    /// Envoy's, and those of other Envoys whose share moved.
    async fn answer(
        &self,
        stream: u64,
        reports: &RateLimitQuotaUsageReports,
    ) -> HashMap<u64, Vec<BucketAction>> {
        let rules = self.rules.load_full();
        let now = Instant::now();
        self.metrics.reports.inc();
        let ledger = || self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let mut actions: HashMap<u64, Vec<BucketAction>> = HashMap::new();
        let mut asks = Vec::new();
        let mut settled = Vec::new();
        for usage in &reports.bucket_quota_usages {
            let Some(bucket) = &usage.bucket_id else {
                continue;
            };
            let limit: Option<QuotaLimit> = rules
                .as_ref()
                .and_then(|r| r.quota(bucket.bucket.get(descriptor::POLICY)?));
            let Some(limit) = limit else {
                continue;
            };
            let policy = PolicyLabel {
                policy: bucket
                    .bucket
                    .get(descriptor::POLICY)
                    .cloned()
                    .unwrap_or_default(),
            };
            self.metrics
                .allowed
                .get_or_create(&policy)
                .inc_by(usage.num_requests_allowed);
            self.metrics
                .denied
                .get_or_create(&policy)
                .inc_by(usage.num_requests_denied);
            // The first report of a bucket comes at once (no time elapsed):
            // its requests count as a second's.
            let elapsed = usage
                .time_elapsed
                .map_or(1.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
            let elapsed = if elapsed < 0.5 { 1.0 } else { elapsed };
            let interval = Duration::from_secs_f64(elapsed);
            let demand = (usage.num_requests_allowed + usage.num_requests_denied) as f64 / elapsed;
            let mut key: BucketKey = bucket
                .bucket
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            key.sort();
            let ttl = (interval * TTL_INTERVALS).max(TTL_MIN);
            let Some(local) = ledger().record(&key, stream, demand, interval, now) else {
                continue;
            };
            asks.push((key, local, limit.per_second));
            settled.push((bucket, limit, ttl));
        }
        // The fleet's parts of all the report's buckets at once.
        let parts = match &self.fleet {
            Some(fleet) => fleet.parts(&asks).await,
            None => asks.iter().map(|(_, _, limit)| *limit).collect(),
        };
        for (((key, _, _), part), (bucket, limit, ttl)) in asks.iter().zip(parts).zip(settled) {
            let changed = ledger().split(key, stream, part);
            for (to, share) in changed {
                tracing::debug!(stream = to, share, "quota assigned");
                self.metrics.assignments.inc();
                actions
                    .entry(to)
                    .or_default()
                    .push(assignment(bucket, share, limit, ttl));
            }
        }
        let ledger = ledger();
        self.metrics.buckets.set(ledger.buckets.len() as i64);
        if let Some(fleet) = &self.fleet {
            fleet.retain(|k| ledger.buckets.contains_key(k));
        }
        actions
    }

    /// Sends each stream its changed assignments; a stream whose queue is
    /// full gets them with its next report.
    fn deliver(&self, mut actions: HashMap<u64, Vec<BucketAction>>) {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for (to, bucket_action) in actions.drain() {
            if let Some(answers) = streams.get(&to) {
                let _ = answers.try_send(Ok(RateLimitQuotaResponse { bucket_action }));
            }
        }
    }

    fn end(&self, stream: u64) {
        self.metrics.streams.dec();
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&stream);
        let emptied = self
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget(stream);
        if let Some(fleet) = self.fleet.clone().filter(|_| !emptied.is_empty()) {
            tokio::spawn(async move { fleet.withdraw(&emptied).await });
        }
    }
}

#[tonic::async_trait]
impl RateLimitQuotaService for QuotaService {
    type StreamRateLimitQuotasStream =
        ReceiverStream<Result<RateLimitQuotaResponse, tonic::Status>>;

    async fn stream_rate_limit_quotas(
        &self,
        request: tonic::Request<tonic::Streaming<RateLimitQuotaUsageReports>>,
    ) -> Result<tonic::Response<Self::StreamRateLimitQuotasStream>, tonic::Status> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut reports = request.into_inner();
        let (answers, receiver) = tokio::sync::mpsc::channel(16);
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stream, answers);
        self.metrics.streams.inc();
        let service = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(report)) = reports.message().await {
                let actions = service.answer(stream, &report).await;
                service.deliver(actions);
            }
            service.end(stream);
        });
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn key(policy: &str) -> BucketKey {
        vec![("policy".into(), policy.into())]
    }

    fn share(ledger: &mut Ledger, stream: u64, demand: f64, now: Instant) -> f64 {
        ledger
            .shares(&key("p"), stream, demand, SECOND, 100.0, now)
            .into_iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, share)| share)
            .expect("the reporter's share")
    }

    #[test]
    fn the_limit_is_split_by_demand_with_a_floor_for_newcomers() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        let alone = share(&mut ledger, 1, 60.0, now);
        assert!(
            (alone - 100.0).abs() < 1e-6,
            "one Envoy gets it all: {alone}"
        );
        // A newcomer gets a share at once, and the first Envoy is told its
        // smaller one without waiting for its own report.
        let changed = ledger.shares(&key("p"), 2, 30.0, SECOND, 100.0, now);
        assert_eq!(changed.len(), 2, "{changed:?}");
        let total: f64 = changed.iter().map(|(_, s)| s).sum();
        assert!(
            total <= 102.0,
            "the fleet stays within the limit: {changed:?}"
        );
        share(&mut ledger, 3, 10.0, now);
        let first = share(&mut ledger, 1, 60.0, now);
        let second = share(&mut ledger, 2, 30.0, now);
        let third = share(&mut ledger, 3, 10.0, now);
        assert!(
            first > second && second > third && third > 5.0,
            "{first} {second} {third}"
        );
        // An Envoy that stops reporting gives its share back.
        let later = now + Duration::from_millis(STALE_MIN_MS + 1);
        let back = share(&mut ledger, 1, 60.0, later);
        assert!((back - 100.0).abs() < 1e-6, "{back}");
    }

    #[test]
    fn token_buckets_refill_each_second_and_slow_rates_still_get_a_token() {
        let fast = token_bucket(100.0, None);
        assert_eq!(fast.tokens_per_fill.map(|v| v.value), Some(100));
        assert_eq!(fast.fill_interval.map(|d| d.seconds), Some(1));
        assert_eq!(fast.max_tokens, 100);
        let slow = token_bucket(0.5, None);
        assert_eq!(slow.tokens_per_fill.map(|v| v.value), Some(1));
        assert_eq!(slow.fill_interval.map(|d| d.seconds), Some(2));
    }
}
