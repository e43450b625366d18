//! What resilience costs on the hot path, and the seed's failure scenario
//! as numbers (issue 20).
//!
//! - Throughput: a plain route and the same upstream behind a route with
//!   retries, outlier detection, circuit breakers, active health checks and
//!   header rules, through one Envoy, in interleaved `wrk` slices; the
//!   median of the per-round ratios (target: at least 97 %).
//! - "An endpoint starts failing 50 % of requests": of two endpoints, one
//!   does; the time until Envoy ejects it (outlier detection: failure
//!   percentage 50 over 10 s intervals) and the client error rate
//!   meanwhile, with and without retries.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_e2e::{Behaviour, Stack, Upstream, client, probe};
use serde_json::json;

use crate::side_by_side::{self, Variant};

pub async fn run(seconds: u64, rounds: usize, connections: u32) {
    throughput(seconds, rounds, connections).await;
    for retries in [false, true] {
        failing_endpoint(retries).await;
    }
}

async fn throughput(seconds: u64, rounds: usize, connections: u32) {
    let g = Stack::new().start().await;
    let up = Upstream::start("up").await;
    let endpoints = json!([{"host": "127.0.0.1", "port": up.addr.port()}]);
    g.cp.apply("/v1/services/plain", json!({"endpoints": endpoints}))
        .await;
    g.cp.apply(
        "/v1/services/protected",
        json!({"endpoints": endpoints,
               "health_check": {"type": "http", "path": "/healthz", "interval_ms": 1000},
               "outlier_detection": {"consecutive_5xx": 5,
                   "failure_percentage": {"threshold": 50, "minimum_requests": 20}},
               "circuit_breakers": {"default": {"max_requests": 5000, "max_pending_requests": 5000}}}),
    )
    .await;
    g.cp.apply(
        "/v1/routes/plain",
        json!({"match": {"path_prefix": "/plain"}, "destination": {"service": "plain"}}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/protected",
            json!({"match": {"path_prefix": "/protected"}, "destination": {"service": "protected"},
                   "retries": {"on": ["5xx", "reset", "connect-failure"], "attempts": 2,
                               "per_try_timeout_ms": 1000},
                   "headers": {"request": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
                               "response": {"set": {"x-served-by": "gatehouse"}}}}),
        )
        .await;
    // Each feature alone, to see where the cost is.
    g.cp.apply(
        "/v1/services/guarded",
        json!({"endpoints": endpoints,
               "health_check": {"type": "http", "path": "/healthz", "interval_ms": 1000},
               "outlier_detection": {"consecutive_5xx": 5,
                   "failure_percentage": {"threshold": 50, "minimum_requests": 20}}}),
    )
    .await;
    let alone = [
        (
            "retried",
            json!({"match": {"path_prefix": "/retried"}, "destination": {"service": "plain"},
            "retries": {"on": ["5xx", "reset", "connect-failure"], "attempts": 2, "per_try_timeout_ms": 1000}}),
        ),
        (
            "rewritten",
            json!({"match": {"path_prefix": "/rewritten"}, "destination": {"service": "plain"},
            "headers": {"request": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
                        "response": {"set": {"x-served-by": "gatehouse"}}}}),
        ),
        (
            "guarded",
            json!({"match": {"path_prefix": "/guarded"}, "destination": {"service": "guarded"}}),
        ),
    ];
    let mut version = version;
    for (route, body) in alone {
        version = g.cp.apply(&format!("/v1/routes/{route}"), body).await;
    }
    g.cp.until_converged(version).await;
    g.envoy.until_status("/protected", 200).await;
    let none = Vec::new();
    let variants = [
        Variant {
            name: "plain route",
            url: g.envoy.url("/plain"),
            headers: &none,
            processes: vec![("envoy", g.envoy.pid())],
        },
        Variant {
            name: "retries+outliers+breakers+health+headers",
            url: g.envoy.url("/protected"),
            headers: &none,
            processes: vec![("envoy", g.envoy.pid())],
        },
        Variant {
            name: "retries only",
            url: g.envoy.url("/retried"),
            headers: &none,
            processes: vec![("envoy", g.envoy.pid())],
        },
        Variant {
            name: "header rules only",
            url: g.envoy.url("/rewritten"),
            headers: &none,
            processes: vec![("envoy", g.envoy.pid())],
        },
        Variant {
            name: "outliers+health only",
            url: g.envoy.url("/guarded"),
            headers: &none,
            processes: vec![("envoy", g.envoy.pid())],
        },
    ];
    println!(
        "resilience on the hot path ({rounds} rounds of {seconds} s, {connections} connections):"
    );
    let measured = side_by_side::interleaved(&variants, rounds, seconds, connections).await;
    measured.print();
    for variant in [
        "retries+outliers+breakers+health+headers",
        "retries only",
        "header rules only",
        "outliers+health only",
    ] {
        measured.print_ratio(variant, "plain route");
    }
}

async fn failing_endpoint(retries: bool) {
    let g = Stack::new().start().await;
    let good = Upstream::start("good").await;
    let bad = Upstream::start("bad").await;
    g.cp.apply(
        "/v1/services/pair",
        json!({"endpoints": [{"host": "127.0.0.1", "port": good.addr.port()},
                             {"host": "127.0.0.1", "port": bad.addr.port()}],
               "outlier_detection": {"failure_percentage": {"threshold": 50, "minimum_requests": 20},
                                     "interval_ms": 10000, "base_ejection_ms": 30000}}),
    )
    .await;
    let mut route = json!({"match": {"path_prefix": "/"}, "destination": {"service": "pair"}});
    if retries {
        route["retries"] = json!({"on": ["5xx"], "attempts": 2});
    }
    let version = g.cp.apply("/v1/routes/pair", route).await;
    g.cp.until_converged(version).await;
    g.envoy.until_status("/", 200).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = g.envoy.url("/x");
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if probe(&http, &url).await.0 != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    bad.behave(Behaviour::failing(2, 500));
    let (sent_before, failed_before) =
        (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let started = Instant::now();
    let stat = "cluster.pair.outlier_detection.ejections_enforced_failure_percentage";
    while g.envoy.stat(stat).await.unwrap_or_default() == 0
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ejected_after = started.elapsed();
    let window = (
        sent.load(Ordering::Relaxed) - sent_before,
        failed.load(Ordering::Relaxed) - failed_before,
    );
    let (sent_mark, failed_mark) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let after = (
        sent.load(Ordering::Relaxed) - sent_mark,
        failed.load(Ordering::Relaxed) - failed_mark,
    );
    let rate = |(s, f): (u64, u64)| {
        if s == 0 {
            0.0
        } else {
            f as f64 * 100.0 / s as f64
        }
    };
    println!(
        "endpoint failing 50 %, retries {}: ejected after {:.1} s; client errors until then {:.2} % ({} of {}), in the 3 s after {:.2} % ({} of {})",
        if retries { "on (2)" } else { "off" },
        ejected_after.as_secs_f64(),
        rate(window),
        window.1,
        window.0,
        rate(after),
        after.1,
        after.0,
    );
}
