use std::{net::SocketAddr, time::Duration};

use clap::Parser;

/// Gatehouse ext-authz: Envoy's ext_authz (envoy.service.auth.v3) gRPC server.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-ext-authz", version)]
struct Args {
    /// Address for gRPC Check and the HTTP /healthz, /readyz and /metrics.
    #[arg(long, env = "GATEHOUSE_LISTEN_ADDR", default_value = "127.0.0.1:18001")]
    listen_addr: SocketAddr,

    /// The control plane's xDS address.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_URL",
        default_value = "http://127.0.0.1:18000"
    )]
    xds_url: String,

    /// Node id reported to the control plane (shown in its status).
    #[arg(long, env = "GATEHOUSE_NODE_ID", default_value = "ext-authz")]
    node_id: String,

    #[command(flatten)]
    xds_token: gatehouse_xds_client::TokenArgs,

    /// How often API key use (for "last used") is reported to the control plane.
    #[arg(
        long,
        env = "GATEHOUSE_USAGE_REPORT_INTERVAL_MS",
        default_value_t = 10_000
    )]
    usage_report_interval_ms: u64,

    /// Longest wait for in-flight checks on shutdown.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE_MS", default_value_t = 2000)]
    shutdown_grace_ms: u64,

    /// Threads deciding checks: 0 (the default) is a work-stealing pool of
    /// one per CPU, so a token whose signature is being verified (hundreds
    /// of microseconds) does not hold up other checks; 1 runs everything on
    /// one thread (less CPU per cached check); more is a pool of that many.
    #[arg(long, env = "GATEHOUSE_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gatehouse_service_kit::runtime(args.worker_threads)?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    gatehouse_service_kit::init_logging();
    let listener = tokio::net::TcpListener::bind(args.listen_addr).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %listener.local_addr()?,
        worker_threads = args.worker_threads,
        xds = %args.xds_url,
        "listening"
    );
    let settings = gatehouse_ext_authz::Settings {
        xds_endpoint: args.xds_url,
        node_id: args.node_id,
        xds_token: args.xds_token.token().map_err(anyhow::Error::msg)?,
        usage_report_interval: Duration::from_millis(args.usage_report_interval_ms),
    };
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    gatehouse_service_kit::run_until_signal(
        |stop| {
            tokio::spawn(gatehouse_ext_authz::serve(listener, settings, async {
                let _ = stop.await;
            }))
        },
        grace,
    )
    .await?;
    Ok(())
}
