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

pub async fn run(requests: usize) {
    let rules = rules();
    let store = Store::Memory(MemoryStore::default());
    let metrics = Metrics::default();
    for descriptors in [1, 3] {
        // 1,000 distinct consumers, so counters are looked up, not just hit.
        let batch: Vec<RateLimitRequest> = (0..1000)
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
            .collect();
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
}
