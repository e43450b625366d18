//! Canary rollouts (issue 25's benchmark), with real Envoys:
//! - promotion: `envoys` nodes, one in the canary; the time from `POST
//!   /v1/rollout/promote` to every node acknowledging the canary's routes,
//!   beside the reference in the same run: the time from a plain write
//!   (no canary) to every node acknowledging it;
//! - detection: the time from the canary node acknowledging a route to an
//!   upstream that fails a fifth of its requests to the analysis aborting
//!   the canary, under steady load spread over three Envoys.
//!
//! Rounds alternate; medians and ranges are reported.

use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Behaviour, ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, free_port, reqwest,
};
use serde_json::{Value, json};

/// Polls `done` every 10 ms; how long it took to become true (at most 60 s).
async fn time_until(done: impl AsyncFn() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if done().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not done within 60 s");
}

/// Every connected node acknowledged `version` for its routes.
async fn all_acked(cp: &ControlPlane, version: u64) -> bool {
    let status = cp.nodes().await;
    let version = version.to_string();
    status["nodes"].as_array().is_some_and(|nodes| {
        nodes
            .iter()
            .all(|n| n["types"]["rds"]["acked_version"].as_str() == Some(version.as_str()))
    })
}

async fn node_acked(cp: &ControlPlane, node: &str, version: u64) -> bool {
    let status = cp.nodes().await;
    status["nodes"].as_array().is_some_and(|nodes| {
        nodes.iter().any(|n| {
            n["id"] == node
                && n["types"]["rds"]["acked_version"].as_str() == Some(&version.to_string())
        })
    })
}

fn route(prefix: &str, service: &str) -> Value {
    json!({"match": {"path_prefix": prefix}, "destination": {"service": service}})
}

fn summary(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median = times.get(times.len() / 2).map_or(0.0, ms);
    let (low, high) = (times.first().map_or(0.0, ms), times.last().map_or(0.0, ms));
    println!(
        "  {what}: median {median:.0} ms (range {low:.0}–{high:.0} ms, {} rounds)",
        times.len()
    );
}

pub async fn run(envoys: usize, rounds: usize) {
    let web = Upstream::start("web").await;
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions::new(proxy_port)).await;
    cp.apply("/v1/services/web", web.service("web")).await;
    let base = cp.apply("/v1/routes/r0", route("/r0", "web")).await;
    let mut fleet = Vec::new();
    for i in 0..envoys {
        let variant = if i % 2 == 0 {
            XdsVariant::StateOfTheWorld
        } else {
            XdsVariant::Delta
        };
        fleet.push(Envoy::start(cp.xds, proxy_port, variant).await);
    }
    cp.until_converged(base).await;
    let canary = fleet[0].node_id.clone();
    let (mut promotions, mut plain) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Reference: a plain write reaching every node.
        let version = cp
            .apply(
                &format!("/v1/routes/p{round}"),
                route(&format!("/p{round}"), "web"),
            )
            .await;
        plain.push(time_until(async || all_acked(&cp, version).await).await);
        // A canary: one node first, then promoted.
        let started = cp
            .post("/v1/rollout", json!({"selector": {"nodes": [canary]}}))
            .await;
        assert_eq!(started.status().as_u16(), 201, "canary started");
        let version = cp
            .apply(
                &format!("/v1/routes/c{round}"),
                route(&format!("/c{round}"), "web"),
            )
            .await;
        time_until(async || node_acked(&cp, &canary, version).await).await;
        let at = Instant::now();
        let promoted = cp.post("/v1/rollout/promote", json!({})).await;
        assert_eq!(promoted.status().as_u16(), 200, "promoted");
        time_until(async || all_acked(&cp, version).await).await;
        promotions.push(at.elapsed());
    }
    drop(fleet);
    println!("canary rollouts: {envoys} Envoys, one in the canary, polled every 10 ms");
    summary(
        "write → every node acknowledges (reference, no canary)",
        plain,
    );
    summary(
        "promote → every node acknowledges the canary's version",
        promotions,
    );
    detection(rounds).await;
}

/// The analysis' detection delay for a canary whose error rate jumps to 20 %.
async fn detection(rounds: usize) {
    let good = Upstream::start("good").await;
    let flaky = Upstream::start_with("flaky", Behaviour::failing(5, 500)).await;
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions::new(proxy_port)).await;
    cp.apply("/v1/services/good", good.service("good")).await;
    cp.apply("/v1/services/flaky", flaky.service("flaky")).await;
    let base = cp.apply("/v1/routes/api", route("/api", "good")).await;
    let fleet = [
        Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await,
        Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await,
        Envoy::start(cp.xds, proxy_port, XdsVariant::Delta).await,
    ];
    cp.until_converged(base).await;
    let canary = fleet[0].node_id.clone();
    let url = fleet[0].url("/api/x");
    // Steady load on new connections, spread by the kernel over the three.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let _ = client.get(&url).send().await;
            }
        }
    });
    let mut delays = Vec::new();
    for _ in 0..rounds {
        let started = cp
            .post(
                "/v1/rollout",
                json!({"selector": {"nodes": [canary]}, "analysis": {"window_ms": 10000}}),
            )
            .await;
        assert_eq!(started.status().as_u16(), 201, "canary started");
        let switched = cp.apply("/v1/routes/api", route("/api", "flaky")).await;
        time_until(async || node_acked(&cp, &canary, switched).await).await;
        delays.push(time_until(async || cp.nodes().await["canary"]["phase"] == "aborted").await);
        // Back to the good upstream, refusals released, for the next round.
        let back = cp.apply("/v1/routes/api", route("/api", "good")).await;
        let released = cp
            .post("/v1/status/release", json!({"reason": "bench"}))
            .await;
        assert_eq!(released.status().as_u16(), 200, "released");
        time_until(async || all_acked(&cp, back).await).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;
    println!(
        "canary analysis: 3 Envoys, ~100 requests/s on new connections, canary upstream failing 20 %, stats flushed every 1 s"
    );
    summary(
        "canary node acknowledges the failing route → canary aborted",
        delays,
    );
}
