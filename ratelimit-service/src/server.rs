//! The `envoy.service.ratelimit.v3.RateLimitService` gRPC service and the
//! HTTP endpoints (`/healthz`, `/readyz`, `/metrics`) on the same port.
//!
//! Over limit: `OVER_LIMIT` with `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` and `Retry-After` for the 429; under limit the
//! `RateLimit-*` headers go on the normal response. Every over-limit event
//! is logged under the `gatehouse::ratelimit_hits` target.

use std::{sync::Arc, time::Instant};

use arc_swap::ArcSwapOption;
use gatehouse_proto::{
    core::HeaderValue,
    protobuf::Duration as ProtoDuration,
    ratelimit_service::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{self, Code, DescriptorStatus},
        rate_limit_service_server::{RateLimitService, RateLimitServiceServer},
    },
};
use gatehouse_service_kit::events::{EventKey, Events};
use tracing::Instrument;

use crate::{
    algorithm::Outcome,
    counters::{Counters, Item, admits},
    metrics::{DecisionLabels, Metrics, ResultLabel},
    rules::{Origin, Rules},
};

pub type SharedRules = Arc<ArcSwapOption<Rules>>;

#[derive(Clone)]
pub struct LimitService {
    pub rules: SharedRules,
    pub store: Arc<Counters>,
    pub metrics: Metrics,
    /// Rate-limit hits as summarised events.
    pub events: Option<Events>,
}

#[tonic::async_trait]
impl RateLimitService for LimitService {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let started = Instant::now();
        let span = gatehouse_service_kit::trace::server_span(request.metadata(), || {
            tracing::info_span!(
                "ratelimit.should_rate_limit",
                otel.name = "ratelimit ShouldRateLimit",
                otel.kind = "server",
                trace_id = tracing::field::Empty,
                gatehouse.ratelimit.result = tracing::field::Empty,
                gatehouse.ratelimit.policies = tracing::field::Empty,
                gatehouse.ratelimit.store = self.store.name(),
                gatehouse.ratelimit.degraded = false,
            )
        });
        let Some(rules) = self.rules.load_full() else {
            return Err(tonic::Status::unavailable("no configuration received yet"));
        };
        let trace_id = request
            .metadata()
            .get("traceparent")
            .and_then(|t| t.to_str().ok())
            .and_then(gatehouse_service_kit::events::trace_id)
            .map(str::to_owned);
        let request = request.into_inner();
        let hits = self.events.as_ref().map(|events| Hits {
            events,
            trace_id: trace_id.as_deref(),
        });
        let response = decide_with(&rules, &self.store, &request, &self.metrics, hits)
            .instrument(span)
            .await?;
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(tonic::Response::new(response))
    }
}

/// Decides one request: every counter it touches, atomically.
pub async fn decide(
    rules: &Rules,
    store: &Counters,
    request: &RateLimitRequest,
    metrics: &Metrics,
) -> Result<RateLimitResponse, tonic::Status> {
    decide_with(rules, store, request, metrics, None).await
}

/// Where a decision's hits are recorded.
struct Hits<'a> {
    events: &'a Events,
    trace_id: Option<&'a str>,
}

impl Hits<'_> {
    fn record(&self, origin: &Origin, shadow: bool) {
        let entry = |key: &str| {
            origin
                .entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        use gatehouse_proto::ratelimit::descriptor as d;
        self.events.record(
            EventKey {
                route: entry(d::ROUTE),
                reason: if shadow {
                    format!("{} (shadow)", origin.label)
                } else {
                    origin.label.clone()
                },
                consumer: entry(d::CONSUMER),
                client_ip: entry(d::CLIENT_IP),
            },
            self.trace_id,
        );
    }
}

async fn decide_with(
    rules: &Rules,
    store: &Counters,
    request: &RateLimitRequest,
    metrics: &Metrics,
    hits: Option<Hits<'_>>,
) -> Result<RateLimitResponse, tonic::Status> {
    let counted = rules.items(&request.descriptors, request.hits_addend);
    let ok = || DescriptorStatus {
        code: Code::Ok as i32,
        ..Default::default()
    };
    let mut statuses: Vec<DescriptorStatus> = request.descriptors.iter().map(|_| ok()).collect();
    if counted.is_empty() {
        metrics
            .requests
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        return Ok(RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses,
            ..Default::default()
        });
    }
    let (items, origins): (Vec<Item>, Vec<Origin>) = counted.into_iter().unzip();
    let store_started = Instant::now();
    let outcomes = match store.check(&items).await {
        Ok(outcomes) => {
            metrics
                .store_seconds
                .observe(store_started.elapsed().as_secs_f64());
            outcomes
        }
        Err(e) => {
            tracing::Span::current().record("gatehouse.ratelimit.degraded", true);
            degraded(store, &items, &origins, &e, metrics)
        }
    };
    let admitted = admits(&items, &outcomes);
    for ((item, origin), outcome) in items.iter().zip(&origins).zip(&outcomes) {
        let result = match (outcome.allowed, item.shadow) {
            (true, _) => "ok",
            (false, true) => "shadow_over_limit",
            (false, false) => "over_limit",
        };
        metrics
            .decisions
            .get_or_create(&DecisionLabels {
                result,
                limit: origin.label.clone(),
            })
            .inc();
        if !outcome.allowed
            && let Some(hits) = &hits
        {
            hits.record(origin, item.shadow);
        }
        // The most restrictive counter speaks for its descriptor.
        let status = &mut statuses[origin.descriptor];
        let blocking = !outcome.allowed && !item.shadow;
        if status.current_limit.is_none()
            || blocking
            || (status.code == Code::Ok as i32
                && u64::from(status.limit_remaining) > outcome.remaining)
        {
            *status = descriptor_status(outcome, &item.rule, blocking);
        }
    }
    let overall = if admitted { Code::Ok } else { Code::OverLimit };
    let span = tracing::Span::current();
    if !span.is_disabled() {
        let policies: Vec<&str> = origins.iter().map(|o| o.label.as_str()).collect();
        span.record("gatehouse.ratelimit.policies", policies.join(",").as_str());
        span.record(
            "gatehouse.ratelimit.result",
            if admitted { "ok" } else { "over_limit" },
        );
    }
    metrics
        .requests
        .get_or_create(&ResultLabel {
            result: if admitted { "ok" } else { "over_limit" },
        })
        .inc();
    Ok(RateLimitResponse {
        overall_code: overall as i32,
        response_headers_to_add: headers(&items, &outcomes, admitted),
        statuses,
        ..Default::default()
    })
}

