//! How long a change takes to reach each Envoy, and where the time goes
//! (issue 21): `/v1/status/nodes` shows each node's delay from the control
//! plane serving a version to the node's ACK of it, a histogram counts it,
//! and an admin write is traced through the store's group commit and the
//! admission check (with Envoy's validation) into a real OTLP receiver.

use std::time::Duration;

use gatehouse_e2e::{Stack, Upstream, otlp::OtlpReceiver};
use serde_json::json;

#[tokio::test]
async fn each_nodes_ack_delay_is_shown_and_an_admin_write_is_traced() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let g = Stack::new()
        .configure(move |o| {
            o.validate_with_envoy = true;
            o.args.extend(["--otlp-endpoint".into(), endpoint]);
        })
        .start()
        .await;
    let upstream = Upstream::start("web").await;
    g.cp.apply("/v1/services/web", upstream.service("web"))
        .await;
    let version =
        g.cp.apply(
            "/v1/routes/web",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "web"}}),
        )
        .await;
    g.cp.until_converged(version).await;

    let nodes = g.cp.nodes().await;
    let envoy = nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["types"].get("rds").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("an Envoy node: {nodes}"));
    let delay = envoy["types"]["rds"]["ack_delay_ms"].as_u64();
    assert!(
        delay.is_some_and(|ms| ms < 10_000),
        "the route change's delay to this node: {envoy}"
    );
    let metrics = g.cp.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("gatehouse_xds_ack_delay_seconds_count{type=\"rds\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The write's trace: the handler, the group commit it joined (linked,
    // run in its own task) and the admission check with Envoy's validation.
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            spans.iter().any(|s| s.name == "envoy.validate")
                && spans.iter().any(|s| s.name == "admin.replace")
        })
        .await;
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    };
    let admission = named("admission");
    let validate = spans
        .iter()
        .find(|s| s.name == "envoy.validate" && s.trace_id == admission.trace_id)
        .unwrap_or_else(|| panic!("envoy.validate under admission: {spans:#?}"));
    assert_eq!(validate.parent_span_id, admission.span_id);
    assert!(spans.iter().all(|s| s.service == "gatehouse-control-plane"));
    assert!(
        spans.iter().any(|s| s.name == "admin.replace"
            && s.attributes.get("kind").map(String::as_str) == Some("routes")
            && s.attributes.get("name").map(String::as_str) == Some("web")),
        "{spans:#?}"
    );
    assert!(
        spans.iter().any(|s| s.name == "store.group_commit"),
        "{spans:#?}"
    );
}
