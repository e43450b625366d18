//! gRPC health checks against a real gRPC health service (tonic's
//! `grpc.health.v1`): Envoy marks the endpoint unhealthy when the service
//! it asks about stops serving, and healthy again when it is back.

use std::time::Duration;

use gatehouse_e2e::{Stack, eventually};
use serde_json::json;
use tonic_health::ServingStatus;

#[tokio::test]
async fn grpc_health_checks_follow_the_services_status() {
    let (reporter, port) =
        gatehouse_e2e::grpc::health_server(&[("orders", ServingStatus::Serving)]).await;
    let g = Stack::new().start().await;
    let version = g
        .cp
        .apply(
            "/v1/services/orders-grpc",
            json!({"endpoints": [{"host": "127.0.0.1", "port": port}], "protocol": "grpc",
                   "health_check": {"type": "grpc", "grpc_service": "orders", "interval_ms": 100,
                                    "timeout_ms": 500, "healthy_threshold": 1, "unhealthy_threshold": 1}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let healthy = || async {
        g.envoy
            .stat("cluster.orders-grpc.membership_healthy")
            .await
            .unwrap_or(u64::MAX)
    };
    eventually(Duration::from_secs(10), "the endpoint healthy", || async {
        healthy().await == 1
    })
    .await;
    reporter
        .set_service_status("orders", ServingStatus::NotServing)
        .await;
    eventually(
        Duration::from_secs(10),
        "the endpoint unhealthy",
        || async { healthy().await == 0 },
    )
    .await;
    reporter
        .set_service_status("orders", ServingStatus::Serving)
        .await;
    eventually(
        Duration::from_secs(10),
        "the endpoint healthy again",
        || async { healthy().await == 1 },
    )
    .await;
    g.cp.assert_no_nacks().await;
}
