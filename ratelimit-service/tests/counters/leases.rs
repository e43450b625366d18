//! Leases: hits taken from Redis ahead of use, renewed, given back.

use std::time::{Duration, Instant};

use gatehouse_e2e::redis::RedisServer;
use gatehouse_proto::ratelimit as rl;

use crate::support::*;

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
