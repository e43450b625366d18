//! API versions through a real Envoy (issue 24): a deprecated version's
//! responses carry `Deprecation`, `Sunset` and a `Link` to its successor;
//! at its sunset the gateway answers 410 naming the successor, decided in
//! Envoy at the second with no configuration change; versions by path and
//! by header; who still calls the old version shows in the usage rows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_e2e::{Stack, eventually};
use serde_json::{Value, json};

fn rfc3339(unix_s: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s as i64)
        .expect("a time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_versions_announce_their_successor_and_are_gone_at_sunset() {
    let g = Stack::new()
        .ext_authz(&[])
        .orders()
        .configure(|o| o.validate_with_envoy = true)
        .start()
        .await;
    let key = g.cp.consumer_key("alice").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let soon = now + 4;
    let document = json!({
        "routes": [
            {"name": "orders-v1", "match": {"path_prefix": "/v1/orders"},
             "destination": {"service": "orders"}, "auth": {"method": "api_key"},
             "version": {"api": "orders", "name": "v1", "deprecated_at": "2026-01-01",
                         "sunset_at": rfc3339(soon), "successor": "/v2/orders"}},
            {"name": "orders-v2", "match": {"path_prefix": "/v2/orders"},
             "destination": {"service": "orders"}, "version": {"api": "orders", "name": "v2"}},
            {"name": "orders-v0", "match": {"path_prefix": "/v0/orders"},
             "destination": {"service": "orders"}, "auth": {"method": "api_key"},
             "version": {"api": "orders", "name": "v0", "sunset_at": "2025-01-01",
                         "successor": "https://api.example.com/v2/orders"}},
            {"name": "orders-h1", "match": {"path_prefix": "/orders",
              "headers": [{"name": "api-version", "exact": "1"}]},
             "destination": {"service": "orders"},
             "version": {"api": "orders", "name": "h1", "deprecated_at": "2026-02-01T12:00:00Z"}},
            {"name": "orders-h2", "match": {"path_prefix": "/orders"},
             "destination": {"service": "orders"}, "version": {"api": "orders", "name": "h2"}}
        ]
    });
    let applied = g.cp.put("/v1/config?prune=false", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let version = g.cp.version().await;
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;

    // Deprecated, not yet sunset: answered, with the three headers.
    let v1 = g.envoy.send("/v1/orders", &[("x-api-key", &key)]).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.header("deprecation"), Some("@1767225600"));
    let sunset = v1.header("sunset").expect("sunset").to_owned();
    assert!(sunset.ends_with(" GMT") && sunset.len() == 29, "{sunset}");
    assert_eq!(
        v1.header("link"),
        Some("</v2/orders>; rel=\"successor-version\"")
    );
    // The successor is current: no headers.
    let v2 = g.envoy.send("/v2/orders", &[]).await;
    assert_eq!(v2.status, 200);
    assert_eq!(v2.header("deprecation"), None);
    assert_eq!(v2.header("sunset"), None);
    // By header: version 1 is deprecated, the default is not.
    let h1 = g.envoy.send("/orders", &[("api-version", "1")]).await;
    assert_eq!(h1.header("deprecation"), Some("@1769947200"));
    let h2 = g.envoy.send("/orders", &[]).await;
    assert_eq!((h2.status, h2.header("deprecation")), (200, None));

    // Past its sunset: 410 naming the successor, before any credential is
    // asked for, and the upstream is not called.
    let hits = g.orders.as_ref().expect("orders").hit_count();
    let v0 = g.envoy.send("/v0/orders", &[]).await;
    assert_eq!(v0.status, 410);
    assert_eq!(v0.body["error"], json!("gone"));
    assert_eq!(
        v0.body["successor"],
        json!("https://api.example.com/v2/orders")
    );
    assert_eq!(v0.body["sunset"], json!("Wed, 01 Jan 2025 00:00:00 GMT"));
    assert_eq!(g.orders.as_ref().expect("orders").hit_count(), hits);

    // v1's sunset arrives: 410 at once, with no configuration change.
    eventually(
        Duration::from_secs(10),
        "v1 to reach its sunset",
        || async {
            g.envoy
                .send("/v1/orders", &[("x-api-key", &key)])
                .await
                .status
                == 410
        },
    )
    .await;
    let gone = g.envoy.send("/v1/orders", &[]).await;
    assert_eq!(
        (gone.status, &gone.body["successor"]),
        (410, &json!("/v2/orders"))
    );
    assert_eq!(g.cp.version().await, version, "the sunset needed no change");
    assert!(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            >= soon
    );

    // Who still called v1: the usage rows by route and consumer.
    eventually(
        Duration::from_secs(15),
        "v1's usage to reach the store",
        || async {
            let body: Value =
                g.cp.get("/v1/usage?by=total&route=orders-v1")
                    .await
                    .json()
                    .await
                    .expect("json");
            body["rows"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["consumer"] == json!("alice") && r["requests"].as_i64() >= Some(1))
            })
        },
    )
    .await;

    // Bad input: 422 naming the field, nothing stored.
    let bad =
        g.cp.put(
            "/v1/routes/orders-v3",
            json!({"match": {"path_prefix": "/v3/orders"}, "destination": {"service": "orders"},
                   "version": {"api": "orders", "name": "v3", "deprecated_at": "2027-06-01",
                               "sunset_at": "2027-01-01"}}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let problem: Value = bad.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], json!("version.sunset_at"));
    assert_eq!(g.cp.version().await, version, "nothing stored");
}
