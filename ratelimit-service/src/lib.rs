//! Gatehouse Envoy rate limit service (envoy.service.ratelimit.v3).
//!
//! Placeholder until its own issue lands: it serves `/healthz` and `/metrics`
//! on its port and shuts down gracefully, so the deployment shape is in place.

use std::future::Future;

use axum::{Router, routing::get};
use tokio::net::TcpListener;

/// The HTTP surface of the placeholder service.
pub fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "" }))
}

/// Serves on a pre-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app())
        .with_graceful_shutdown(shutdown)
        .await
}
