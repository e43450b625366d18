//! Counter stores against the real decision code: every storage test runs on
//! the in-memory store and on a private Redis (`redis-server` on an
//! ephemeral port), then Redis faults: several instances sharing one Redis,
//! a flushed script cache, TTLs, Redis killed and hanging.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_e2e::redis::{RedisCluster, RedisServer};
use gatehouse_proto::{
    ratelimit as rl,
    ratelimit_common::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    ratelimit_service::{RateLimitRequest, RateLimitResponse, rate_limit_response::Code},
};
use gatehouse_ratelimit_service::{
    counters::{Counters, memory::MemoryStore, redis::RedisStore},
    metrics::Metrics,
    rules::Rules,
    server::decide,
};

fn policy(name: &str, requests: u64, period_seconds: u64, algorithm: rl::Algorithm) -> rl::Policy {
    rl::Policy {
        name: name.into(),
        limit: Some(rl::Limit {
            requests,
            period_seconds,
        }),
        algorithm: algorithm as i32,
        burst: requests,
        shadow: false,
        fail_open: true,
    }
}

fn rules(policies: Vec<rl::Policy>) -> Rules {
    Rules::build(
        "1",
        rl::RateLimitConfig {
            policies,
            ..Default::default()
        },
    )
    .expect("rules")
}

fn request(descriptors: &[(&str, &str)]) -> RateLimitRequest {
    RateLimitRequest {
        domain: rl::DOMAIN.into(),
        descriptors: descriptors
            .iter()
            .map(|(policy, consumer)| RateLimitDescriptor {
                entries: vec![
                    Entry {
                        key: "policy".into(),
                        value: (*policy).into(),
                    },
                    Entry {
                        key: "consumer".into(),
                        value: (*consumer).into(),
                    },
                ],
                ..Default::default()
            })
            .collect(),
        hits_addend: 0,
    }
}

async fn ask(rules: &Rules, store: &Counters, descriptors: &[(&str, &str)]) -> RateLimitResponse {
    decide(rules, store, &request(descriptors), &Metrics::default())
        .await
        .expect("decision")
}

/// [`ask`], then waits for the lease renewals it sent (in the background)
/// to be answered, so that what the next request finds is deterministic.
async fn ask_settled(
    rules: &Rules,
    store: &Counters,
    descriptors: &[(&str, &str)],
) -> RateLimitResponse {
    let answer = ask(rules, store, descriptors).await;
    let counters = store.redis_counters().expect("Redis");
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.renewals_in_flight.get() > 0 {
        assert!(Instant::now() < deadline, "a renewal was never answered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    answer
}

fn ok(response: &RateLimitResponse) -> bool {
    response.overall_code == Code::Ok as i32
}

/// A Redis store, warmed up as the service does at start.
async fn redis_store(server: &RedisServer, timeout_ms: u64) -> Counters {
    leasing_redis_store(server, timeout_ms, 0).await
}

/// A Redis store that leases up to `lease_max` window hits ahead of use.
async fn leasing_redis_store(server: &RedisServer, timeout_ms: u64, lease_max: u64) -> Counters {
    let redis = RedisStore::new(&server.url(), Duration::from_millis(timeout_ms))
        .expect("client")
        .with_leases(lease_max);
    redis
        .warm_up(Duration::from_secs(5))
        .await
        .expect("Redis is up");
    Counters::redis(redis)
}

/// Runs each test body on both backends (Redis with and without leases,
/// and on a cluster).
macro_rules! both_backends {
    ($($name:ident($store:ident) $body:block)*) => {
        mod memory_backend {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                let $store = Counters::Memory(MemoryStore::default());
                $body
            })*
        }
        mod redis_backend {
            use super::*;
            // Every request decided in Redis, then with leases.
            $(#[tokio::test]
            async fn $name() {
                for lease_max in [0, 100] {
                    let server = RedisServer::start().await;
                    let $store = leasing_redis_store(&server, 200, lease_max).await;
                    $body
                }
            })*
        }
        mod redis_cluster_backend {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                let cluster = RedisCluster::start().await;
                let $store = cluster_store(&cluster, 200, 0).await;
                $body
                assert!(cluster.keys().await > 0, "the counters lived in the cluster");
            })*
        }
    };
}