/// Without the counter store each limit follows its failure mode:
/// fail-open limits count against the local in-memory safety net,
/// fail-closed ones refuse. Logged at most once per interval.
fn degraded(
    store: &Counters,
    items: &[Item],
    origins: &[Origin],
    error: &crate::counters::CounterError,
    metrics: &Metrics,
) -> Vec<Outcome> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG_MS: AtomicU64 = AtomicU64::new(0);
    const LOG_EVERY_MS: u64 = 10_000;

    metrics.store_errors.inc();
    metrics.degraded_decisions.inc();
    let now = crate::counters::memory::now_ms();
    let last = LAST_LOG_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= LOG_EVERY_MS
        && LAST_LOG_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            store = store.name(),
            error = %error,
            "counter store unavailable: deciding in degraded mode (fail-open limits use the local safety net)"
        );
    }
    let open: Vec<Item> = items
        .iter()
        .zip(origins)
        .filter(|(_, origin)| origin.fail_open)
        .map(|(item, _)| item.clone())
        .collect();
    let mut local = store.grace(&open).into_iter();
    items
        .iter()
        .zip(origins)
        .map(|(item, origin)| {
            if origin.fail_open {
                local.next().unwrap_or_else(|| refused(item))
            } else {
                refused(item)
            }
        })
        .collect()
}

fn refused(item: &Item) -> Outcome {
    Outcome {
        allowed: false,
        limit: item.rule.requests,
        remaining: 0,
        reset_ms: 1000,
        next: crate::algorithm::Counter::Window {
            window: 0,
            current: 0,
            previous: 0,
        },
    }
}

fn descriptor_status(
    outcome: &Outcome,
    rule: &crate::algorithm::Rule,
    blocking: bool,
) -> DescriptorStatus {
    use rate_limit_response::rate_limit::Unit;
    let (requests, unit) = match rule.period_ms {
        1_000 => (rule.requests, Unit::Second),
        60_000 => (rule.requests, Unit::Minute),
        3_600_000 => (rule.requests, Unit::Hour),
        86_400_000 => (rule.requests, Unit::Day),
        _ => (rule.requests, Unit::Unknown),
    };
    DescriptorStatus {
        code: if blocking { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: Some(rate_limit_response::RateLimit {
            requests_per_unit: u32::try_from(requests).unwrap_or(u32::MAX),
            unit: unit as i32,
            ..Default::default()
        }),
        limit_remaining: u32::try_from(outcome.remaining).unwrap_or(u32::MAX),
        duration_until_reset: Some(ProtoDuration {
            seconds: (outcome.reset_ms / 1000) as i64,
            nanos: ((outcome.reset_ms % 1000) * 1_000_000) as i32,
        }),
        ..Default::default()
    }
}

/// `RateLimit-*` headers for the most restrictive blocking counter (and
/// `Retry-After` when over): the IETF RateLimit header fields draft.
fn headers(items: &[Item], outcomes: &[Outcome], admitted: bool) -> Vec<HeaderValue> {
    let relevant = items
        .iter()
        .zip(outcomes)
        .filter(|(item, outcome)| !item.shadow && (admitted || !outcome.allowed))
        .min_by_key(|(_, outcome)| outcome.remaining);
    let Some((_, outcome)) = relevant else {
        return Vec::new();
    };
    let reset_seconds = outcome.reset_ms.div_ceil(1000).max(1);
    let header = |key: &str, value: String| HeaderValue {
        key: key.to_owned(),
        value,
        ..Default::default()
    };
    let mut headers = vec![
        header("ratelimit-limit", outcome.limit.to_string()),
        header("ratelimit-remaining", outcome.remaining.to_string()),
        header("ratelimit-reset", reset_seconds.to_string()),
    ];
    if !admitted {
        headers.push(header("retry-after", reset_seconds.to_string()));
    }
    headers
}

/// gRPC (decisions, and quota assignments) plus the HTTP endpoints, on one port.
pub fn routes(
    fleet: Option<Arc<crate::quota::fleet::Fleet>>,
    service: LimitService,
) -> tonic::service::Routes {
    let rules = service.rules.clone();
    let metrics = service.metrics.clone();
    let quota = crate::quota::QuotaService::server(
        service.rules.clone(),
        service.metrics.quota.clone(),
        fleet,
    );
    let http =
        gatehouse_service_kit::endpoints(move || rules.load().is_some(), move || metrics.render());
    tonic::service::Routes::from(http)
        .add_service(RateLimitServiceServer::new(service))
        .add_service(quota)
}
