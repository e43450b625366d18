//! Gatehouse ratelimit-service: Envoy's `envoy.service.ratelimit.v3`
//! RateLimitService.
//!
//! The control plane streams the policies and plans over ADS as one
//! `RateLimitConfig` resource; Envoy sends, per request, the descriptors
//! the control plane put on the route. Counters live in a [`store`]: in
//! memory (the embedded default, one instance).
//!
//! - [`algorithm`]: fixed window, sliding window, token bucket
//! - [`rules`]: the configuration in force; descriptors → counters
//! - [`store`]: counter storage, atomic per request
//! - [`server`]: the gRPC service, response headers, HTTP endpoints

pub mod algorithm;
pub mod metrics;
pub mod rules;
pub mod server;
pub mod store;

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use gatehouse_proto::{protobuf::Any, ratelimit as rl};
use gatehouse_xds_client::Subscription;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    metrics::{Metrics, ResultLabel},
    rules::Rules,
    server::{LimitService, SharedRules},
    store::Store,
};

pub struct Settings {
    /// The control plane's xDS address, e.g. `http://127.0.0.1:18000`.
    pub xds_endpoint: String,
    pub node_id: String,
    /// Presented to the control plane if it requires one.
    pub xds_token: Option<gatehouse_xds_client::XdsToken>,
    pub store: Store,
}

fn receiver(
    rules: SharedRules,
    metrics: Metrics,
) -> impl FnMut(&str, Vec<Any>) -> Result<(), String> + Send + 'static {
    move |version, resources| {
        let result = decode(&resources).and_then(|config| Rules::build(version, config));
        let label = match result {
            Ok(built) => {
                info!(
                    version,
                    policies = built.policy_count(),
                    "rate limits updated"
                );
                rules.store(Some(Arc::new(built)));
                metrics.ready.set(1);
                "ok"
            }
            Err(_) => "rejected",
        };
        metrics
            .config_updates
            .get_or_create(&ResultLabel { result: label })
            .inc();
        if label == "ok" {
            Ok(())
        } else {
            Err("invalid RateLimitConfig".to_owned())
        }
    }
}

fn decode(resources: &[Any]) -> Result<rl::RateLimitConfig, String> {
    gatehouse_service_kit::single_resource(resources, rl::TYPE_URL)
}

/// Subscribes to the control plane and serves on a pre-bound listener until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let metrics = Metrics::new(settings.store.redis_counters());
    let rules: SharedRules = Arc::new(ArcSwapOption::empty());
    let stop = CancellationToken::new();
    let subscription = Subscription {
        endpoint: settings.xds_endpoint,
        node_id: settings.node_id,
        node_cluster: "gatehouse-ratelimit".into(),
        type_url: rl::TYPE_URL.into(),
        token: settings.xds_token.clone(),
    };
    let xds = tokio::spawn(gatehouse_xds_client::run(
        subscription,
        receiver(rules.clone(), metrics.clone()),
        stop.clone(),
    ));
    let store = Arc::new(settings.store);
    let sweeper = tokio::spawn(sweep(store.clone(), stop.clone()));
    let lender = store
        .leasing()
        .then(|| tokio::spawn(return_leases(store.clone(), stop.clone())));
    let routes = server::routes(LimitService {
        rules,
        store,
        metrics,
    });
    let served = gatehouse_service_kit::serve(listener, routes, shutdown).await;
    stop.cancel();
    let _ = xds.await;
    let _ = sweeper.await;
    if let Some(lender) = lender {
        let _ = lender.await;
    }
    served
}

/// Gives unspent leased hits back to Redis once their loan is due, and all
/// of them when the service stops (after its last request), so a restart,
/// such as a rolling deploy, keeps no hits from the other instances.
async fn return_leases(store: Arc<Store>, stop: CancellationToken) {
    let every = Duration::from_millis(store::lease::LOAN_MS / 4);
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
async fn sweep(store: Arc<Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        store.sweep();
    }
}
