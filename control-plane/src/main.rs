use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: gatehouse_service_kit::alloc::Jemalloc = gatehouse_service_kit::alloc::Jemalloc;

use clap::Parser;
use gatehouse_control_plane::{ControlPlane, config::Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let _telemetry = gatehouse_service_kit::trace::init(
        config.log_format,
        config.telemetry.otlp_endpoint.as_ref(),
        "gatehouse-control-plane",
        gatehouse_service_kit::trace::Roots::Always,
    );
    let control_plane = match ControlPlane::bind(&config).await {
        Ok(control_plane) => control_plane,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(if e.is_config() { 64 } else { 1 });
        }
    };
    let (admin, xds) = (control_plane.admin_addr(), control_plane.xds_addr());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        admin = ?admin,
        xds = ?xds,
        proxy = %config.proxy.proxy_addr,
        store = %control_plane.store().url(),
        "gatehouse control plane started"
    );
    if let Some(path) = &config.addr_file {
        let addrs = serde_json::json!({ "admin": admin, "xds": xds });
        if let Err(e) = std::fs::write(path, addrs.to_string()) {
            tracing::error!(error = %e, path = %path.display(), "cannot write address file");
            return ExitCode::FAILURE;
        }
    }
    match control_plane
        .run(
            gatehouse_service_kit::shutdown_signal(),
            config.shutdown_grace(),
        )
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            ExitCode::FAILURE
        }
    }
}
