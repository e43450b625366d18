//! Redis faults: a flushed script cache, TTLs, Redis killed or hanging,
//! and spent limits remembered locally.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_e2e::redis::RedisServer;
use gatehouse_proto::ratelimit as rl;

use crate::support::*;

#[tokio::test]
async fn redis_flushing_its_scripts_and_every_key_has_a_ttl() {
    let server = RedisServer::start().await;
    let store = redis_store(&server, 1000).await;
    // The fixed window turns over on the minute: start clear of a turn, so
    // both asks count in one window even on a loaded machine.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        % 60_000;
    if into_minute > 55_000 {
        tokio::time::sleep(Duration::from_millis((60_100 - into_minute) as u64)).await;
    }
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
