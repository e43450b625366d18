//! The shipped Prometheus rules and Grafana dashboard against a real
//! Prometheus scraping a real stack (issue 21): every recording rule and
//! every dashboard query returns data, everything the alerts read exists,
//! and nothing fires on a healthy stack. (The alerts' logic is unit-tested
//! by `promtool test rules`, in `promtool.rs`.)

use std::time::Duration;

use gatehouse_e2e::{
    Stack, eventually,
    prometheus::{Prometheus, Target},
    workspace_root,
};
use serde_json::{Value, json};

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(workspace_root().join(path)).expect(path);
    serde_saphyr::from_str(&text).expect("YAML")
}

/// Every recording rule's name, and every query of the dashboard.
fn shipped_queries() -> Vec<String> {
    let rules = yaml("deploy/prometheus/gatehouse.rules.yml");
    let mut queries: Vec<String> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("deploy/grafana/dashboards/gatehouse-overview.json"),
        )
        .expect("dashboard"),
    )
    .expect("JSON");
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(expr.to_owned());
            }
        }
    }
    queries
}

#[tokio::test]
async fn every_rule_and_dashboard_query_returns_data_from_a_running_stack() {
    let g = Stack::new()
        .ext_authz(&[])
        .ratelimit(&[])
        .orders()
        .start()
        .await;
    let orders = g.orders.as_ref().expect("orders").addr;
    // An issuer whose JWKS cannot be read: the fetch series exist.
    g.cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": "https://idp.test/", "jwks_uri": format!("http://{orders}/jwks.json"),
               "algorithms": ["RS256"], "audiences": ["orders-api"]}),
    )
    .await;
    let key = g.limited_orders(3).await;
    let broker = gatehouse_e2e::Sidecar::broker(g.cp.xds, &[]).await;

    let limiter = g.limiter().addr;
    let prometheus = Prometheus::start(&[
        Target {
            job: "gatehouse-envoy",
            address: g.envoy.admin.to_string(),
            path: "/stats/prometheus",
        },
        Target {
            job: "gatehouse-control-plane",
            address: g.cp.admin.to_string(),
            path: "/metrics",
        },
        Target {
            job: "gatehouse-ext-authz",
            address: g.ext_authz().addr.to_string(),
            path: "/metrics",
        },
        Target {
            job: "gatehouse-ratelimit",
            address: limiter.to_string(),
            path: "/metrics",
        },
        Target {
            job: "gatehouse-broker",
            address: broker.addr.to_string(),
            path: "/metrics",
        },
    ])
    .await;
    // Traffic across scrapes: allowed, refused (401) and limited (429).
    let traffic = async {
        for _ in 0..8 {
            g.envoy.send("/orders/1", &[("x-api-key", &key)]).await;
            g.envoy.send("/orders/2", &[]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    traffic.await;
    for query in shipped_queries() {
        eventually(
            Duration::from_secs(30),
            &format!("data for {query}"),
            || async {
                prometheus
                    .query(&query)
                    .await
                    .is_some_and(|result| !result.is_empty())
            },
        )
        .await;
    }
    // What the alerts read beyond the recording rules.
    for query in [
        "envoy_control_plane_connected_state",
        "gatehouse_xds_nodes_held",
        "up{job=\"gatehouse-control-plane\"}",
        "up{job=\"gatehouse-ext-authz\"}",
        "up{job=\"gatehouse-ratelimit\"}",
        "up{job=\"gatehouse-broker\"}",
        "gatehouse_broker_disconnects_total",
        "gatehouse:ratelimit_decisions:rate5m{result=\"over_limit\"}",
        "gatehouse:auth_decisions:rate5m{result=\"deny\"}",
    ] {
        let result = prometheus.query(query).await.unwrap_or_default();
        assert!(!result.is_empty(), "no data for {query}");
    }
    let firing = prometheus.query("ALERTS").await.unwrap_or_default();
    assert!(firing.is_empty(), "alerts on a healthy stack: {firing:?}");
}
