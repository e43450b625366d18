//! TLS at the edge through a real Envoy (issue 24): certificates uploaded
//! as PEM reach Envoy by SDS over an xDS port on TLS with a token; one
//! listener serves two hostnames with their own certificates (SNI), over
//! HTTP/2 and HTTP/1.1; a rotation under load drops no request and leaves
//! the listener alone; uploaded keys never come back out of the API or the
//! store; a TLS-only route refuses cleartext and a plain gateway redirects.
//!
//! Each certificate is signed by its own CA, so which one a client trusts
//! tells which certificate Envoy served.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Pki, Upstream, eventually, free_port, scratch_dir,
};
use serde_json::{Value, json};

const TOKEN: &str = "xds-token-for-the-edge-tls-test-0123456789";
const KEK: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A client trusting only `cas`, resolving the test names to Envoy.
fn client(pki: &Pki, cas: &[&str], port: u16, http1: bool, reuse: bool) -> reqwest::Client {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .resolve("a.test", addr)
        .resolve("b.test", addr)
        .timeout(Duration::from_secs(5));
    for ca in cas {
        let pem = pki.read(&format!("{ca}.crt"));
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("ca"));
    }
    if http1 {
        builder = builder.http1_only();
    }
    if !reuse {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().expect("client")
}

async fn get(client: &reqwest::Client, url: &str) -> Option<reqwest::Response> {
    client.get(url).send().await.ok()
}

