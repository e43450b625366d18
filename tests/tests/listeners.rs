//! Gateways and certificates through a real Envoy: an `https` gateway
//! terminates TLS with certificate files referenced by path (HTTP/2 by ALPN),
//! an `http` gateway opens a second plain listener, overlapping addresses are
//! refused before commit, and a certificate Envoy cannot read is held back
//! while the gateway keeps serving the last good one.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, eventually, free_port,
};
use serde_json::{Value, json};

use gatehouse_e2e::tls_fixture as fixture;

fn tls_client() -> reqwest::Client {
    let pem = std::fs::read(fixture("ca.crt")).expect("fixture CA");
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn status_of(client: &reqwest::Client, url: &str) -> Option<(u16, reqwest::Version)> {
    let response = client.get(url).send().await.ok()?;
    Some((response.status().as_u16(), response.version()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_serve_tls_from_referenced_files_and_plain_http() {
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        validate_with_envoy: true,
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let web = Upstream::start("web").await;
    let (tls_port, plain_port) = (free_port(), free_port());
    let document = json!({
        "services": [web.service("web")],
        "routes": [{"name": "main", "match": {"path_prefix": "/main"},
                    "destination": {"service": "web"}}],
        "certificates": [{"name": "edge", "cert_chain_file": fixture("localhost.crt"),
                          "private_key_file": fixture("localhost.key")}],
        "gateways": [
            {"name": "tls", "address": "127.0.0.1", "port": tls_port, "protocol": "https",
             "certificate": "edge"},
            {"name": "plain", "address": "127.0.0.1", "port": plain_port}
        ]
    });
    let applied = cp.put("/v1/config", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let version = cp.version().await;
    cp.until_converged(version).await;
    cp.assert_no_nacks().await;

    let https = tls_client();
    let tls_url = format!("https://localhost:{tls_port}/main");
    let plain_url = format!("http://127.0.0.1:{plain_port}/main");
    let plain = gatehouse_e2e::client();
    eventually(Duration::from_secs(10), "both gateways to serve", || {
        let (https, plain, tls_url, plain_url) = (&https, &plain, &tls_url, &plain_url);
        async move {
            status_of(https, tls_url).await.map(|s| s.0) == Some(200)
                && status_of(plain, plain_url).await.map(|s| s.0) == Some(200)
        }
    })
    .await;
    let (_, version_used) = status_of(&https, &tls_url).await.expect("https answers");
    assert_eq!(version_used, reqwest::Version::HTTP_2, "h2 by ALPN");
    envoy.until_status("/main", 200).await;

    // The export lists both kinds; the key itself is never in Gatehouse.
    let export: Value = cp.get("/v1/config").await.json().await.expect("json");
    assert_eq!(export["gateways"].as_array().map(Vec::len), Some(2));
    assert_eq!(export["certificates"][0]["name"], json!("edge"));

    // A gateway on the default listener's port is refused before commit.
    let clash = cp
        .put(
            "/v1/gateways/clash",
            json!({"address": "127.0.0.1", "port": proxy_port}),
        )
        .await;
    assert_eq!(clash.status(), 422);
    let body: Value = clash.json().await.expect("problem");
    assert!(body.to_string().contains("both bind"), "{body}");
    assert_eq!(cp.version().await, version, "nothing committed");

    // A key file Envoy cannot read: the node NACKs the secret (SDS; the
    // listener is untouched), the rollout holds back, and the gateway keeps
    // serving with the last good certificate.
    let broken = cp
        .apply(
            "/v1/certificates/edge",
            json!({"cert_chain_file": fixture("localhost.crt"),
                   "private_key_file": "/nonexistent/gatehouse/edge.key"}),
        )
        .await;
    let status = cp.until_held_back().await;
    assert_eq!(status["latest_version"], json!(broken));
    assert_eq!(status["rejections"][0]["type"], json!("sds"), "{status}");
    assert_eq!(
        status["rejections"][0]["resources"],
        json!(["cert_edge"]),
        "{status}"
    );
    assert_eq!(
        status_of(&https, &tls_url).await.map(|s| s.0),
        Some(200),
        "still serving"
    );

    // Removing a gateway closes its port.
    let fixed = cp
        .apply(
            "/v1/certificates/edge",
            json!({"cert_chain_file": fixture("localhost.crt"),
                   "private_key_file": fixture("localhost.key")}),
        )
        .await;
    let deleted = cp.delete("/v1/gateways/plain").await;
    assert_eq!(deleted.status(), 204);
    eventually(
        Duration::from_secs(10),
        "the plain gateway to close",
        || {
            let (plain, plain_url) = (&plain, &plain_url);
            async move { status_of(plain, plain_url).await.is_none() }
        },
    )
    .await;
    assert!(cp.version().await > fixed);
    assert_eq!(status_of(&https, &tls_url).await.map(|s| s.0), Some(200));
}
