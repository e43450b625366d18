//! Resilience through a real Envoy against misbehaving upstreams: retries
//! and per-try timeouts, active health checks with failover to backups,
//! circuit breakers and priority classes with load shedding (issue 20;
//! outlier detection in `outlier_detection.rs`).

use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Behaviour, Stack, Upstream, client, eventually,
    flood::{Flood, successes},
    probe, service_over as service,
};
use serde_json::{Value, json};

#[tokio::test]
async fn every_resilience_field_is_accepted_by_envoy() {
    let g = Stack::new()
        .configure(|o| o.validate_with_envoy = true)
        .start()
        .await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let services = [
        (
            "checked",
            service(
                &[(&a, 0), (&b, 1)],
                json!({"health_check": {"type": "http", "path": "/healthz", "expected_statuses": [200, 204],
                        "host": "health.internal", "interval_ms": 500, "timeout_ms": 250,
                        "healthy_threshold": 1, "unhealthy_threshold": 2, "jitter_ms": 50},
                       "outlier_detection": {"consecutive_5xx": 3, "consecutive_gateway_failures": 2,
                        "failure_percentage": {"threshold": 50, "minimum_requests": 10},
                        "success_rate": {"minimum_hosts": 2, "minimum_requests": 50, "stdev_factor": 1500},
                        "interval_ms": 1000, "base_ejection_ms": 5000, "max_ejection_percent": 100},
                       "circuit_breakers": {"default": {"max_connections": 100, "max_pending_requests": 50,
                        "max_requests": 200, "retry_budget": {"percent": 25, "min_concurrency": 2}},
                        "high": {"max_requests": 400, "max_retries": 10}}}),
            ),
        ),
        (
            "grpc-checked",
            service(
                &[(&a, 0)],
                json!({"protocol": "grpc", "health_check": {"type": "grpc", "grpc_service": "orders"}}),
            ),
        ),
        (
            "tcp-checked",
            service(&[(&b, 0)], json!({"health_check": {"type": "tcp"}})),
        ),
    ];
    for (name, body) in services {
        g.cp.apply(&format!("/v1/services/{name}"), body).await;
    }
    let version = g
        .cp
        .apply(
            "/v1/routes/retried",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "checked"},
                   "timeout_ms": 3000, "priority": "high",
                   "retries": {"on": ["5xx", "reset", "connect-failure", "retriable-4xx", "refused-stream"],
                    "status_codes": [429], "attempts": 3, "per_try_timeout_ms": 1000,
                    "backoff": {"base_ms": 10, "max_ms": 100}, "non_idempotent": true}}),
        )
        .await;
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;
    assert_eq!(g.envoy.rejected_updates().await, 0);
    g.envoy.until_status("/", 200).await;
}

