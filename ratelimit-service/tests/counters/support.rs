//! What the counter tests share: rules and requests, asking the decision
//! code, stores on a private Redis or Redis Cluster, and the macro that runs
//! a test body on every backend.

use std::time::{Duration, Instant};

use gatehouse_e2e::redis::{RedisCluster, RedisServer};
use gatehouse_proto::{
    ratelimit as rl,
    ratelimit_common::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    ratelimit_service::{RateLimitRequest, RateLimitResponse, rate_limit_response::Code},
};
use gatehouse_ratelimit_service::{
    counters::{Counters, redis::RedisStore},
    metrics::Metrics,
    rules::Rules,
    server::decide,
};

pub(crate) fn policy(
    name: &str,
    requests: u64,
    period_seconds: u64,
    algorithm: rl::Algorithm,
) -> rl::Policy {
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
        quota: false,
    }
}

pub(crate) fn rules(policies: Vec<rl::Policy>) -> Rules {
    Rules::build(
        "1",
        rl::RateLimitConfig {
            policies,
            ..Default::default()
        },
    )
    .expect("rules")
}

pub(crate) fn request(descriptors: &[(&str, &str)]) -> RateLimitRequest {
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

pub(crate) async fn ask(
    rules: &Rules,
    store: &Counters,
    descriptors: &[(&str, &str)],
) -> RateLimitResponse {
    decide(rules, store, &request(descriptors), &Metrics::default())
        .await
        .expect("decision")
}

/// [`ask`], then waits for the lease renewals it sent (in the background)
/// to be answered, so that what the next request finds is deterministic.
pub(crate) async fn ask_settled(
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

pub(crate) fn ok(response: &RateLimitResponse) -> bool {
    response.overall_code == Code::Ok as i32
}

/// A Redis store, warmed up as the service does at start.
pub(crate) async fn redis_store(server: &RedisServer, timeout_ms: u64) -> Counters {
    leasing_redis_store(server, timeout_ms, 0).await
}

/// A Redis store that leases up to `lease_max` window hits ahead of use.
pub(crate) async fn leasing_redis_store(
    server: &RedisServer,
    timeout_ms: u64,
    lease_max: u64,
) -> Counters {
    let redis = RedisStore::new(&server.url(), Duration::from_millis(timeout_ms))
        .expect("client")
        .with_leases(lease_max);
    redis
        .warm_up(Duration::from_secs(5))
        .await
        .expect("Redis is up");
    Counters::redis(redis)
}

/// A store on a three-node Redis Cluster, once its connection is up.
pub(crate) async fn cluster_store(
    cluster: &RedisCluster,
    timeout_ms: u64,
    lease_max: u64,
) -> Counters {
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

/// A limit of 7: an eighth of what is left is never a whole hit.
pub(crate) fn rules_near_limit() -> Rules {
    rules(vec![policy("q", 7, 3600, rl::Algorithm::FixedWindow)])
}

/// How many times Redis ran a script so far.
pub(crate) async fn evalsha_calls(server: &RedisServer) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .await
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) use both_backends;
