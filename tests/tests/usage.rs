//! Usage per route and consumer (issue 21): Envoy streams its usage log to
//! ext-authz, which counts requests, refusals and bytes per route and
//! consumer as metrics (a bounded number of consumer labels) and reports
//! them to the control plane, whose hourly rows `GET /v1/usage` reads.

use std::time::Duration;

use gatehouse_e2e::{Stack, eventually, gatehouse_bin};
use serde_json::{Value, json};

fn row<'a>(rows: &'a [Value], route: &str, consumer: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["route"] == json!(route) && r["consumer"] == json!(consumer))
}

#[tokio::test]
async fn requests_refusals_and_bytes_are_counted_per_route_and_consumer() {
    let g = Stack::new()
        .ext_authz(&[("GATEHOUSE_USAGE_METRIC_CONSUMERS", "1")])
        .ratelimit(&[])
        .orders()
        .start()
        .await;
    let alice = g.cp.consumer_key("alice").await;
    let alice = alice.as_str();
    let bob = g.cp.consumer_key("bob").await;
    let bob = bob.as_str();
    g.cp.apply(
        "/v1/routes/admin",
        json!({"match": {"path_prefix": "/admin"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key", "roles": ["admin"]}}),
    )
    .await;
    g.cp.api_key_route("orders", "/orders", "orders").await;
    g.cp.per_consumer_limit(2, "orders").await;

    let sent = [
        ("/orders/1", vec![("x-api-key", alice)], 200),
        ("/orders/2", vec![("x-api-key", alice)], 200),
        ("/orders/3", vec![("x-api-key", alice)], 429),
        ("/orders/4", vec![("x-api-key", bob)], 200),
        ("/orders/5", vec![], 401),
        // A client naming someone else is still nobody.
        ("/orders/6", vec![("x-gatehouse-consumer", "bob")], 401),
        ("/admin", vec![("x-api-key", alice)], 403),
    ];
    for (path, headers, status) in &sent {
        assert_eq!(g.envoy.send(path, headers).await.status, *status, "{path}");
    }
    // Not usage: no route matched.
    assert_eq!(g.envoy.send("/nowhere", &[]).await.status, 404);

    let totals = || async {
        let body: Value =
            g.cp.get("/v1/usage?by=total")
                .await
                .json()
                .await
                .expect("json");
        body["rows"].as_array().cloned().unwrap_or_default()
    };
    // Envoy flushes its usage log every second; ext-authz reports every 200 ms.
    eventually(
        Duration::from_secs(15),
        "usage reaches the store",
        || async {
            let rows = totals().await;
            let requests = |r: Option<&Value>| r.and_then(|r| r["requests"].as_i64()).unwrap_or(0);
            requests(row(&rows, "orders", "alice")) == 3
                && requests(row(&rows, "orders", "")) == 2
                && requests(row(&rows, "admin", "alice")) == 1
        },
    )
    .await;
    let rows = totals().await;
    assert_eq!(rows.len(), 4, "one row per route and consumer: {rows:#?}");
    let alice_orders = row(&rows, "orders", "alice").expect("alice on orders");
    assert_eq!(alice_orders["rate_limited"], 1);
    assert!(alice_orders["bytes_out"].as_i64() > Some(0));
    assert!(alice_orders["bytes_in"].as_i64() > Some(0));
    let bob_orders = row(&rows, "orders", "bob").expect("bob on orders");
    assert_eq!(
        bob_orders["requests"], 1,
        "the spoofed header counted for bob"
    );
    let anonymous = row(&rows, "orders", "").expect("requests without a consumer");
    assert_eq!(anonymous["unauthorized"], 2);
    assert_eq!(
        row(&rows, "admin", "alice").expect("alice's refusal")["forbidden"],
        1
    );

    let hourly: Value =
        g.cp.get("/v1/usage?consumer=alice&route=orders")
            .await
            .json()
            .await
            .expect("json");
    let hours = hourly["rows"].as_array().expect("rows");
    assert!(
        hours
            .iter()
            .all(|r| r["hour_ms"].as_i64().is_some_and(|h| h % 3_600_000 == 0))
    );
    assert_eq!(
        hours
            .iter()
            .filter_map(|r| r["requests"].as_i64())
            .sum::<i64>(),
        3
    );

    // gatehousectl: the same rows as a table, and a bad span refused.
    let ctl = |args: &'static [&'static str]| {
        tokio::process::Command::new(gatehouse_bin("gatehousectl"))
            .args(args)
            .env("GATEHOUSE_SERVER", format!("http://{}", g.cp.admin))
            .env("NO_COLOR", "1")
            .output()
    };
    let table = ctl(&["usage", "--consumer", "alice", "--since", "2h"])
        .await
        .expect("gatehousectl runs");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let alice_line = table
        .lines()
        .find(|l| l.starts_with("orders"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = alice_line.split_whitespace().collect();
    assert_eq!(&cells[..3], ["orders", "alice", "3"], "{table}");
    let bad = ctl(&["usage", "--since", "yesterday"]).await.expect("runs");
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));

    // One consumer gets a label of its own; the next counts as "other".
    let metrics = g.ext_authz().metrics().await;
    let has = |needle: &str| metrics.lines().any(|l| l.starts_with(needle));
    assert!(
        has(
            r#"gatehouse_ext_authz_usage_requests_total{route="orders",consumer="alice",outcome="rate_limited"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        has(
            r#"gatehouse_ext_authz_usage_requests_total{route="orders",consumer="other",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        has(
            r#"gatehouse_ext_authz_usage_requests_total{route="orders",consumer="anonymous",outcome="unauthorized"} 2"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("consumer=\"bob\""), "{metrics}");
}

#[tokio::test]
async fn a_bad_usage_query_is_refused_naming_the_field() {
    let g = Stack::new().start().await;
    for (query, field) in [
        ("since=10&until=5", "since"),
        ("limit=0", "limit"),
        ("by=minute", "query"),
        ("colour=blue", "query"),
    ] {
        let answer = g.cp.get(&format!("/v1/usage?{query}")).await;
        assert_eq!(answer.status(), 422, "{query}");
        let problem: Value = answer.json().await.expect("problem");
        assert_eq!(
            problem["errors"][0]["field"],
            json!(field),
            "{query}: {problem}"
        );
    }
}
