//! Parallel writers on a healthy store, as many CI pipelines push at once:
//! with Envoy checking every change, 200 concurrent writes of different
//! routes all succeed, each with its own version, on SQLite and Postgres.
//! (Before, writers waiting for their turn held pooled connections and most
//! failed as "store unreachable" or "database is locked".) Fifty
//! `gatehousectl apply` runs at once all land or are refused as conflicts.

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

/// 50 CI pipelines run `gatehousectl apply` at once, each with its own
/// document (a team's service and routes); ten of them apply only if the
/// configuration is still at the version their diff saw. Every plain apply
/// lands; of the conditional ones, those that lost the race are refused as
/// conflicts (exit 3, nothing applied); none meets a server error.
#[tokio::test]
async fn fifty_parallel_gatehousectl_applies() {
    let dir = gatehouse_e2e::scratch_dir("gatehouse_parallel_apply");
    let mut options = ControlPlaneOptions::new(free_port());
    options.validate_with_envoy = true;
    let cp = ControlPlane::start(options).await;
    let start = cp.version().await;
    let runs = (0..50).map(|team| {
        let yaml = format!(
            "services:\n  - name: svc-{team}\n    endpoints:\n      - host: 127.0.0.1\n        port: {}\n\
             routes:\n  - name: team-{team}-a\n    match:\n      path_prefix: /t{team}/a\n    destination:\n      service: svc-{team}\n\
             \x20 - name: team-{team}-b\n    match:\n      path_prefix: /t{team}/b\n    destination:\n      service: svc-{team}\n",
            10_000 + team
        );
        let path = dir.join(format!("team-{team}.yaml"));
        std::fs::write(&path, yaml).expect("document");
        let mut command = tokio::process::Command::new(gatehouse_e2e::gatehouse_bin("gatehousectl"));
        command
            .args(["apply", "-f"])
            .arg(&path)
            .env("GATEHOUSE_SERVER", format!("http://{}", cp.admin))
            .env("NO_COLOR", "1");
        let conditional = team % 5 == 0;
        if conditional {
            command.arg(format!("--if-version={start}"));
        }
        tokio::spawn(async move {
            let output = command.output().await.expect("gatehousectl runs");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (team, conditional, output.status.code(), stderr)
        })
    });
    let mut applied = Vec::new();
    let mut conflicts = 0;
    for run in runs.collect::<Vec<_>>() {
        let (team, conditional, code, stderr) = run.await.expect("run");
        match code {
            Some(0) => applied.push(team),
            Some(3) if conditional => {
                assert!(stderr.contains("version"), "a clean conflict: {stderr}");
                conflicts += 1;
            }
            _ => panic!("team {team}: exit {code:?}: {stderr}"),
        }
    }
    assert_eq!(applied.len() + conflicts, 50);
    assert!(applied.len() >= 40, "every plain apply lands");
    let config: serde_json::Value = http_client()
        .get(cp.url("/v1/config"))
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    let routes = config["routes"].as_array().expect("routes");
    assert_eq!(
        routes.len(),
        applied.len() * 2,
        "each applied document whole"
    );
    assert_eq!(cp.version().await, start + applied.len() as u64);
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}
