//! Gatehouse ext-authz: Envoy's `envoy.service.auth.v3` Authorization server.
//!
//! Decisions come from memory only. The control plane streams the
//! authentication state (consumers, API key hashes, JWT issuers,
//! introspection providers) over ADS as one `AuthConfig` resource; each
//! route's policy arrives with the Check request in Envoy's context
//! extensions. Until the first snapshot arrives every Check is answered
//! `UNAVAILABLE` (Envoy's failure mode decides); when the control plane goes
//! away the last snapshot stays in force.
//!
//! - [`decision`]: credentials, policy, allow/deny
//! - [`jwt`], [`introspect`]: token verification
//! - [`state`]: the in-memory state and how updates replace it
//! - [`server`]: the gRPC service and HTTP endpoints
//! - [`usage`]: reports of API key use back to the control plane
//! - [`traffic`]: requests per route and consumer from Envoy's usage log,
//!   as metrics and as reports to the control plane

pub mod credential;
pub mod decision;
pub mod introspect;
pub mod jwt;
pub mod metrics;
pub mod peer;
pub mod secret;
pub mod server;
pub mod state;
pub mod traffic;
pub mod usage;

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use gatehouse_proto::{auth, protobuf::Any};
use gatehouse_xds_client::Subscription;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    metrics::{Metrics, ResultLabel},
    server::{AuthzService, SharedState},
    state::AuthState,
};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The control plane's xDS address, e.g. `http://127.0.0.1:18000`.
    pub xds_endpoint: String,
    pub node_id: String,
    /// Presented to the control plane if it requires one.
    pub xds_token: Option<gatehouse_xds_client::XdsToken>,
    /// The CA of an `https://` xDS endpoint.
    pub xds_ca: Option<gatehouse_xds_client::XdsCa>,
    /// How often API key use is reported to the control plane.
    pub usage_report_interval: Duration,
    /// How often repeated authentication failures are summarised.
    pub event_summary: Duration,
    /// Most consumers with their own label in the usage metrics.
    pub usage_consumers: usize,
}

/// Why a JWKS or introspection call failed; never carries the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
    #[error("body: {0}")]
    Body(reqwest::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// Sends `request` and reads a successful response's body, refusing more
/// than `max_bytes` (for JWKS and introspection). Errors never carry the URL.
pub async fn fetch_bounded(
    request: reqwest::RequestBuilder,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let mut response = request
        .send()
        .await
        .map_err(|e| FetchError::Request(e.without_url()))?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Body(e.without_url()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
    }
    Ok(body)
}

/// HTTP client for JWKS and introspection: bounded connect time, no redirects
/// to elsewhere.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse-ext-authz/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Turns ADS responses into the shared state: exactly one `AuthConfig`;
/// one that does not decode is refused with the reason, and the state in
/// force stays.
fn receiver(
    state: SharedState,
    http: reqwest::Client,
    metrics: Metrics,
) -> impl FnMut(&str, Vec<Any>) -> Result<(), gatehouse_xds_client::Refusal> + Send + 'static {
    let outcomes = metrics.clone();
    gatehouse_service_kit::snapshot::receiver(
        auth::TYPE_URL,
        move |version, config: auth::AuthConfig| {
            let previous = state.load_full();
            let built = AuthState::build(version, config, previous.as_deref(), &http, &metrics);
            info!(
                version,
                consumers = built.consumers.len(),
                keys = built.keys.len(),
                issuers = built.issuers.values().map(Vec::len).sum::<usize>(),
                "authentication state updated"
            );
            state.store(Some(Arc::new(built)));
            Ok::<_, std::convert::Infallible>(())
        },
        move |ok| {
            let result = if ok { "ok" } else { "rejected" };
            outcomes
                .config_updates
                .get_or_create(&ResultLabel { result })
                .inc();
            if ok {
                outcomes.ready.set(1);
            }
        },
    )
}

fn settings_usage(
    endpoint: &str,
    interval: Duration,
    token: Option<gatehouse_xds_client::XdsToken>,
    ca: Option<gatehouse_xds_client::XdsCa>,
) -> usage::Reporting {
    usage::Reporting {
        endpoint: endpoint.to_owned(),
        interval,
        token,
        ca,
    }
}

/// Subscribes to the control plane and serves Check on a pre-bound
/// listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), gatehouse_service_kit::ServeError> {
    let metrics = Metrics::new(settings.usage_consumers);
    let state: SharedState = Arc::new(ArcSwapOption::empty());
    let stop = CancellationToken::new();
    let subscription_endpoint = settings.xds_endpoint.clone();
    let subscription = Subscription {
        endpoint: settings.xds_endpoint,
        node_id: settings.node_id,
        node_cluster: "gatehouse-ext-authz".into(),
        type_url: auth::TYPE_URL.into(),
        token: settings.xds_token.clone(),
        ca: settings.xds_ca.clone(),
    };
    let xds = tokio::spawn(gatehouse_xds_client::run(
        subscription,
        receiver(state.clone(), http_client(), metrics.clone()),
        stop.clone(),
    ));
    let reporting = settings_usage(
        &subscription_endpoint,
        settings.usage_report_interval,
        settings.xds_token,
        settings.xds_ca,
    );
    let reporter = tokio::spawn(usage::report(
        reporting.clone(),
        state.clone(),
        stop.clone(),
    ));
    let traffic_reporter = tokio::spawn(traffic::report(
        reporting,
        metrics.traffic.clone(),
        stop.clone(),
    ));
    let events = gatehouse_service_kit::events::Events::new("auth_failure", settings.event_summary);
    let routes = server::routes(AuthzService {
        state,
        metrics,
        events: Some(events),
    });
    gatehouse_service_kit::serve_watched(
        listener,
        routes,
        shutdown,
        stop,
        vec![
            ("the xDS subscription", xds),
            ("key usage reporting", reporter),
            ("traffic usage reporting", traffic_reporter),
        ],
    )
    .await
}
