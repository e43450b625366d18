//! Gatehouse ratelimit-service: Envoy's `envoy.service.ratelimit.v3`
//! RateLimitService.
//!
//! The control plane streams the policies and plans over ADS as one
//! `RateLimitConfig` resource; Envoy sends, per request, the descriptors
//! the control plane put on the route. Counters live in [`counters`]: in
//! memory (the embedded default, one instance) or in Redis, shared by every
//! instance (each request decided atomically by one script; busy counters'
//! hits leased ahead of use).
//!
//! - [`algorithm`]: fixed window, sliding window, token bucket
//! - [`rules`]: the configuration in force; descriptors → counters
//! - [`counters`]: counter storage (memory, Redis), atomic per request
//! - [`server`]: the gRPC service, response headers, HTTP endpoints
//! - [`quota`]: Envoy's quota protocol (RLQS) for `enforcement: quota`
//!   policies: each Envoy's share of the limit, by demand

pub mod algorithm;
pub mod counters;
pub mod metrics;
pub mod quota;
pub mod rules;
pub mod server;

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use gatehouse_proto::{protobuf::Any, ratelimit as rl};
use gatehouse_xds_client::Subscription;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    counters::Counters,
    metrics::{Metrics, ResultLabel},
    rules::Rules,
    server::{LimitService, SharedRules},
};

pub struct Settings {
    /// The control plane's xDS address, e.g. `http://127.0.0.1:18000`.
    pub xds_endpoint: String,
    pub node_id: String,
    /// Presented to the control plane if it requires one.
    pub xds_token: Option<gatehouse_xds_client::XdsToken>,
    /// The CA of an `https://` xDS endpoint.
    pub xds_ca: Option<gatehouse_xds_client::XdsCa>,
    pub counters: Counters,
    /// The Redis where instances share quota splits.
    pub quota_redis: Option<QuotaRedis>,
    /// How often repeated rate-limit hits are summarised.
    pub event_summary: std::time::Duration,
}

/// Where the instances' quota ledger lives: one Redis URL, or a Cluster's
/// seed URLs separated by commas.
pub struct QuotaRedis {
    pub url: String,
    pub cluster: bool,
}

/// Turns ADS responses into the rules in force: exactly one
/// `RateLimitConfig`; one that does not decode or build is refused with the
/// reason, and the rules in force stay.
fn receiver(
    rules: SharedRules,
    metrics: Metrics,
) -> impl FnMut(&str, Vec<Any>) -> Result<(), gatehouse_xds_client::Refusal> + Send + 'static {
    gatehouse_service_kit::snapshot::receiver(
        rl::TYPE_URL,
        move |version, config: rl::RateLimitConfig| {
            let built = Rules::build(version, config)?;
            info!(
                version,
                policies = built.policy_count(),
                "rate limits updated"
            );
            rules.store(Some(Arc::new(built)));
            Ok::<_, rules::RulesError>(())
        },
        move |ok| {
            let result = if ok { "ok" } else { "rejected" };
            metrics
                .config_updates
                .get_or_create(&ResultLabel { result })
                .inc();
            if ok {
                metrics.ready.set(1);
            }
        },
    )
}

/// Subscribes to the control plane and serves on a pre-bound listener until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), gatehouse_service_kit::ServeError> {
    let metrics = Metrics::new(settings.counters.redis_counters());
    let rules: SharedRules = Arc::new(ArcSwapOption::empty());
    let stop = CancellationToken::new();
    let fleet = settings.quota_redis.as_ref().and_then(|redis| {
        // Unique among the instances: the node id may be shared.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let instance = format!("{}:{}:{nanos}", settings.node_id, std::process::id());
        quota::fleet::Fleet::new(&redis.url, redis.cluster, instance)
            .inspect_err(|e| tracing::warn!(error = %e, "quota splits not shared: bad Redis URL"))
            .ok()
            .map(Arc::new)
    });
    let subscription = Subscription {
        endpoint: settings.xds_endpoint,
        node_id: settings.node_id,
        node_cluster: "gatehouse-ratelimit".into(),
        type_url: rl::TYPE_URL.into(),
        token: settings.xds_token.clone(),
        ca: settings.xds_ca.clone(),
    };
    let xds = tokio::spawn(gatehouse_xds_client::run(
        subscription,
        receiver(rules.clone(), metrics.clone()),
        stop.clone(),
    ));
    let store = Arc::new(settings.counters);
    let sweeper = tokio::spawn(sweep(store.clone(), stop.clone()));
    let lender = store
        .leasing()
        .then(|| tokio::spawn(return_leases(store.clone(), stop.clone())));
    let routes = server::routes(
        fleet,
        LimitService {
            rules,
            store,
            metrics,
            events: Some(gatehouse_service_kit::events::Events::new(
                "rate_limited",
                settings.event_summary,
            )),
        },
    );
    let mut tasks = vec![
        ("the xDS subscription", xds),
        ("the counter sweeper", sweeper),
    ];
    tasks.extend(lender.map(|lender| ("lease returns", lender)));
    gatehouse_service_kit::serve_watched(listener, routes, shutdown, stop, tasks).await
}

/// Gives unspent leased hits back to Redis once their loan is due, and all
/// of them when the service stops (after its last request), so a restart,
/// such as a rolling deploy, keeps no hits from the other instances.
async fn return_leases(store: Arc<Counters>, stop: CancellationToken) {
    let every = Duration::from_millis(counters::lease::LOAN_MS / 4);
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                store.return_all_leases().await;
                return;
            }
            () = tokio::time::sleep(every) => {}
        }
        store.return_due_leases().await;
    }
}

/// Drops expired in-memory counters every few seconds.
async fn sweep(store: Arc<Counters>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        store.sweep();
    }
}
