//! A control plane never takes a fleet backwards by accident: started on
//! the wrong (empty) database against a serving Envoy, it holds the node on
//! the configuration it has, says so in `/v1/status/nodes` and a metric,
//! and no request fails; the hold ends when an operator confirms the store
//! (`gatehousectl confirm`) or when the store catches up.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, eventually, free_port,
    gatehouse_bin,
};
use serde_json::json;

/// A serving Envoy whose control plane is replaced by one on an empty
/// store, on the same xDS port: the second control plane and the Envoy.
async fn a_second_control_plane_on_an_empty_store(
    variant: XdsVariant,
) -> (ControlPlane, Envoy, Upstream) {
    let upstream = Upstream::start("web").await;
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.xds_port = free_port();
    let mut first = ControlPlane::start(options.clone()).await;
    let version = first.route_all_to(&upstream).await;
    let envoy = Envoy::start(first.xds, proxy_port, variant).await;
    first.until_converged(version).await;
    envoy.until_status("/", 200).await;
    first.kill().await;

    // The same flags, but a data directory of its own: an empty store.
    let second = ControlPlane::start(options).await;
    assert_eq!(second.version().await, 0);
    eventually(Duration::from_secs(30), "the node held", || async {
        second.nodes().await["held_nodes"] == json!(1)
    })
    .await;
    (second, envoy, upstream)
}

async fn no_request_fails_while_held(cp: &ControlPlane, envoy: &Envoy) {
    for _ in 0..40 {
        assert_eq!(envoy.send("/", &[]).await.status, 200, "served as before");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let nodes = cp.nodes().await;
    let node = &nodes["nodes"][0];
    assert_eq!(node["id"], json!(envoy.node_id));
    let why = node["held"].as_str().unwrap_or_default();
    assert!(why.contains("right database"), "{nodes}");
    let metrics = cp.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.contains("gatehouse_xds_nodes_held 1"),
        "a metric to alert on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_holds_a_serving_envoy_until_an_operator_confirms() {
    let (cp, envoy, _upstream) =
        a_second_control_plane_on_an_empty_store(XdsVariant::StateOfTheWorld).await;
    no_request_fails_while_held(&cp, &envoy).await;

    let shown = tokio::process::Command::new(gatehouse_bin("gatehousectl"))
        .arg("status")
        .env("GATEHOUSE_SERVER", format!("http://{}", cp.admin))
        .output()
        .await
        .expect("gatehousectl");
    assert!(String::from_utf8_lossy(&shown.stdout).contains("HELD"));
    let confirmed = tokio::process::Command::new(gatehouse_bin("gatehousectl"))
        .arg("confirm")
        .env("GATEHOUSE_SERVER", format!("http://{}", cp.admin))
        .output()
        .await
        .expect("gatehousectl");
    assert!(confirmed.status.success(), "{confirmed:?}");
    assert!(String::from_utf8_lossy(&confirmed.stdout).contains("1 held node"));
    // Confirmed: the node takes this store's (empty) configuration.
    eventually(
        Duration::from_secs(10),
        "the empty configuration served",
        || async { envoy.send("/", &[]).await.status != 200 },
    )
    .await;
    assert_eq!(cp.nodes().await["held_nodes"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delta_node_is_served_once_the_store_has_a_configuration() {
    let (cp, envoy, upstream) = a_second_control_plane_on_an_empty_store(XdsVariant::Delta).await;
    no_request_fails_while_held(&cp, &envoy).await;
    // The store catches up: the operator loads the configuration.
    let version = cp.route_all_to(&upstream).await;
    cp.until_converged(version).await;
    assert_eq!(cp.nodes().await["held_nodes"], json!(0));
    envoy.until_status("/", 200).await;
}
