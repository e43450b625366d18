//! Several instances sharing one Redis or Redis Cluster: exactly the limit,
//! requests that arrive together decided in one call, each on its own.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_e2e::redis::{RedisCluster, RedisServer};
use gatehouse_proto::ratelimit as rl;
use gatehouse_ratelimit_service::{
    counters::{Counters, redis::RedisStore},
    rules::Rules,
};

use crate::support::*;

/// Three instances, 200 concurrent clients, 1,400 requests: exactly the
/// limit is admitted. With leases too: never more (leased hits are counted
/// when handed out) and, while every instance keeps getting requests, not
/// less (the last hits of a window are not leased, and an instance holds at
/// most `--redis-lease-max`).
#[tokio::test]
async fn three_instances_sharing_redis_allow_exactly_the_limit() {
    let server = RedisServer::start().await;
    // 1000 a minute in a window; the token bucket gets 1000 a day, since
    // at 1000 a minute it legitimately refills ~17 tokens a second while the
    // test runs.
    for (algorithm, period, lease_max) in [
        (rl::Algorithm::FixedWindow, 60, 0),
        (rl::Algorithm::TokenBucket, 86_400, 0),
        (rl::Algorithm::FixedWindow, 60, 100),
        (rl::Algorithm::SlidingWindow, 60, 100),
        (rl::Algorithm::TokenBucket, 86_400, 100),
    ] {
        let rules = Arc::new(rules(vec![policy("shared", 1000, period, algorithm)]));
        // Not across a window boundary (Redis runs on this machine's clock).
        let into_window = gatehouse_ratelimit_service::counters::memory::now_ms() % (period * 1000);
        if into_window > period * 1000 - 3000 {
            tokio::time::sleep(Duration::from_millis(period * 1000 - into_window + 100)).await;
        }
        let consumer = format!("{algorithm:?}-{lease_max}");
        let mut stores: Vec<Arc<Counters>> = Vec::new();
        for _ in 0..3 {
            stores.push(Arc::new(
                leasing_redis_store(&server, 1000, lease_max).await,
            ));
        }
        let total = admitted_of_1400(&rules, &stores, &[("shared", &consumer)]).await;
        assert_eq!(
            total, 1000,
            "{algorithm:?}, leases of {lease_max}: 1,400 requests, limit 1000"
        );
    }
}

/// 200 concurrent clients spread over `stores` send 7 requests each with
/// `descriptors`: how many were admitted.
async fn admitted_of_1400(
    rules: &Arc<Rules>,
    stores: &[Arc<Counters>],
    descriptors: &[(&str, &str)],
) -> u32 {
    let descriptors: Arc<Vec<(String, String)>> = Arc::new(
        descriptors
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..200 {
        let (rules, store, descriptors) = (
            rules.clone(),
            stores[client % stores.len()].clone(),
            descriptors.clone(),
        );
        clients.spawn(async move {
            let descriptors: Vec<(&str, &str)> = descriptors
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut allowed = 0u32;
            for _ in 0..7 {
                if ok(&ask(&rules, &store, &descriptors).await) {
                    allowed += 1;
                }
            }
            allowed
        });
    }
    let mut total = 0;
    while let Some(allowed) = clients.join_next().await {
        total += allowed.expect("client");
    }
    total
}

/// Requests that arrive together go to Redis as one script call, and each
/// is still decided on its own: the refused ones spend nothing, the others
/// are all counted.
#[tokio::test]
async fn concurrent_requests_share_redis_calls_and_each_is_decided_on_its_own() {
    let server = RedisServer::start().await;
    let store = Arc::new(redis_store(&server, 1000).await);
    let rules = Arc::new(rules(vec![
        policy("wide", 10_000, 3600, rl::Algorithm::FixedWindow),
        policy("tight", 10, 3600, rl::Algorithm::FixedWindow),
    ]));
    let before = evalsha_calls(&server).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (rules, store) = (rules.clone(), store.clone());
        requests.spawn(async move {
            // Every other request also counts against the tight limit.
            let descriptors: &[(&str, &str)] = if i % 2 == 0 {
                &[("wide", "a"), ("tight", "a")]
            } else {
                &[("wide", "a")]
            };
            ok(&ask(&rules, &store, descriptors).await)
        });
    }
    let mut admitted = 0;
    while let Some(ok) = requests.join_next().await {
        admitted += u32::from(ok.expect("request"));
    }
    assert_eq!(admitted, 60, "50 wide-only and 10 of the 50 tight ones");
    let calls = evalsha_calls(&server).await - before;
    assert!(calls < 50, "100 requests in {calls} script calls");
    let wide = ask(&rules, &store, &[("wide", "a")]).await;
    assert_eq!(
        wide.statuses[0].limit_remaining,
        10_000 - 61,
        "only the admitted requests counted (and this one)"
    );
}

/// Three instances on one Redis Cluster, 200 concurrent clients, each request
/// counting on two slots: exactly the limit is admitted, and the counter on
/// the other slot ends at exactly the admitted requests (refused requests
/// gave their hits back). With leases, exactly the limit too, and once the
/// unspent leased hits went back, the other counter is exact as well.
#[tokio::test]
async fn three_instances_on_a_redis_cluster_allow_exactly_the_limit_across_slots() {
    let cluster = RedisCluster::start().await;
    let rules = Arc::new(rules(vec![
        policy("shared", 1000, 3600, rl::Algorithm::FixedWindow),
        policy("wide", 100_000, 3600, rl::Algorithm::FixedWindow),
    ]));
    let into_hour = gatehouse_ratelimit_service::counters::memory::now_ms() % 3_600_000;
    if into_hour > 3_600_000 - 10_000 {
        tokio::time::sleep(Duration::from_millis(3_600_000 - into_hour + 100)).await;
    }
    for lease_max in [0, 100] {
        let consumer = format!("c{lease_max}");
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(Arc::new(cluster_store(&cluster, 1000, lease_max).await));
        }
        let total = admitted_of_1400(
            &rules,
            &stores,
            &[("shared", &consumer), ("wide", &consumer)],
        )
        .await;
        assert_eq!(total, 1000, "lease {lease_max}: 1,400 requests, limit 1000");
        if lease_max > 0 {
            // Unspent leased hits go back once due.
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            for store in &stores {
                store.return_due_leases().await;
            }
        }
        let wide = ask(&rules, &stores[0], &[("wide", &consumer)]).await;
        assert_eq!(
            wide.statuses[0].limit_remaining,
            100_000 - 1001,
            "lease {lease_max}: the other slot counted only admitted requests (and this one)"
        );
    }
}

#[tokio::test]
async fn warm_up_loads_the_scripts_before_the_first_decision() {
    let server = RedisServer::start().await;
    let store = RedisStore::new(&server.url(), Duration::from_millis(5)).expect("client");
    store
        .warm_up(Duration::from_secs(5))
        .await
        .expect("Redis is up");
    let info = server.cli(&["INFO", "memory"]).await;
    assert!(
        info.contains("number_of_cached_scripts:2"),
        "both scripts cached: {info}"
    );

    // Redis down: warm-up gives up at its deadline; the service starts anyway.
    let gone = RedisStore::new(
        &format!("redis://127.0.0.1:{}", gatehouse_e2e::free_port()),
        Duration::from_millis(5),
    )
    .expect("client");
    let started = Instant::now();
    assert!(gone.warm_up(Duration::from_millis(300)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}