#[tokio::test]
async fn retries_hide_failures_but_never_repeat_a_post() {
    let g = Stack::new().start().await;
    // Every third request fails on each endpoint.
    let a = Upstream::start_with("a", Behaviour::failing(3, 503)).await;
    let b = Upstream::start_with("b", Behaviour::failing(3, 503)).await;
    g.cp.apply(
        "/v1/services/flaky",
        service(&[(&a, 0), (&b, 0)], json!({})),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/flaky",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "flaky"},
                   "retries": {"on": ["5xx"], "attempts": 2, "backoff": {"base_ms": 1}}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let http = client();
    let mut failed = 0;
    for _ in 0..150 {
        if probe(&http, &g.envoy.url("/items")).await.0 != 200 {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 0,
        "a third of the attempts failed; no client saw it"
    );

    // Always failing: a GET is tried 1 + 2 times, a POST once.
    a.behave(Behaviour::failing(1, 503));
    b.behave(Behaviour::failing(1, 503));
    let hits = || a.hit_count() + b.hit_count();
    let before = hits();
    let post = http
        .post(g.envoy.url("/orders"))
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(post.status(), 503);
    assert_eq!(hits() - before, 1, "a POST is never retried by default");
    let before = hits();
    assert_eq!(probe(&http, &g.envoy.url("/items")).await.0, 503);
    assert_eq!(hits() - before, 3, "a GET is retried twice");
}

/// A hung endpoint never answers; the per-try timeout gives up on it and
/// the retry goes to the other endpoint, so clients only see the delay.
#[tokio::test]
async fn a_hung_endpoint_is_hidden_by_the_per_try_timeout() {
    let g = Stack::new().start().await;
    let hung = Upstream::start_with("hung", Behaviour::hanging()).await;
    let live = Upstream::start("live").await;
    g.cp.apply(
        "/v1/services/halfhung",
        service(&[(&hung, 0), (&live, 0)], json!({})),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/halfhung",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "halfhung"},
                   "timeout_ms": 10000,
                   "retries": {"on": ["gateway-error"], "attempts": 2, "per_try_timeout_ms": 200,
                               "backoff": {"base_ms": 1}}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let http = client();
    for _ in 0..20 {
        assert_eq!(
            probe(&http, &g.envoy.url("/items")).await,
            (200, Some("live".into()))
        );
    }
    assert!(
        hung.hit_count() > 0,
        "round robin sent some first attempts to the hung endpoint"
    );
}

#[tokio::test]
async fn health_checks_move_traffic_to_backups_and_back() {
    let g = Stack::new().start().await;
    let primary = Upstream::start("primary").await;
    let backup = Upstream::start("backup").await;
    g.cp.apply(
        "/v1/services/ha",
        service(
            &[(&primary, 0), (&backup, 1)],
            json!({"health_check": {"type": "http", "path": "/healthz", "interval_ms": 200,
                   "timeout_ms": 200, "healthy_threshold": 1, "unhealthy_threshold": 2}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/ha",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "ha"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let http = client();
    let from = || async { probe(&http, &g.envoy.url("/ha")).await };
    eventually(Duration::from_secs(10), "the primary serving", || async {
        from().await.1.as_deref() == Some("primary")
    })
    .await;

    // The primary fails (its health checks too): the backup serves.
    primary.behave(Behaviour::failing(1, 503));
    eventually(Duration::from_secs(10), "the backup serving", || async {
        from().await.1.as_deref() == Some("backup")
    })
    .await;
    for _ in 0..30 {
        assert_eq!(
            from().await,
            (200, Some("backup".into())),
            "no client error"
        );
    }
    // Back: traffic returns to the primary.
    primary.behave(Behaviour::default());
    eventually(
        Duration::from_secs(10),
        "the primary serving again",
        || async { from().await.1.as_deref() == Some("primary") },
    )
    .await;
}

#[tokio::test]
async fn a_burst_past_the_circuit_breaker_gets_fast_503s() {
    let g = Stack::new().start().await;
    let slow = Upstream::start_with("slow", Behaviour::delayed(Duration::from_millis(800))).await;
    g.cp.apply(
        "/v1/services/slow",
        service(
            &[(&slow, 0)],
            json!({"circuit_breakers": {"default": {"max_requests": 2, "max_pending_requests": 1, "max_connections": 2}}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/slow",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "slow"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let http = client();
    let burst = (0..20).map(|_| {
        let (http, url) = (http.clone(), g.envoy.url("/burst"));
        tokio::spawn(async move {
            let sent = Instant::now();
            let response = http.get(url).send().await.expect("answered");
            let overloaded = response.headers().contains_key("x-envoy-overloaded");
            (response.status().as_u16(), overloaded, sent.elapsed())
        })
    });
    let mut shed = 0;
    for answer in burst.collect::<Vec<_>>() {
        let (status, overloaded, took) = answer.await.expect("request");
        if status == 503 {
            assert!(overloaded, "shed by the circuit breaker");
            assert!(
                took < Duration::from_millis(500),
                "fast, not a timeout: {took:?}"
            );
            shed += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    assert!(shed >= 15, "{shed} of 20 shed");
    assert!(
        slow.hit_count() <= 3,
        "the upstream saw {} requests: never more than the limit",
        slow.hit_count()
    );
}

/// Every new field is checked before anything reaches Envoy: a 422 naming
/// the field, nothing stored.
#[tokio::test]
async fn invalid_resilience_settings_are_refused_by_field() {
    let g = Stack::new().start().await;
    let a = Upstream::start("a").await;
    g.cp.apply("/v1/services/a", service(&[(&a, 0)], json!({})))
        .await;
    let before = g.cp.version().await;
    let refused = [
        (
            "/v1/services/s1",
            service(
                &[(&a, 0)],
                json!({"health_check": {"type": "http", "interval_ms": 0}}),
            ),
            "health_check.path",
        ),
        (
            "/v1/services/s2",
            service(
                &[(&a, 0)],
                json!({"outlier_detection": {"failure_percentage": {"threshold": 150}}}),
            ),
            "outlier_detection.failure_percentage.threshold",
        ),
        (
            "/v1/services/s2b",
            service(
                &[(&a, 0)],
                json!({"outlier_detection": {"success_rate": {"minimum_hosts": 1}}}),
            ),
            "outlier_detection.success_rate.minimum_hosts",
        ),
        (
            "/v1/services/s3",
            service(
                &[(&a, 0)],
                json!({"circuit_breakers": {"default": {"max_requests": 0}}}),
            ),
            "circuit_breakers.default.max_requests",
        ),
        (
            "/v1/services/s4",
            service(&[(&a, 2)], json!({})),
            "endpoints",
        ),
        (
            "/v1/routes/r1",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "a"},
                   "retries": {"on": ["sometimes"]}}),
            "retries.on[0]",
        ),
        (
            "/v1/routes/r2",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "a"},
                   "retries": {"backoff": {"base_ms": 100, "max_ms": 10}}}),
            "retries.backoff.max_ms",
        ),
        (
            "/v1/routes/r3",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "a"},
                   "timeout_ms": 100, "retries": {"per_try_timeout_ms": 500}}),
            "retries.per_try_timeout_ms",
        ),
        (
            "/v1/routes/r4",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "a"},
                   "priority": "high", "load_shedding": true}),
            "load_shedding",
        ),
        (
            "/v1/routes/r5",
            json!({"match": {"path_prefix": "/"}, "direct_response": {"status": 200},
                   "load_shedding": true}),
            "load_shedding",
        ),
    ];
    for (path, body, field) in refused {
        let response = g.cp.put(path, body).await;
        assert_eq!(response.status().as_u16(), 422, "{path}");
        let problem: Value = response.json().await.expect("problem");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{path}: {problem}");
    }
    assert_eq!(g.cp.version().await, before, "nothing stored");
}

/// Under total failure the retry budget holds: retries stay a small share
/// of the requests instead of multiplying them (no retry storm).
#[tokio::test]
async fn the_retry_budget_prevents_a_retry_storm() {
    let g = Stack::new().start().await;
    let down = Upstream::start_with("down", Behaviour::failing(1, 503)).await;
    g.cp.apply(
        "/v1/services/down",
        service(
            &[(&down, 0)],
            json!({"circuit_breakers": {"default": {
            "retry_budget": {"percent": 20, "min_concurrency": 1}}}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/down",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "down"},
                   "retries": {"on": ["5xx"], "attempts": 3, "backoff": {"base_ms": 50}}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let clients = (0..50).map(|_| {
        let url = g.envoy.url("/x");
        tokio::spawn(async move {
            let http = client();
            for _ in 0..4 {
                assert_eq!(probe(&http, &url).await.0, 503);
            }
        })
    });
    for c in clients.collect::<Vec<_>>() {
        c.await.expect("client");
    }
    let (requests, hits) = (200, down.hit_count());
    assert!(
        hits * 10 <= requests * 15,
        "{hits} upstream attempts for {requests} requests (4x without the budget)"
    );
}

/// A slow service `shared` behind a best-effort route `/bulk` (with
/// `bulk_extra`) and a high-priority route `/checkout`.
async fn bulk_and_checkout(g: &Stack, service_extra: Value, bulk_extra: Value) -> Upstream {
    let slow = Upstream::start_with("slow", Behaviour::delayed(Duration::from_millis(100))).await;
    g.cp.apply("/v1/services/shared", service(&[(&slow, 0)], service_extra))
        .await;
    let mut bulk = json!({"match": {"path_prefix": "/bulk"}, "destination": {"service": "shared"}});
    if let (Some(bulk), Some(extra)) = (bulk.as_object_mut(), bulk_extra.as_object()) {
        bulk.extend(extra.clone());
    }
    g.cp.apply("/v1/routes/bulk", bulk).await;
    let version =
        g.cp.apply(
            "/v1/routes/checkout",
            json!({"match": {"path_prefix": "/checkout"}, "destination": {"service": "shared"},
                   "priority": "high"}),
        )
        .await;
    g.cp.until_converged(version).await;
    slow
}

/// While best-effort routes flood a service past its default budget, a
/// high-priority route to the same service keeps succeeding (its own
/// budget); the shed requests get a fast JSON 503 with `Retry-After`.
#[tokio::test]
async fn high_priority_traffic_survives_a_best_effort_flood() {
    let g = Stack::new().start().await;
    let _slow = bulk_and_checkout(
        &g,
        json!({"circuit_breakers": {
            "default": {"max_requests": 4, "max_pending_requests": 1},
            "high": {"max_requests": 50, "max_pending_requests": 50}}}),
        json!({}),
    )
    .await;
    let flood = Flood::start(g.envoy.url("/bulk"), 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = successes(g.envoy.url("/checkout"), 4, 25).await;
    let report = flood.stop().await;
    assert!(ok >= 99, "{ok} of 100 high-priority requests succeeded");
    let shed = report.shed.first().expect("best-effort requests were shed");
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    assert_eq!(shed.body["error"], json!("overloaded"), "{}", shed.body);
}

/// One of two endpoints dies: once the health checks have seen it
/// (interval × threshold), no client request fails.
#[tokio::test]
async fn a_dead_endpoint_costs_no_requests_after_its_health_checks() {
    let g = Stack::new().start().await;
    let alive = Upstream::start("alive").await;
    let doomed = Upstream::start("doomed").await;
    g.cp.apply(
        "/v1/services/pair",
        service(
            &[(&alive, 0), (&doomed, 0)],
            json!({"health_check": {"type": "http", "path": "/healthz", "interval_ms": 100,
                   "timeout_ms": 100, "unhealthy_threshold": 2, "healthy_threshold": 1}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/pair",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "pair"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    g.envoy.until_status("/", 200).await;
    drop(doomed);
    // interval × threshold, and a margin.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let http = client();
    for _ in 0..100 {
        assert_eq!(
            probe(&http, &g.envoy.url("/")).await,
            (200, Some("alive".into()))
        );
    }
}

/// A service whose only endpoint is ejected answers at once: a 503 with
/// the response flag, a JSON body and `Retry-After`, not a timeout.
#[tokio::test]
async fn an_ejected_only_endpoint_fails_fast() {
    let g = Stack::new().start().await;
    let only = Upstream::start_with("only", Behaviour::failing(1, 500)).await;
    g.cp.apply(
        "/v1/services/single",
        service(
            &[(&only, 0)],
            json!({"outlier_detection": {"consecutive_5xx": 3, "interval_ms": 1000,
                   "base_ejection_ms": 30000, "max_ejection_percent": 100}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/single",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "single"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let http = client();
    // Three 500s in a row eject it (the ejection lands a moment later).
    gatehouse_e2e::eventually(Duration::from_secs(5), "the endpoint ejected", || async {
        probe(&http, &g.envoy.url("/x")).await.0 == 503
    })
    .await;
    let hits = only.hit_count();
    let mut fastest = Duration::MAX;
    for _ in 0..20 {
        let sent = Instant::now();
        let response = http.get(g.envoy.url("/x")).send().await.expect("answered");
        fastest = fastest.min(sent.elapsed());
        assert_eq!(response.status(), 503);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], json!("unavailable"), "{body}");
    }
    assert_eq!(only.hit_count(), hits, "ejected: never asked");
    assert!(fastest < Duration::from_millis(50), "fast: {fastest:?}");
}

/// Routes with `load_shedding` are shed (the same fast JSON 503) while
/// their latency stays above the gateway's target; a high-priority route to
/// the same slow service never passes through the filter.
#[tokio::test]
async fn slow_best_effort_routes_are_shed_and_high_priority_ones_never() {
    let g = Stack::new()
        .configure(|o| {
            o.validate_with_envoy = true;
            o.args
                .extend(["--shed-target-latency-ms".into(), "10".into()]);
        })
        .start()
        .await;
    let _slow = bulk_and_checkout(&g, json!({}), json!({"load_shedding": true})).await;
    let flood = Flood::start(g.envoy.url("/bulk"), 20);
    // Long enough for the limit to come down from its start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ok = successes(g.envoy.url("/checkout"), 4, 10).await;
    let report = flood.stop().await;
    assert_eq!(ok, 40, "every high-priority request succeeded");
    assert!(
        report.served > 0,
        "best-effort traffic is limited, not stopped"
    );
    let shed = report.shed.first().expect("best-effort requests were shed");
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    assert_eq!(shed.body["error"], json!("overloaded"), "{}", shed.body);
    let blocked = g
        .envoy
        .stat("http.gatehouse.adaptive_concurrency.gradient_controller.rq_blocked")
        .await
        .unwrap_or_default();
    assert!(blocked > 0, "Envoy counted the shed requests");
}
