use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse-ratelimit",
    version,
    about = "Gatehouse Envoy rate limit service (envoy.service.ratelimit.v3)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "GATEHOUSE_LISTEN_ADDR", default_value = "127.0.0.1:18002")]
    listen_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen_addr).await?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), addr = %listener.local_addr()?, "listening");
    gatehouse_ratelimit_service::serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
