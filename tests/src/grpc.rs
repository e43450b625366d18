//! A real gRPC server for the tests: tonic's health service, on loopback.

use tonic_health::{ServingStatus, server::HealthReporter};

/// Serves `grpc.health.v1.Health` with `statuses` on an ephemeral port
/// (HTTP/1 accepted too, for gRPC-Web); returns its reporter (to change a
/// status later) and the port.
pub async fn health_server(statuses: &[(&str, ServingStatus)]) -> (HealthReporter, u16) {
    let (reporter, health) = tonic_health::server::health_reporter();
    for (service, status) in statuses {
        reporter.set_service_status(*service, *status).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (reporter, port)
}
