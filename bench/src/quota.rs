//! How close a quota policy's fleet stays to its limit (issue 22): three
//! gateways, each its own control plane, Envoy and ratelimit-service, the
//! three services sharing one Redis, one quota policy of 6,000 a minute;
//! closed-loop `wrk` with 6, 3 and 1 connections (uneven demand) for a
//! warm-up, then a measured minute. Reports what each Envoy and the fleet
//! admitted against the limit.

use std::time::Duration;

use gatehouse_e2e::{Stack, redis::RedisServer};
use serde_json::json;

/// `wrk` for `seconds`: (requests, non-2xx answers).
async fn wrk_counts(url: String, connections: u32, seconds: u64) -> (u64, u64) {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            &url,
        ])
        .output()
        .await
        .expect("wrk (apt install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let requests = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in")
                .map(|(n, _)| n.trim().to_owned())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let refused = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Non-2xx or 3xx responses:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (requests, refused)
}

pub async fn run(warm_up: u64, seconds: u64) {
    const LIMIT_PER_MINUTE: u64 = 6_000;
    let redis = RedisServer::start().await;
    let url = format!("--redis-url={}", redis.url());
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let policy = json!({"limit": {"requests": LIMIT_PER_MINUTE, "per": "minute"},
                            "enforcement": "quota", "routes": ["orders"]});
        gateways.push(Stack::orders_under_policy(&[&url], policy).await);
    }
    let connections = [6u32, 3, 1];
    let urls: Vec<String> = gateways.iter().map(|g| g.envoy.url("/orders")).collect();
    let load = |seconds: u64| {
        let urls = urls.clone();
        async move {
            tokio::join!(
                wrk_counts(urls[0].clone(), connections[0], seconds),
                wrk_counts(urls[1].clone(), connections[1], seconds),
                wrk_counts(urls[2].clone(), connections[2], seconds),
            )
        }
    };
    load(warm_up).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (a, b, c) = load(seconds).await;
    let expected = LIMIT_PER_MINUTE as f64 * seconds as f64 / 60.0;
    println!(
        "quota accuracy: 3 Envoys, one quota policy of {LIMIT_PER_MINUTE}/minute shared through Redis, \
         wrk -c6/-c3/-c1, {warm_up} s warm-up, {seconds} s measured:"
    );
    let mut admitted = 0;
    for (i, (requests, refused)) in [a, b, c].into_iter().enumerate() {
        let ok = requests.saturating_sub(refused);
        admitted += ok;
        println!(
            "  Envoy {} ({} connections): {requests} requests, {ok} admitted ({:.0} % of its demand)",
            i + 1,
            connections[i],
            100.0 * ok as f64 / requests.max(1) as f64
        );
    }
    println!(
        "  fleet: {admitted} admitted against {expected:.0} ({:.1} % of the limit)",
        100.0 * admitted as f64 / expected
    );
}
