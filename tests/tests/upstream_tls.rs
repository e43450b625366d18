//! HTTPS and mTLS to backends through a real Envoy (issue 20): the backend
//! is a TLS-terminating Envoy in front of a plain upstream, with a CA, a
//! server certificate and a client certificate made by `openssl` for the
//! test. Verified by CA and name; a backend that requires a client
//! certificate gets Gatehouse's.

use std::path::Path;

use gatehouse_e2e::{Envoy, Pki, Stack, Upstream, free_port, probe, scratch_dir};
use serde_json::json;

/// A CA, a server certificate for backend.test (and 127.0.0.1) and a
/// client certificate, all signed by the CA.
fn certificates(dir: &Path) {
    let pki = Pki::new(dir.to_path_buf());
    pki.ca("ca");
    pki.server("ca", "server", &["backend.test", "127.0.0.1"]);
    pki.leaf("ca", "client", "extendedKeyUsage=clientAuth\n");
}

/// A static Envoy terminating TLS on `port` in front of `upstream`,
/// requiring a client certificate from the CA when `mtls`.
async fn tls_backend(dir: &Path, port: u16, upstream: &Upstream, mtls: bool) -> Envoy {
    let d = dir.display();
    let client_check = if mtls {
        format!(
            "require_client_certificate: true\n          common_tls_context:\n            validation_context: {{trusted_ca: {{filename: {d}/ca.crt}}}}\n            tls_certificates: [{{certificate_chain: {{filename: {d}/server.crt}}, private_key: {{filename: {d}/server.key}}}}]"
        )
    } else {
        format!(
            "common_tls_context:\n            tls_certificates: [{{certificate_chain: {{filename: {d}/server.crt}}, private_key: {{filename: {d}/server.key}}}}]"
        )
    };
    let bootstrap = format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          {client_check}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: backend
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, route: {{cluster: plain}}}}]}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: plain
    type: STATIC
    load_assignment:
      cluster_name: plain
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up}}}}}}}}}]}}]
"#,
        up = upstream.addr.port()
    );
    Envoy::start_static(&bootstrap, port).await
}

#[tokio::test]
async fn https_and_mtls_to_backends_verified_by_ca_and_name() {
    let dir = scratch_dir("gatehouse_upstream_tls");
    certificates(&dir);
    let file = |name: &str| dir.join(name).display().to_string();
    let secure = Upstream::start("secure").await;
    let (https_port, mtls_port) = (free_port(), free_port());
    let _https = tls_backend(&dir, https_port, &secure, false).await;
    let _mtls = tls_backend(&dir, mtls_port, &secure, true).await;

    let g = Stack::new().start().await;
    g.cp.apply(
        "/v1/certificates/gatehouse-client",
        json!({"cert_chain_file": file("client.crt"), "private_key_file": file("client.key")}),
    )
    .await;
    let service = |port: u16, tls: serde_json::Value| json!({"endpoints": [{"host": "127.0.0.1", "port": port}], "tls": tls});
    let ca = file("ca.crt");
    let services = [
        (
            "https",
            service(
                https_port,
                json!({"sni": "backend.test", "ca_file": ca,
            "verify_subject_alt_names": ["backend.test"]}),
            ),
        ),
        (
            "wrong-name",
            service(
                https_port,
                json!({"ca_file": ca,
            "verify_subject_alt_names": ["other.test"]}),
            ),
        ),
        (
            "mtls",
            service(
                mtls_port,
                json!({"sni": "backend.test", "ca_file": ca,
            "client_certificate": "gatehouse-client"}),
            ),
        ),
        ("no-client-cert", service(mtls_port, json!({"ca_file": ca}))),
    ];
    let mut version = 0;
    for (name, body) in services {
        g.cp.apply(&format!("/v1/services/{name}"), body).await;
        version = g
            .cp
            .apply(
                &format!("/v1/routes/{name}"),
                json!({"match": {"path_prefix": format!("/{name}")}, "destination": {"service": name}}),
            )
            .await;
    }
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;
    g.envoy.until_status("/https", 200).await;
    let http = gatehouse_e2e::client();
    assert_eq!(
        probe(&http, &g.envoy.url("/https")).await,
        (200, Some("secure".into()))
    );
    assert_eq!(
        probe(&http, &g.envoy.url("/mtls")).await,
        (200, Some("secure".into()))
    );
    assert_eq!(
        probe(&http, &g.envoy.url("/wrong-name")).await.0,
        503,
        "a certificate for another name is refused"
    );
    assert_eq!(
        probe(&http, &g.envoy.url("/no-client-cert")).await.0,
        503,
        "the backend requires a client certificate"
    );
    // The client certificate cannot go while a service presents it.
    let in_use = g.cp.delete("/v1/certificates/gatehouse-client").await;
    assert_eq!(in_use.status(), 409);
}
