//! A service's life: the runtime from `--worker-threads`, logging, the
//! listener bound before anything starts, the server watched until Ctrl-C
//! or SIGTERM, then a drain bounded by `--shutdown-grace-ms`. Exit codes:
//! 0 after a signal, 64 for an invalid configuration, 1 when the server
//! cannot start or stops on its own.

use std::{future::Future, process::ExitCode, time::Duration};

use gatehouse_xds_client::XdsToken;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::config::CommonArgs;

/// What a service's start-up gets: its bound listener and how to reach the
/// control plane.
pub struct Started {
    pub listener: TcpListener,
    pub xds_url: String,
    pub node_id: String,
    pub xds_token: Option<XdsToken>,
    /// The CA of an `https://` xDS URL.
    pub xds_ca: Option<gatehouse_xds_client::XdsCa>,
    /// Cancelled when the service should stop taking requests
    /// (`stop.cancelled_owned()` is the server's shutdown future).
    pub stop: CancellationToken,
    /// How often repeated security events are summarised.
    pub event_summary: Duration,
}

/// Why a service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration: exit 64.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Anything else: exit 1.
    #[error("{0}")]
    Runtime(String),
}

/// The running server: its task, ending when it has drained after `stop`.
pub type Server = JoinHandle<Result<(), crate::ServeError>>;

/// Runs a service: `start` builds it from `common` and its own flags, and
/// returns the server task. `service` names its spans (`service.name`).
pub fn main<F, Fut>(common: CommonArgs, service: &'static str, start: F) -> ExitCode
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = Result<Server, StartError>>,
{
    let runtime = match crate::runtime(common.worker_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(common, service, start))
}

async fn run<F, Fut>(common: CommonArgs, service: &'static str, start: F) -> ExitCode
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = Result<Server, StartError>>,
{
    let _telemetry = crate::trace::init(
        common.log_format,
        common.telemetry.otlp_endpoint.as_ref(),
        service,
        crate::trace::Roots::Never,
    );
    let (xds_token, xds_ca) = match (common.xds_token(), common.xds_ca()) {
        (Ok(token), Ok(ca)) => (token, ca),
        (Err(e), _) | (_, Err(e)) => return failed(StartError::Config(e.to_string())),
    };
    if common.xds_url.starts_with("https://") && xds_ca.is_none() {
        return failed(StartError::Config(
            "an https:// --xds-url needs --xds-ca-file (the CA of the control plane's certificate)"
                .into(),
        ));
    }
    let listener = match TcpListener::bind(common.listen_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            return failed(StartError::Runtime(format!(
                "cannot bind {}: {e}",
                common.listen_addr
            )));
        }
    };
    let addr = listener.local_addr().map_or(common.listen_addr, |a| a);
    let stop = CancellationToken::new();
    let started = Started {
        listener,
        xds_url: common.xds_url.clone(),
        node_id: common.node_id.clone(),
        xds_token,
        xds_ca,
        stop: stop.clone(),
        event_summary: Duration::from_millis(common.event_summary_ms),
    };
    let server = match start(started).await {
        Ok(server) => server,
        Err(e) => return failed(e),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        worker_threads = common.worker_threads,
        xds = %common.xds_url,
        node = %common.node_id,
        "listening"
    );
    watch(server, stop, common.shutdown_grace()).await
}

fn failed(e: StartError) -> ExitCode {
    tracing::error!(error = %e, "cannot start");
    match e {
        StartError::Config(_) => ExitCode::from(64),
        StartError::Runtime(_) => ExitCode::FAILURE,
    }
}

/// Serves until a signal (then drains for at most `grace`) or until the
/// server stops by itself, which is a failure.
async fn watch(mut server: Server, stop: CancellationToken, grace: Duration) -> ExitCode {
    tokio::select! {
        () = crate::shutdown_signal() => {}
        ended = &mut server => {
            let why = crate::why_ended(ended);
            tracing::error!(error = %why, "server failed");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!("shutting down");
    stop.cancel();
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "server failed while draining");
            ExitCode::FAILURE
        }
        Ok(Err(join)) => {
            tracing::error!(error = %join, "server task failed");
            ExitCode::FAILURE
        }
        Err(_) => {
            tracing::warn!(
                ?grace,
                "shutdown deadline passed; exiting with requests in flight"
            );
            ExitCode::SUCCESS
        }
    }
}
