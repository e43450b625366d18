//! Several fleets from one control plane (issue 24): gateways belong to a
//! fleet (the Envoys' node `cluster`), routes attach to gateways, and an
//! Envoy gets only its own fleet's listeners and routes; the default
//! listener goes to the fleets `--proxy-fleets` names. Nodes are grouped by
//! fleet in the status.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, eventually, free_port, probe,
};
use serde_json::{Value, json};

async fn status(port: u16, path: &str) -> u16 {
    let client = gatehouse_e2e::client();
    probe(&client, &format!("http://127.0.0.1:{port}{path}"))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fleet_gets_only_its_listeners_and_routes() {
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        validate_with_envoy: true,
        args: vec!["--proxy-fleets=gatehouse".into()],
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let public = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let internal_proxy = free_port();
    let internal = Envoy::start_in_fleet(cp.xds, internal_proxy, "internal").await;
    let web = Upstream::start("web").await;
    let (edge_port, internal_port) = (free_port(), free_port());
    let document = json!({
        "services": [web.service("web")],
        "gateways": [
            {"name": "edge", "fleet": "gatehouse", "address": "127.0.0.1", "port": edge_port},
            {"name": "intranet", "fleet": "internal", "address": "127.0.0.1", "port": internal_port}
        ],
        "routes": [
            {"name": "everywhere", "match": {"path_prefix": "/everywhere"},
             "destination": {"service": "web"}},
            {"name": "partners", "match": {"path_prefix": "/partners"},
             "destination": {"service": "web"}, "gateways": ["edge"]},
            {"name": "backoffice", "match": {"path_prefix": "/backoffice"},
             "destination": {"service": "web"}, "gateways": ["intranet"]}
        ]
    });
    let applied = cp.put("/v1/config", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let version = cp.version().await;
    cp.until_converged(version).await;
    cp.assert_no_nacks().await;

    // The public fleet: the default listener and its gateway.
    eventually(Duration::from_secs(10), "the edge gateway", || async {
        status(edge_port, "/partners").await == 200
    })
    .await;
    assert_eq!(status(proxy_port, "/everywhere").await, 200);
    assert_eq!(
        status(proxy_port, "/partners").await,
        404,
        "attached to edge only"
    );
    assert_eq!(status(edge_port, "/everywhere").await, 200);
    assert_eq!(status(edge_port, "/backoffice").await, 404);
    // The internal fleet: its gateway only.
    eventually(Duration::from_secs(10), "the intranet gateway", || async {
        status(internal_port, "/backoffice").await == 200
    })
    .await;
    assert_eq!(status(internal_port, "/everywhere").await, 200);
    assert_eq!(status(internal_port, "/partners").await, 404);
    assert_eq!(
        status(internal_proxy, "/everywhere").await,
        0,
        "no default listener"
    );
    let held = internal.dynamic_config().await.join("\n");
    assert!(held.contains("listener gateway_intranet"), "{held}");
    assert!(
        !held.contains("gatehouse_http") && !held.contains("gateway_edge"),
        "{held}"
    );
    assert!(!held.contains("routes_edge"), "{held}");
    let dump = internal.config_dump().await.to_string();
    assert!(
        !dump.contains("/partners"),
        "another fleet's route reached the internal fleet"
    );
    let dump = public.config_dump().await.to_string();
    assert!(
        !dump.contains("/backoffice"),
        "another fleet's route reached the public fleet"
    );

    // The status groups nodes by fleet.
    let nodes = cp.nodes().await;
    assert_eq!(
        nodes["fleets"]["internal"],
        json!([internal.node_id]),
        "{nodes}"
    );
    assert_eq!(
        nodes["fleets"]["gatehouse"],
        json!([public.node_id]),
        "{nodes}"
    );

    // Bad input: 422 naming the field, nothing stored.
    let before = cp.version().await;
    let unknown = cp
        .put(
            "/v1/routes/stray",
            json!({"match": {"path_prefix": "/stray"}, "destination": {"service": "web"},
                   "gateways": ["nowhere"]}),
        )
        .await;
    assert_eq!(unknown.status(), 422);
    let problem: Value = unknown.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], json!("gateways[0]"));
    let bad_fleet = cp
        .put(
            "/v1/gateways/odd",
            json!({"fleet": "no spaces", "address": "127.0.0.1", "port": free_port()}),
        )
        .await;
    assert_eq!(bad_fleet.status(), 422);
    let problem: Value = bad_fleet.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], json!("fleet"));
    assert_eq!(cp.version().await, before, "nothing stored");
}
