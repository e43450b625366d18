//! Rate limiting benchmarks (BENCHMARKS.md, "Rate limiting"): in-process
//! `ShouldRateLimit` decisions per second on the in-memory store, with one
//! and three descriptors per request.

use std::time::Instant;

use gatehouse_proto::{
    ratelimit as rl,
    ratelimit_common::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    ratelimit_service::{RateLimitRequest, rate_limit_response::Code},
};
use gatehouse_ratelimit_service::{
    metrics::Metrics,
    rules::Rules,
    server::decide,
    store::{Store, memory::MemoryStore},
};

fn descriptor(entries: &[(&str, String)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_owned(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

fn rules() -> Rules {
    let policy = |name: &str, algorithm: rl::Algorithm| rl::Policy {
        name: name.into(),
        limit: Some(rl::Limit {
            requests: u64::from(u32::MAX),
            period_seconds: 60,
        }),
        algorithm: algorithm as i32,
        ..Default::default()
    };
    Rules::build(
        "1",
        rl::RateLimitConfig {
            policies: vec![
                policy("per-consumer", rl::Algorithm::FixedWindow),
                policy("per-ip", rl::Algorithm::SlidingWindow),
                policy("per-route", rl::Algorithm::TokenBucket),
            ],
            plans: vec![],
        },
    )
    .expect("rules")
}

fn batch(descriptors: usize) -> Vec<RateLimitRequest> {
    // 1,000 distinct consumers, so counters are looked up, not just hit.
    (0..1000)
        .map(|i| {
            let all = [
                descriptor(&[
                    ("policy", "per-consumer".into()),
                    ("consumer", format!("c{i}")),
                ]),
                descriptor(&[
                    ("policy", "per-ip".into()),
                    ("remote_address", format!("10.0.{}.{}", i / 250, i % 250)),
                ]),
                descriptor(&[("policy", "per-route".into()), ("route", "orders".into())]),
            ];
            RateLimitRequest {
                domain: rl::DOMAIN.into(),
                descriptors: all[..descriptors].to_vec(),
                hits_addend: 0,
            }
        })
        .collect()
}

pub async fn run(requests: usize, seconds: u64, concurrency: usize) {
    let rules = rules();
    let store = Store::Memory(MemoryStore::default());
    let metrics = Metrics::default();
    for descriptors in [1, 3] {
        let batch = batch(descriptors);
        let started = Instant::now();
        for i in 0..requests {
            let response = decide(&rules, &store, &batch[i % batch.len()], &metrics)
                .await
                .expect("decision");
            debug_assert_eq!(response.overall_code, Code::Ok as i32);
            std::hint::black_box(response);
        }
        let elapsed = started.elapsed();
        println!(
            "in-process ShouldRateLimit, memory store, {descriptors} descriptor(s): {:.0} decisions/s ({:.2} µs each, one thread)",
            requests as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / requests as f64
        );
    }
    redis(seconds, concurrency).await;
}

/// Closed loop over a private Redis on loopback: `concurrency` callers, each
/// timing its decisions.
async fn redis(seconds: u64, concurrency: usize) {
    let server = gatehouse_e2e::redis::RedisServer::start().await;
    let rules = std::sync::Arc::new(rules());
    let store = std::sync::Arc::new(Store::Redis {
        redis: gatehouse_ratelimit_service::store::redis::RedisStore::new(
            &server.url(),
            std::time::Duration::from_millis(1000),
        )
        .expect("redis client"),
        grace: MemoryStore::default(),
    });
    for descriptors in [1, 3] {
        let batch = std::sync::Arc::new(batch(descriptors));
        let deadline = Instant::now() + std::time::Duration::from_secs(seconds);
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..concurrency {
            let (rules, store, batch) = (rules.clone(), store.clone(), batch.clone());
            callers.spawn(async move {
                let metrics = Metrics::default();
                let mut latencies = Vec::new();
                let mut i = caller;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let response = decide(&rules, &store, &batch[i % batch.len()], &metrics)
                        .await
                        .expect("decision");
                    latencies.push(started.elapsed());
                    assert_eq!(
                        metrics.degraded_decisions.get(),
                        0,
                        "Redis failed during the run"
                    );
                    std::hint::black_box(response);
                    i += concurrency;
                }
                latencies
            });
        }
        let mut latencies = Vec::new();
        while let Some(Ok(mut part)) = callers.join_next().await {
            latencies.append(&mut part);
        }
        latencies.sort_unstable();
        println!(
            "ShouldRateLimit decided over Redis (loopback), {descriptors} descriptor(s), {concurrency} concurrent: {:.0} decisions/s, p50 {} p99 {}",
            latencies.len() as f64 / seconds as f64,
            crate::us(crate::percentile(&latencies, 0.5)),
            crate::us(crate::percentile(&latencies, 0.99)),
        );
    }
}
