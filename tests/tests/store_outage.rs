//! A Postgres outage while the control plane runs (the database behind a
//! proxy the test cuts): once a request has met it, the control plane knows
//! its store is down and answers 503 with `Retry-After` at once instead of
//! waiting for a connection each time, and it notices the store's return.
//! A canary can still be started and aborted during the outage.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use gatehouse_e2e::{Stack, TcpProxy, eventually, postgres_database, reqwest::Url};
use serde_json::json;

fn endpoints() -> serde_json::Value {
    json!({"endpoints": [{"host": "127.0.0.1", "port": 9}]})
}

#[tokio::test]
async fn a_store_outage_is_answered_at_once_and_its_end_noticed() {
    let database = postgres_database().await;
    let url = Url::parse(&database).expect("database URL");
    let target: SocketAddr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    )
    .parse()
    .expect("Postgres address");
    let proxy = TcpProxy::start(target).await;
    let mut via_proxy = url.clone();
    via_proxy.set_port(Some(proxy.addr.port())).expect("port");
    let g = Stack::new()
        .configure(move |o| {
            o.database_url = Some(via_proxy.to_string());
            // Tokens checked without the store (else its outage fails them closed).
            o.admin_token = Some("bootstrap-secret-for-the-outage-test-0123456".into());
        })
        .start()
        .await;
    let created = g.cp.put("/v1/services/before", endpoints()).await;
    assert!(created.status().is_success(), "{}", created.status());

    proxy.cut();
    // The first requests meet the outage (and may wait for a connection).
    eventually(
        Duration::from_secs(20),
        "the outage to be noticed",
        || async { g.cp.get("/v1/services").await.status() == 503 },
    )
    .await;
    // From then on every call that needs the store answers at once. (The
    // bound only tells "knows" from "waits for the pool's 3 s timeout".)
    for path in ["/v1/services", "/v1/config", "/readyz"] {
        let started = Instant::now();
        let answer = g.cp.get(path).await;
        let took = started.elapsed();
        assert_eq!(answer.status(), 503, "{path}");
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
        if path.starts_with("/v1/") {
            assert!(answer.headers().contains_key("retry-after"), "{path}");
            let problem: serde_json::Value = answer.json().await.expect("problem");
            assert_eq!(problem["type"], "urn:gatehouse:problem:unavailable");
        }
    }
    let started = Instant::now();
    let refused = g.cp.put("/v1/services/during", endpoints()).await;
    assert_eq!(refused.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    // A canary needs no store: one can be started and aborted meanwhile
    // (with a bootstrap token; store-kept tokens cannot be checked now).
    let canary = json!({"selector": {"nodes": [g.envoy.node_id]}});
    assert_eq!(g.cp.post("/v1/rollout", canary).await.status(), 201);
    let aborted =
        g.cp.post("/v1/rollout/abort", json!({"reason": "store down"}))
            .await;
    assert_eq!(aborted.status(), 200);

    proxy.restore().await;
    eventually(
        Duration::from_secs(10),
        "writes to succeed again",
        || async {
            g.cp.put("/v1/services/after", endpoints())
                .await
                .status()
                .is_success()
        },
    )
    .await;
    assert_eq!(g.cp.get("/readyz").await.status(), 200);
    let during = g.cp.get("/v1/services/during").await;
    assert_eq!(during.status(), 404, "the refused write changed nothing");
}
