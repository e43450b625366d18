//! One quota policy across a fleet (issue 22): three gateways, each its own
//! control plane, Envoy and ratelimit-service, the three services sharing
//! one Redis Cluster. Open-loop load at uneven rates (60/30/10 % of twice
//! the limit): a joining Envoy gets a share within two reporting
//! intervals; the fleet then admits the limit within ±5 % and no Envoy
//! with demand starves; a leaving Envoy's share goes back to the others
//! within an assignment's lifetime.

use std::time::Duration;

use gatehouse_e2e::{
    Stack, eventually,
    flood::{Paced, PacedCounts},
    redis::RedisCluster,
};
use serde_json::json;

/// The fleet's limit: 3,000 a minute.
const LIMIT_PER_S: u64 = 50;
/// Each Envoy's demand, requests a second: 60/30/10 % of twice the limit.
const DEMAND: [u32; 3] = [60, 30, 10];
/// Envoy 1.40 reports usage every 5 s.
const REPORT: Duration = Duration::from_secs(5);
/// How long an assignment lives without a newer one (3 reports).
const ASSIGNMENT_TTL: Duration = Duration::from_secs(15);

fn assignments(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_ratelimit_quota_assignments_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn window(loads: &[&Paced], length: Duration) -> Vec<PacedCounts> {
    let before: Vec<PacedCounts> = loads.iter().map(|l| l.counts()).collect();
    tokio::time::sleep(length).await;
    loads
        .iter()
        .zip(before)
        .map(|(l, b)| l.counts() - b)
        .collect()
}

#[tokio::test]
async fn a_fleet_shares_one_quota_by_demand_as_envoys_join_and_leave() {
    let redis = RedisCluster::start().await;
    let args = [
        format!("--redis-url={}", redis.urls()),
        "--redis-cluster".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let policy = json!({"limit": {"requests": LIMIT_PER_S * 60, "per": "minute"},
                        "enforcement": "quota", "routes": ["orders"]});
    let (a, b, c) = tokio::join!(
        Stack::orders_under_policy(&args, policy.clone()),
        Stack::orders_under_policy(&args, policy.clone()),
        Stack::orders_under_policy(&args, policy),
    );
    let mut gateways = [a, b, c];
    let url = |i: usize| gateways[i].envoy.url("/orders");

    // Two Envoys share the limit for two reporting intervals.
    let first = Paced::start(url(0), DEMAND[0]);
    let second = Paced::start(url(1), DEMAND[1]);
    tokio::time::sleep(REPORT * 2).await;

    // The third joins: within two reporting intervals it holds an
    // assignment and enforces it (some of its requests are refused).
    let third = Paced::start(url(2), DEMAND[2]);
    let joining = gateways[2].limiter();
    eventually(
        REPORT * 2,
        "an assignment for the joining Envoy",
        || async { assignments(&joining.metrics().await) > 0 },
    )
    .await;

    // Two more intervals for the split to settle, then a measured window.
    tokio::time::sleep(REPORT * 2).await;
    let measured = Duration::from_secs(20);
    let counts = window(&[&first, &second, &third], measured).await;
    let admitted: u64 = counts.iter().map(|c| c.ok).sum();
    let expected = LIMIT_PER_S * measured.as_secs();
    eprintln!("admitted {admitted} against {expected}: {counts:?}");
    assert!(
        admitted.abs_diff(expected) * 20 <= expected,
        "the fleet admitted {admitted} against {expected} (±5 %): {counts:?}"
    );
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(c.other, 0, "Envoy {i} answered only 200 or 429: {counts:?}");
        assert!(c.limited > 0, "Envoy {i} enforced its share: {counts:?}");
        // Its fair share is at least half its demand's proportion of the
        // limit; starving would be far below.
        let proportional = expected * u64::from(DEMAND[i]) / 100;
        assert!(
            c.ok * 2 >= proportional,
            "Envoy {i} got its share: {counts:?}"
        );
    }

    // The first (the biggest) leaves: within an assignment's lifetime the
    // other two share the whole limit. Their demand (40 a second) is below
    // it, so they then admit almost all of it.
    gateways[0].envoy.kill().await;
    first.stop().await;
    tokio::time::sleep(ASSIGNMENT_TTL).await;
    let counts = window(&[&second, &third], Duration::from_secs(10)).await;
    let (ok, limited): (u64, u64) = counts
        .iter()
        .fold((0, 0), |(o, l), c| (o + c.ok, l + c.limited));
    eprintln!("after the first left: {counts:?}");
    assert!(
        limited * 20 <= ok + limited,
        "at most 5 % refused once the leaving Envoy's share went back: {counts:?}"
    );
}