/// A store on a three-node Redis Cluster, once its connection is up.
async fn cluster_store(cluster: &RedisCluster, timeout_ms: u64, lease_max: u64) -> Counters {
    let urls = cluster.urls();
    let seeds: Vec<&str> = urls.split(',').collect();
    let redis = RedisStore::cluster(&seeds, Duration::from_millis(timeout_ms))
        .expect("client")
        .with_leases(lease_max);
    let started = Instant::now();
    while !redis.connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cluster connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Counters::redis(redis)
}

both_backends! {
    fixed_window_allows_exactly_the_limit(store) {
        let rules = rules(vec![policy("p", 5, 3600, rl::Algorithm::FixedWindow)]);
        let mut allowed = 0;
        for _ in 0..8 {
            if ok(&ask(&rules, &store, &[("p", "alice")]).await) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
        assert!(ok(&ask(&rules, &store, &[("p", "bob")]).await), "bob has his own counter");
    }

    token_bucket_allows_the_burst(store) {
        let rules = rules(vec![policy("b", 3, 3600, rl::Algorithm::TokenBucket)]);
        let results: Vec<bool> = {
            let mut v = Vec::new();
            for _ in 0..5 {
                v.push(ok(&ask(&rules, &store, &[("b", "alice")]).await));
            }
            v
        };
        assert_eq!(results, [true, true, true, false, false]);
    }

    a_refused_request_spends_no_quota(store) {
        let rules = rules(vec![
            policy("tight", 1, 3600, rl::Algorithm::FixedWindow),
            policy("loose", 10, 3600, rl::Algorithm::SlidingWindow),
        ]);
        assert!(ok(&ask(&rules, &store, &[("tight", "a"), ("loose", "a")]).await));
        for _ in 0..4 {
            assert!(!ok(&ask(&rules, &store, &[("tight", "a"), ("loose", "a")]).await));
        }
        let loose = ask(&rules, &store, &[("loose", "a")]).await;
        assert_eq!(loose.statuses[0].limit_remaining, 8, "only the admitted request counted");
    }

    over_limit_answers_carry_ratelimit_headers(store) {
        let rules = rules(vec![policy("h", 1, 60, rl::Algorithm::FixedWindow)]);
        let first = ask(&rules, &store, &[("h", "a")]).await;
        let header = |r: &RateLimitResponse, k: &str| r.response_headers_to_add.iter().find(|h| h.key == k).map(|h| h.value.clone());
        assert_eq!(header(&first, "ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(header(&first, "retry-after"), None);
        let second = ask(&rules, &store, &[("h", "a")]).await;
        assert_eq!(second.overall_code, Code::OverLimit as i32);
        assert!(header(&second, "retry-after").is_some());
        assert_eq!(header(&second, "ratelimit-limit").as_deref(), Some("1"));
    }
}

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

/// Far from its limit, a leasing instance asks Redis once per lease, the
/// leases growing with the counter's traffic; its answers count its own
/// lease as left; the last eighth of the window is decided request by
/// request, and a counter seen once is not leased at all.
#[tokio::test]
async fn a_leasing_instance_asks_redis_once_per_lease() {
    let server = RedisServer::start().await;
    let store = leasing_redis_store(&server, 1000, 100).await;
    let rules = rules(vec![policy("p", 10_000, 3600, rl::Algorithm::FixedWindow)]);
    let before = evalsha_calls(&server).await;
    let first = ask_settled(&rules, &store, &[("p", "a")]).await;
    assert_eq!(first.statuses[0].limit_remaining, 9_999);
    for _ in 0..999 {
        assert!(ok(&ask_settled(&rules, &store, &[("p", "a")]).await));
    }
    let calls = evalsha_calls(&server).await - before;
    // The first two requests are decided in Redis (the counter unseen,
    // then a lease of 1); the other 998 from leases, each renewed by the
    // request that leaves a quarter: 2, 4, then topped up to 8, 16, …, 64
    // and 100 (12 more calls of 75).
    assert_eq!(
        calls, 21,
        "1,000 requests: 2 decided in Redis, 19 top-ups of no hits"
    );
    let key = server.cli(&["KEYS", "gh:*"]).await;
    let stored: u64 = server
        .cli(&["HGET", key.trim(), "c"])
        .await
        .parse()
        .expect("count");
    assert_eq!(
        stored, 1098,
        "Redis counted the leased hits, the 98 still held too"
    );
    // What /metrics reports.
    let counters = store.redis_counters().expect("Redis");
    assert_eq!(counters.redis_requests.get(), 2);
    assert_eq!(counters.lease_requests.get(), 998);
    assert_eq!(counters.script_calls.get(), 21);
    let metrics = gatehouse_ratelimit_service::metrics::Metrics::new(Some(counters)).render();
    assert!(
        metrics.contains("gatehouse_ratelimit_lease_requests_total 998"),
        "{metrics}"
    );

    // A second later the 98 unspent hits go back to Redis.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    store.return_due_leases().await;
    let stored: u64 = server
        .cli(&["HGET", key.trim(), "c"])
        .await
        .parse()
        .expect("count");
    assert_eq!(stored, 1000, "only the admitted requests stay counted");

    // Another counter near its limit: nothing is leased.
    let tight = rules_near_limit();
    let before = evalsha_calls(&server).await;
    for _ in 0..7 {
        assert!(ok(&ask(&tight, &store, &[("q", "a")]).await));
    }
    assert_eq!(evalsha_calls(&server).await - before, 7);

    // Counters seen once each (client IPs passing by): nothing leased.
    for n in 0..20 {
        assert!(ok(&ask(&rules, &store, &[("p", &format!("ip{n}"))]).await));
    }
    let keys = server.cli(&["KEYS", "gh:*ip*"]).await;
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 20, "{keys:?}");
    for key in keys {
        assert_eq!(server.cli(&["HGET", key, "c"]).await.trim(), "1", "{key}");
    }
}

/// A renewal is asked for along with a request the lease already decided:
/// when Redis is gone, the renewal fails and the request stands, so a
/// fail-closed limit keeps admitting what this instance holds.
#[tokio::test]
async fn a_held_lease_decides_while_its_renewal_fails() {
    let mut server = RedisServer::start().await;
    let store = leasing_redis_store(&server, 50, 100).await;
    let mut closed = policy("closed", 10_000, 3600, rl::Algorithm::FixedWindow);
    closed.fail_open = false;
    let rules = rules(vec![closed]);
    // Until the lease is topped up to 100 (see above): 2 in Redis, then
    // leases of 1, 2, 4, … renewed at a quarter; 100 held after 98.
    for _ in 0..98 {
        assert!(ok(&ask_settled(&rules, &store, &[("closed", "a")]).await));
    }
    let counters = store.redis_counters().expect("Redis");
    let from_leases = counters.lease_requests.get();
    server.kill().await;
    // 74 spent without a call; the 75th leaves a quarter and its renewal
    // fails, as do those of the 25 after it, which spend the rest.
    for n in 0..100 {
        assert!(
            ok(&ask(&rules, &store, &[("closed", "a")]).await),
            "request {n} after Redis went away, from the lease"
        );
    }
    assert_eq!(counters.lease_requests.get(), from_leases + 100);
    assert!(
        !ok(&ask(&rules, &store, &[("closed", "a")]).await),
        "spent: fail closed"
    );
}

/// The request that renews a lease is answered from it at once: with
/// Redis hanging, a renewal that was waited for would take the whole Redis
/// timeout (1.5 s here).
#[tokio::test]
async fn a_renewing_request_does_not_wait_for_its_renewal() {
    let server = RedisServer::start().await;
    let store = leasing_redis_store(&server, 1_500, 100).await;
    let rules = rules(vec![policy("p", 10_000, 3600, rl::Algorithm::FixedWindow)]);
    // 100 held after 98 (see `a_leasing_instance_asks_redis_once_per_lease`).
    for _ in 0..98 {
        assert!(ok(&ask_settled(&rules, &store, &[("p", "a")]).await));
    }
    let hang = server.hang(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The 75th leaves a quarter and renews; every one is answered from the lease.
    for n in 0..100 {
        let started = Instant::now();
        assert!(ok(&ask(&rules, &store, &[("p", "a")]).await));
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "request {n} waited {took:?}"
        );
    }
    hang.await.expect("Redis hung");
}

/// Token buckets are leased like windows: far from empty, a busy bucket's
/// requests are mostly decided without Redis.
#[tokio::test]
async fn a_busy_token_bucket_is_decided_from_leases() {
    let server = RedisServer::start().await;
    let store = leasing_redis_store(&server, 1000, 100).await;
    let rules = rules(vec![policy("b", 10_000, 3600, rl::Algorithm::TokenBucket)]);
    let before = evalsha_calls(&server).await;
    for _ in 0..200 {
        assert!(ok(&ask_settled(&rules, &store, &[("b", "a")]).await));
    }
    let calls = evalsha_calls(&server).await - before;
    assert!(calls <= 12, "200 requests in {calls} script calls");
    let counters = store.redis_counters().expect("Redis");
    assert_eq!(counters.redis_requests.get(), 2, "the rest from leases");
    assert_eq!(counters.lease_requests.get(), 198);
}

/// A limit of 7: an eighth of what is left is never a whole hit.
fn rules_near_limit() -> Rules {
    rules(vec![policy("q", 7, 3600, rl::Algorithm::FixedWindow)])
}

/// How many times Redis ran a script so far.
async fn evalsha_calls(server: &RedisServer) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .await
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn redis_flushing_its_scripts_and_every_key_has_a_ttl() {
    let server = RedisServer::start().await;
    let store = redis_store(&server, 1000).await;
    let rules = rules(vec![
        policy("f", 10, 60, rl::Algorithm::FixedWindow),
        policy("s", 10, 60, rl::Algorithm::SlidingWindow),
        policy("t", 10, 60, rl::Algorithm::TokenBucket),
    ]);
    assert!(ok(&ask(
        &rules,
        &store,
        &[("f", "a"), ("s", "a"), ("t", "a")]
    )
    .await));
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).await, "OK");
    let after = ask(&rules, &store, &[("f", "a"), ("s", "a"), ("t", "a")]).await;
    assert!(ok(&after), "NOSCRIPT handled transparently");
    assert_eq!(
        after.statuses[0].limit_remaining, 8,
        "the counters survived"
    );
    let keys = server.cli(&["KEYS", "gh:*"]).await;
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        let ttl: i64 = server.cli(&["PTTL", key]).await.parse().expect("ttl");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn without_redis_fail_open_limits_use_the_local_net_and_fail_closed_ones_refuse() {
    let mut server = RedisServer::start().await;
    let store = redis_store(&server, 5).await;
    let mut closed = policy("closed", 100, 60, rl::Algorithm::FixedWindow);
    closed.fail_open = false;
    let rules = rules(vec![
        policy("open", 3, 60, rl::Algorithm::FixedWindow),
        closed,
    ]);
    assert!(ok(&ask(&rules, &store, &[("open", "a")]).await));
    assert!(ok(&ask(&rules, &store, &[("closed", "a")]).await));

    server.kill().await;
    let mut open_allowed = 0;
    for _ in 0..6 {
        let started = Instant::now();
        if ok(&ask(&rules, &store, &[("open", "a")]).await) {
            open_allowed += 1;
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "degraded answer took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        open_allowed, 3,
        "the local safety net applies the same limit per instance"
    );
    assert!(
        !ok(&ask(&rules, &store, &[("closed", "a")]).await),
        "fail closed"
    );

    // Redis comes back (empty): decisions use it again, no restart.
    server.restart().await;
    gatehouse_e2e::eventually(
        Duration::from_secs(10),
        "recovery after Redis returns",
        || async { ok(&ask(&rules, &store, &[("closed", "b")]).await) },
    )
    .await;
}

#[tokio::test]
async fn a_hanging_redis_gets_degraded_answers_within_the_timeout() {
    let server = RedisServer::start().await;
    let store = Arc::new(redis_store(&server, 5).await);
    let rules = Arc::new(rules(vec![policy(
        "p",
        100,
        60,
        rl::Algorithm::FixedWindow,
    )]));
    assert!(ok(&ask(&rules, &store, &[("p", "a")]).await));
    // DEBUG SLEEP blocks Redis without closing connections: it hangs.
    let hang = server.hang(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let answer = ask(&rules, &store, &[("p", "a")]).await;
        let took = started.elapsed();
        assert!(ok(&answer), "fail open");
        // The Redis timeout is 5 ms; debug builds on a shared 2-core machine
        // get some slack.
        assert!(
            took < Duration::from_millis(30),
            "degraded answer took {took:?}"
        );
    }
    hang.await.expect("Redis hung");
}

#[tokio::test]
async fn a_spent_limit_is_refused_without_asking_redis_until_it_resets() {
    let server = RedisServer::start().await;
    let store = redis_store(&server, 1000).await;
    let rules = rules(vec![policy("p", 2, 3600, rl::Algorithm::FixedWindow)]);
    for _ in 0..3 {
        ask(&rules, &store, &[("p", "abuser")]).await;
    }
    let before = evalsha_calls(&server).await;
    assert!(before > 0, "the counting itself works");
    for _ in 0..50 {
        assert!(!ok(&ask(&rules, &store, &[("p", "abuser")]).await));
    }
    let after = evalsha_calls(&server).await;
    assert_eq!(after, before, "refused from the local cache");
    assert!(ok(&ask(&rules, &store, &[("p", "someone-else")]).await));
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
