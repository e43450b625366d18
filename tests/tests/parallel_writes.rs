//! Parallel writers on a healthy store, as many CI pipelines push at once:
//! with Envoy checking every change, 200 concurrent writes of different
//! routes all succeed, each with its own version, on SQLite and Postgres.
//! (Before, writers waiting for their turn held pooled connections and most
//! failed as "store unreachable" or "database is locked".)

use std::{collections::BTreeSet, time::Duration};

use gatehouse_e2e::{ControlPlane, ControlPlaneOptions, free_port, postgres_database, reqwest};
use serde_json::json;

const WRITERS: usize = 200;

async fn two_hundred_parallel_writes(database_url: Option<String>) {
    let mut options = ControlPlaneOptions::new(free_port());
    options.database_url = database_url;
    options.validate_with_envoy = true;
    let cp = ControlPlane::start(options).await;
    cp.apply(
        "/v1/services/web",
        json!({"endpoints": [{"host": "127.0.0.1", "port": 9}]}),
    )
    .await;
    // Writes take turns, each with an Envoy check: the last may wait long.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let writes = (0..WRITERS).map(|i| {
        let (http, url) = (http.clone(), cp.url(&format!("/v1/routes/c{i}")));
        tokio::spawn(async move {
            let response = http
                .put(url)
                .json(&json!({
                    "match": {"path_exact": format!("/c{i}")},
                    "destination": {"service": "web"}
                }))
                .send()
                .await
                .expect("answered");
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get("x-gatehouse-config-version")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let body = response.text().await.unwrap_or_default();
            (status, version, body)
        })
    });
    let mut versions = BTreeSet::new();
    let mut failures = Vec::new();
    for write in writes.collect::<Vec<_>>() {
        let (status, version, body) = write.await.expect("writer");
        if status == 201 {
            versions.extend(version);
        } else {
            failures.push(format!("{status}: {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(versions.len(), WRITERS, "every write has its own version");
    let last = cp.version().await;
    assert_eq!(
        versions.last().copied(),
        Some(last),
        "no gaps: the last is current"
    );
    assert_eq!(
        versions.first().copied(),
        Some(last + 1 - WRITERS as u64),
        "no gaps"
    );
}

#[tokio::test]
async fn two_hundred_parallel_writers_on_sqlite_all_succeed() {
    two_hundred_parallel_writes(None).await;
}

#[tokio::test]
async fn two_hundred_parallel_writers_on_postgres_all_succeed() {
    two_hundred_parallel_writes(Some(postgres_database().await)).await;
}
