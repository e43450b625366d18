//! The xDS channel (issue 24): TLS on the xDS port, and tokens bound to a
//! fleet or a node, minted and revoked through the admin API and
//! `gatehousectl`. A node token serves only the nodes it is bound to; a
//! revoked token's streams are closed and it cannot reconnect; the shared
//! token keeps working; our own services reach the TLS port with
//! `--xds-ca-file`.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Pki, Sidecar, Upstream,
    ads::{AdsProbe, first_answer},
    ctl::ctl,
    eventually, free_port, probe, scratch_dir,
};
use serde_json::{Value, json};

const SHARED: &str = "shared-xds-token-for-the-fleet-test-0123456789";

/// An ADS stream over TLS as a node of `cluster` with `token`: how the
/// control plane answered its first request.
async fn ads_as(
    pki: &Pki,
    xds: std::net::SocketAddr,
    token: &str,
    cluster: &str,
) -> Result<(), tonic::Code> {
    let ca = pki.read("xds-ca.crt");
    let node_id = format!("probe-{cluster}");
    let probe = AdsProbe {
        ca: &ca,
        identity: None,
        token,
        node_id: &node_id,
        cluster,
    };
    first_answer(xds, probe)
        .await
        .map_err(|e| match e.as_str() {
            "PermissionDenied" => tonic::Code::PermissionDenied,
            "Unauthenticated" => tonic::Code::Unauthenticated,
            other => panic!("unexpected: {other}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_tokens_serve_only_their_fleet_and_revoked_ones_are_cut_off() {
    let pki = Pki::new(scratch_dir("gatehouse_xds_pki"));
    pki.ca("xds-ca");
    pki.server("xds-ca", "xds", &["localhost", "127.0.0.1"]);
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        xds_token: Some(SHARED.into()),
        xds_insecure: false,
        args: vec![
            format!("--xds-tls-cert-file={}", pki.path("xds.crt").display()),
            format!("--xds-tls-key-file={}", pki.path("xds.key").display()),
            "--proxy-fleets=gatehouse".into(),
        ],
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let web = Upstream::start("web").await;
    let intranet_port = free_port();
    let applied = cp
        .put(
            "/v1/config",
            json!({"services": [web.service("web")],
                   "gateways": [{"name": "intranet", "fleet": "internal",
                                 "address": "127.0.0.1", "port": intranet_port}],
                   "routes": [{"name": "web", "match": {"path_prefix": "/"},
                               "destination": {"service": "web"}}]}),
        )
        .await;
    assert_eq!(applied.status(), 200);

    // Minted with gatehousectl; listed without the token or its hash.
    let created = ctl(
        &cp,
        &[
            "--output",
            "json",
            "xds-tokens",
            "create",
            "intranet",
            "--fleet",
            "internal",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let created: Value = serde_json::from_str(&created.stdout).expect("json");
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("ghn_"));
    let listed = ctl(&cp, &["--output", "json", "xds-tokens", "list"]).await;
    assert!(listed.stdout.contains("intranet") && !listed.stdout.contains(&token[4..]));
    assert!(!listed.stdout.contains("sha256"), "{}", listed.stdout);

    // Over TLS: the public Envoy with the shared token, the internal one
    // with its fleet token; each gets its own listeners.
    let ca = pki.path("xds-ca.crt");
    let public = Envoy::start_with_xds_tls(cp.xds, proxy_port, SHARED, &ca, "gatehouse").await;
    let internal = Envoy::start_with_xds_tls(cp.xds, free_port(), &token, &ca, "internal").await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    eventually(Duration::from_secs(10), "both fleets to serve", || async {
        probe(&http, &public.url("/")).await.0 == 200
            && probe(&http, &format!("http://127.0.0.1:{intranet_port}/"))
                .await
                .0
                == 200
    })
    .await;

    // The fleet token is no good for another fleet, an unknown one for none.
    assert_eq!(ads_as(&pki, cp.xds, &token, "internal").await, Ok(()));
    assert_eq!(
        ads_as(&pki, cp.xds, &token, "gatehouse").await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        ads_as(&pki, cp.xds, "ghn_0000", "internal").await,
        Err(tonic::Code::Unauthenticated)
    );

    // Our own services reach the TLS port too (--xds-url https://,
    // --xds-ca-file) and receive their configuration.
    let url = format!("--xds-url=https://localhost:{}", cp.xds.port());
    let ca_arg = format!("--xds-ca-file={}", ca.display());
    let token_arg = format!("--xds-token={SHARED}");
    let limiter = Sidecar::ratelimit(cp.xds, 0, &[&url, &ca_arg, &token_arg]).await;
    drop(limiter);

    // Revoked: the internal Envoy is disconnected and stays so; the public
    // one is untouched.
    assert_eq!(
        internal.stat("control_plane.connected_state").await,
        Some(1)
    );
    let revoked = cp.delete("/v1/xds-tokens/intranet").await;
    assert_eq!(revoked.status(), 204);
    eventually(
        Duration::from_secs(10),
        "the revoked node to be cut off",
        || async { internal.stat("control_plane.connected_state").await == Some(0) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        internal.stat("control_plane.connected_state").await,
        Some(0),
        "no way back in"
    );
    assert_eq!(public.stat("control_plane.connected_state").await, Some(1));
    assert_eq!(
        ads_as(&pki, cp.xds, &token, "internal").await,
        Err(tonic::Code::Unauthenticated)
    );
    // Envoy keeps serving what it has (its last configuration).
    assert_eq!(
        probe(&http, &format!("http://127.0.0.1:{intranet_port}/"))
            .await
            .0,
        200
    );

    // Bad input: 422 naming the field, 409 for a name in use, 404 to revoke twice.
    let unbound = cp.post("/v1/xds-tokens", json!({"name": "loose"})).await;
    assert_eq!(unbound.status(), 422);
    let problem: Value = unbound.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], json!("fleet"));
    let first = cp
        .post("/v1/xds-tokens", json!({"name": "dup", "node": "envoy-7"}))
        .await;
    assert_eq!(first.status(), 201);
    let again = cp
        .post(
            "/v1/xds-tokens",
            json!({"name": "dup", "fleet": "internal"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(cp.delete("/v1/xds-tokens/intranet").await.status(), 404);
}
