//! mTLS on the xDS port (issue 24): with `--xds-tls-client-ca-file` every
//! client presents a certificate from that CA naming its node id. Envoy
//! and ratelimit-service with their own certificates are served; a client
//! without one fails the handshake; one whose certificate names another
//! node is refused.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Pki, Sidecar, Upstream,
    ads::{AdsProbe, first_answer},
    eventually, free_port, probe, scratch_dir,
};
use serde_json::json;

const SHARED: &str = "shared-xds-token-for-the-mtls-test-0123456789";

/// An ADS stream as node `id` presenting `identity` (a leaf of `pki`).
async fn ads_as(
    pki: &Pki,
    xds: std::net::SocketAddr,
    id: &str,
    identity: Option<&str>,
) -> Result<(), String> {
    let ca = pki.read("xds-ca.crt");
    let identity = identity.map(|leaf| {
        (
            pki.read(&format!("{leaf}.crt")),
            pki.read(&format!("{leaf}.key")),
        )
    });
    first_answer(
        xds,
        AdsProbe {
            ca: &ca,
            identity,
            token: SHARED,
            node_id: id,
            cluster: "gatehouse",
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_xds_client_presents_a_certificate_naming_its_node() {
    let pki = Pki::new(scratch_dir("gatehouse_xds_mtls"));
    pki.ca("xds-ca");
    pki.server("xds-ca", "xds", &["localhost", "127.0.0.1"]);
    pki.ca("nodes");
    for node in ["envoy-a", "limiter-1", "envoy-b"] {
        pki.leaf(
            "nodes",
            node,
            &format!("subjectAltName=DNS:{node}\nextendedKeyUsage=clientAuth\n"),
        );
    }
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        xds_token: Some(SHARED.into()),
        xds_insecure: false,
        args: vec![
            format!("--xds-tls-cert-file={}", pki.path("xds.crt").display()),
            format!("--xds-tls-key-file={}", pki.path("xds.key").display()),
            format!(
                "--xds-tls-client-ca-file={}",
                pki.path("nodes.crt").display()
            ),
        ],
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let web = Upstream::start("web").await;
    cp.apply("/v1/services/web", web.service("web")).await;
    let version = cp
        .apply(
            "/v1/routes/web",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "web"}}),
        )
        .await;

    // Envoy with its node certificate is served.
    let envoy = Envoy::start_with_xds_mtls(
        cp.xds,
        proxy_port,
        SHARED,
        &pki.path("xds-ca.crt"),
        (
            "envoy-a",
            &pki.path("envoy-a.crt"),
            &pki.path("envoy-a.key"),
        ),
    )
    .await;
    cp.until_converged(version).await;
    let http = gatehouse_e2e::client();
    eventually(Duration::from_secs(10), "Envoy to serve", || async {
        probe(&http, &envoy.url("/")).await.0 == 200
    })
    .await;
    // So is ratelimit-service with its own.
    let url = format!("--xds-url=https://localhost:{}", cp.xds.port());
    let args = [
        url.as_str(),
        &format!("--xds-ca-file={}", pki.path("xds-ca.crt").display()),
        &format!(
            "--xds-client-cert-file={}",
            pki.path("limiter-1.crt").display()
        ),
        &format!(
            "--xds-client-key-file={}",
            pki.path("limiter-1.key").display()
        ),
        &format!("--xds-token={SHARED}"),
        "--node-id=limiter-1",
    ];
    drop(Sidecar::ratelimit(cp.xds, 0, &args).await);

    // The right certificate is served; another node's is refused; none at
    // all never gets past the handshake.
    assert_eq!(
        ads_as(&pki, cp.xds, "envoy-b", Some("envoy-b")).await,
        Ok(())
    );
    assert_eq!(
        ads_as(&pki, cp.xds, "envoy-a", Some("envoy-b")).await,
        Err("PermissionDenied".into())
    );
    assert!(ads_as(&pki, cp.xds, "envoy-a", None).await.is_err());
    cp.assert_no_nacks().await;
}