fn uploaded(pki: &Pki, leaf: &str) -> Value {
    json!({"cert_chain_pem": pki.read(&format!("{leaf}.crt")),
           "private_key_pem": pki.read(&format!("{leaf}.key"))})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_certificates_by_sni_rotate_over_sds_without_touching_the_listener() {
    let pki = Pki::new(scratch_dir("gatehouse_pki"));
    for ca in ["xds-ca", "ca-a", "ca-b", "ca-a2"] {
        pki.ca(ca);
    }
    pki.server("xds-ca", "xds", &["localhost", "127.0.0.1"]);
    pki.server("ca-a", "a", &["a.test"]);
    pki.server("ca-b", "b", &["b.test"]);
    pki.server("ca-a2", "a2", &["a.test"]);

    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        validate_with_envoy: true,
        xds_token: Some(TOKEN.into()),
        xds_insecure: false,
        args: vec![
            format!("--xds-tls-cert-file={}", pki.path("xds.crt").display()),
            format!("--xds-tls-key-file={}", pki.path("xds.key").display()),
            format!("--key-encryption-key={KEK}"),
        ],
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let envoy = Envoy::start_with_xds_tls(
        cp.xds,
        proxy_port,
        TOKEN,
        &pki.path("xds-ca.crt"),
        "gatehouse",
    )
    .await;
    let web = Upstream::start("web").await;
    let (tls_port, redirect_port) = (free_port(), free_port());
    let mut a = uploaded(&pki, "a");
    a["name"] = json!("a");
    let mut b = uploaded(&pki, "b");
    b["name"] = json!("b");
    let document = json!({
        "services": [web.service("web")],
        "routes": [
            {"name": "secure", "match": {"path_prefix": "/secure"},
             "destination": {"service": "web"}, "require_tls": true},
            {"name": "open", "match": {"path_prefix": "/open"}, "destination": {"service": "web"}}
        ],
        "certificates": [a, b],
        "gateways": [
            {"name": "edge", "address": "127.0.0.1", "port": tls_port, "protocol": "https",
             "certificate": "a", "sni": [{"server_names": ["b.test"], "certificate": "b"}],
             "tls_min_version": "1.2", "cipher_suites": ["ECDHE-ECDSA-AES128-GCM-SHA256"],
             "hsts_max_age_s": 600},
            {"name": "redirect", "address": "127.0.0.1", "port": redirect_port,
             "redirect_to_https_port": tls_port}
        ]
    });
    let applied = cp.put("/v1/config", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let version = cp.version().await;
    cp.until_converged(version).await;

    // SNI: a.test gets the default certificate, b.test its own; each client
    // trusts only the CA of the certificate it expects.
    let url_a = format!("https://a.test:{tls_port}/secure");
    let url_b = format!("https://b.test:{tls_port}/secure");
    let only_a = client(&pki, &["ca-a"], tls_port, false, true);
    eventually(
        Duration::from_secs(10),
        "the TLS gateway to serve",
        || async {
            get(&only_a, &url_a)
                .await
                .is_some_and(|r| r.status() == 200)
        },
    )
    .await;
    let h2 = get(&only_a, &url_a).await.expect("a over h2");
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        h2.headers()["strict-transport-security"],
        "max-age=600; includeSubDomains"
    );
    let h1 = get(&client(&pki, &["ca-a"], tls_port, true, true), &url_a)
        .await
        .expect("a over http/1.1");
    assert_eq!(
        (h1.status().as_u16(), h1.version()),
        (200, reqwest::Version::HTTP_11)
    );
    let only_b = client(&pki, &["ca-b"], tls_port, false, true);
    assert_eq!(
        get(&only_b, &url_b).await.map(|r| r.status().as_u16()),
        Some(200)
    );
    assert!(
        get(&only_b, &url_a).await.is_none(),
        "a.test is not served b's certificate"
    );
    let b_h1 = client(&pki, &["ca-b"], tls_port, true, true);
    assert_eq!(
        get(&b_h1, &url_b).await.map(|r| r.version()),
        Some(reqwest::Version::HTTP_11)
    );

    // Cleartext: the TLS-only route refuses (no redirect: the request has
    // already crossed in the clear), the others answer; the plain gateway
    // redirects everything to HTTPS.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let refused = plain.get(envoy.url("/secure")).send().await.expect("plain");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], json!("tls_required"));
    let open = plain.get(envoy.url("/open")).send().await.expect("plain");
    assert_eq!(open.status(), 200);
    let redirected = plain
        .get(format!("http://127.0.0.1:{redirect_port}/open?x=1"))
        .send()
        .await
        .expect("redirect gateway");
    assert_eq!(redirected.status(), 308);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://127.0.0.1:{tls_port}/open?x=1").as_str()
    );

    // The key never comes back: not in GET, export, history, the database.
    let got: Value = cp
        .get("/v1/certificates/a")
        .await
        .json()
        .await
        .expect("json");
    assert!(got.get("private_key_pem").is_none(), "{got}");
    assert!(
        got["cert_chain_pem"]
            .as_str()
            .is_some_and(|p| p.contains("BEGIN CERTIFICATE"))
    );
    let export = cp.get("/v1/config").await.text().await.expect("export");
    let history = cp
        .get("/v1/config/versions")
        .await
        .text()
        .await
        .expect("history");
    let record = cp
        .get(&format!("/v1/config/versions/{version}"))
        .await
        .text()
        .await
        .expect("record");
    for text in [&export, &history, &record] {
        assert!(!text.contains("PRIVATE KEY"), "a key came back out");
    }
    let key_body = pki.read("a.key");
    let key_line = key_body.lines().nth(1).expect("key body");
    let db = std::fs::read(cp.dir.join("gatehouse.db")).expect("db");
    let db = String::from_utf8_lossy(&db);
    assert!(
        !db.contains("PRIVATE KEY") && !db.contains(key_line),
        "keys at rest are sealed"
    );
    let log = std::fs::read_to_string(&cp.log).unwrap_or_default();
    assert!(!log.contains(key_line), "a key reached the log");

    // Expiry is visible in the status and as a metric.
    let nodes = cp.nodes().await;
    let certificates = nodes["certificates"]
        .as_array()
        .expect("certificates")
        .clone();
    assert_eq!(certificates.len(), 2, "{nodes}");
    assert!(
        certificates
            .iter()
            .all(|c| c["not_after_s"].as_i64().is_some_and(|t| t > 0))
    );
    let metrics = cp.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("gatehouse_certificate_not_after_seconds{certificate=\"a\"}"),
        "{metrics}"
    );

    // Rotation under load: a kept-alive client and one that handshakes on
    // every request (both trusting the old and new CA) see no failure; the
    // listener is not modified; new handshakes get the new certificate.
    let modified_before = envoy.stat("listener_manager.listener_modified").await;
    assert!(
        modified_before.is_some(),
        "Envoy counts listener modifications"
    );
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for reuse in [true, false] {
        let c = client(&pki, &["ca-a", "ca-a2"], tls_port, false, reuse);
        let (running, ok, failed, url) =
            (running.clone(), ok.clone(), failed.clone(), url_a.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match get(&c, &url).await {
                    Some(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = cp.apply("/v1/certificates/a", uploaded(&pki, "a2")).await;
    cp.until_converged(rotated).await;
    let only_a2 = client(&pki, &["ca-a2"], tls_port, false, false);
    eventually(
        Duration::from_secs(10),
        "new handshakes to get the new certificate",
        || async {
            get(&only_a2, &url_a)
                .await
                .is_some_and(|r| r.status() == 200)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(
        ok > 20 && failed == 0,
        "{ok} answered, {failed} failed during the rotation"
    );
    let old_only = client(&pki, &["ca-a"], tls_port, false, false);
    assert!(
        get(&old_only, &url_a).await.is_none(),
        "the old certificate is gone"
    );
    assert_eq!(
        envoy.stat("listener_manager.listener_modified").await,
        modified_before,
        "the rotation replaced only the secret"
    );

    // Bad input: 422 naming the field, nothing stored.
    let before = cp.version().await;
    let refusals = [
        (
            json!({"cert_chain_pem": pki.read("b.crt"), "private_key_pem": pki.read("a.key")}),
            "private_key_pem",
        ),
        (
            json!({"cert_chain_pem": pki.read("xds.crt")}),
            "private_key_pem",
        ),
        (
            json!({"cert_chain_pem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}),
            "cert_chain_pem",
        ),
        (
            json!({"cert_chain_pem": include_str!("../fixtures/tls/expired.crt"),
                   "private_key_pem": include_str!("../fixtures/tls/expired.key")}),
            "cert_chain_pem",
        ),
    ];
    for (body, field) in refusals {
        let response = cp.put("/v1/certificates/bad", body).await;
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["field"], json!(field), "{problem}");
        assert!(!problem.to_string().contains("PRIVATE KEY"), "{problem}");
    }
    let overlapping = cp
        .put(
            "/v1/gateways/edge",
            json!({"address": "127.0.0.1", "port": tls_port, "protocol": "https",
                   "certificate": "a", "sni": [
                       {"server_names": ["b.test"], "certificate": "b"},
                       {"server_names": ["b.test"], "certificate": "a"}]}),
        )
        .await;
    assert_eq!(overlapping.status(), 422);
    let problem: Value = overlapping.json().await.expect("problem");
    assert_eq!(
        problem["errors"][0]["field"],
        json!("sni[1].server_names[0]")
    );
    assert_eq!(cp.version().await, before, "nothing stored");
    cp.assert_no_nacks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_keys_are_refused_while_xds_is_plaintext() {
    let pki = Pki::new(scratch_dir("gatehouse_pki"));
    pki.ca("ca");
    pki.server("ca", "leaf", &["a.test"]);
    let cp = ControlPlane::start(ControlPlaneOptions {
        args: vec![format!("--key-encryption-key={KEK}")],
        ..ControlPlaneOptions::new(free_port())
    })
    .await;
    let before = cp.version().await;
    let response = cp.put("/v1/certificates/a", uploaded(&pki, "leaf")).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], json!("private_key_pem"));
    assert!(problem.to_string().contains("xDS"), "{problem}");
    assert_eq!(cp.version().await, before);
}
