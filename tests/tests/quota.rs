//! Policies with `enforcement: quota` (issue 22): Envoy's quota filter
//! decides in process from token buckets ratelimit-service assigns it over
//! the quota protocol (RLQS), with no call per request; several Envoys
//! share one limit by demand; bad quota policies are refused.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_e2e::{Envoy, Stack, XdsVariant, client, eventually};
use serde_json::{Value, json};

/// `clients` loops sending GETs to `url` for `run`: (200s, 429s). Each
/// pauses a millisecond between requests: hundreds a second, far above
/// the limits here, without taking the CI machine's cores from the other
/// tests.
async fn hammer(
    url: String,
    headers: Vec<(String, String)>,
    clients: usize,
    run: Duration,
) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + run;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, headers, ok, limited) =
                (url.clone(), headers.clone(), ok.clone(), limited.clone());
            tokio::spawn(async move {
                let http = client();
                while Instant::now() < until {
                    let mut request = http.get(&url);
                    for (k, v) in &headers {
                        request = request.header(k, v);
                    }
                    match request.send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    (ok.load(Ordering::Relaxed), limited.load(Ordering::Relaxed))
}

async fn quota_gateway(policy: Value) -> Stack {
    Stack::orders_under_policy(&[], policy).await
}

/// The first request opens the bucket (allowed: no assignment yet, fail
/// open); its assignment follows within a reporting interval.
async fn open_bucket(url: &str) {
    let _ = client().get(url).send().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

#[tokio::test]
async fn envoy_enforces_its_assignment_without_a_call_per_request() {
    let g = quota_gateway(json!({"limit": {"requests": 600, "per": "minute"},
        "enforcement": "quota", "routes": ["orders"]}))
    .await;
    let url = g.envoy.url("/orders");
    open_bucket(&url).await;
    let (ok, limited) = hammer(url.clone(), Vec::new(), 4, Duration::from_secs(3)).await;
    // 10 a second: 30 in 3 s, plus a second's worth of bucket.
    assert!(limited > 0, "nothing refused ({ok} admitted)");
    assert!((15..=55).contains(&ok), "{ok} admitted, {limited} refused");
    let refused = client().get(&url).send().await.expect("answer");
    if refused.status() == 429 {
        let body: Value = refused.json().await.expect("JSON");
        assert_eq!(body["error"], "rate_limited");
    }
    // Decided in Envoy: ratelimit-service was never asked per request.
    let metrics = g.limiter().metrics().await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("gatehouse_ratelimit_decisions_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_envoys_share_one_limit() {
    let g = quota_gateway(json!({"limit": {"requests": 1200, "per": "minute"},
        "enforcement": "quota", "routes": ["orders"]}))
    .await;
    // A second Envoy on the same port (SO_REUSEPORT): connections spread
    // over both, and both report the bucket.
    let second = Envoy::start(g.cp.xds, g.envoy.proxy_port, XdsVariant::StateOfTheWorld).await;
    let url = g.envoy.url("/orders");
    for _ in 0..8 {
        open_bucket(&url).await;
        if second
            .stat("http.gatehouse.downstream_rq_total")
            .await
            .unwrap_or(0)
            > 0
        {
            break;
        }
    }
    let (ok, limited) = hammer(url, Vec::new(), 8, Duration::from_secs(4)).await;
    // 20 a second for the fleet: 80 in 4 s plus a second's worth each. Two
    // Envoys each enforcing the whole limit would admit about twice that.
    assert!(limited > 0, "nothing refused ({ok} admitted)");
    assert!((40..=140).contains(&ok), "{ok} admitted, {limited} refused");
    let served_by_second = second
        .stat("http.gatehouse.downstream_rq_total")
        .await
        .unwrap_or(0);
    assert!(served_by_second > 0, "the second Envoy took part");
}

#[tokio::test]
async fn consumers_get_independent_buckets() {
    let g = Stack::new()
        .ext_authz(&[])
        .ratelimit(&[])
        .orders()
        .start()
        .await;
    let alice = g.cp.consumer_key("alice").await;
    let bob = g.cp.consumer_key("bob").await;
    g.cp.api_key_route("orders", "/orders", "orders").await;
    let version =
        g.cp.apply(
            "/v1/rate-limit-policies/per-consumer",
            json!({"limit": {"requests": 60, "per": "minute"}, "enforcement": "quota",
                   "by": ["consumer"], "routes": ["orders"]}),
        )
        .await;
    g.cp.until_converged(version).await;
    let url = g.envoy.url("/orders");
    let with = |key: &str| vec![("x-api-key".to_owned(), key.to_owned())];
    let _ = g.envoy.send("/orders", &[("x-api-key", &alice)]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, limited) = hammer(url, with(&alice), 2, Duration::from_secs(2)).await;
    assert!(limited > 0, "alice is limited");
    assert_eq!(
        g.envoy.send("/orders", &[("x-api-key", &bob)]).await.status,
        200,
        "bob's bucket is his own"
    );
}

#[tokio::test]
async fn quota_policies_envoy_cannot_enforce_are_refused() {
    let g = Stack::new()
        .orders()
        .route("orders", "/orders", "orders")
        .start()
        .await;
    let refused = |body: Value| {
        let g = &g;
        async move {
            let answer = g.cp.put("/v1/rate-limit-policies/q", body).await;
            assert_eq!(answer.status(), 422);
            answer.json::<Value>().await.expect("problem")
        }
    };
    let sliding = refused(
        json!({"limit": {"requests": 5, "per": "minute"}, "enforcement": "quota",
        "algorithm": "sliding_window", "routes": ["orders"]}),
    )
    .await;
    assert_eq!(sliding["errors"][0]["field"], "algorithm", "{sliding}");
    let shadow = refused(
        json!({"limit": {"requests": 5, "per": "minute"}, "enforcement": "quota",
        "shadow": true, "routes": ["orders"]}),
    )
    .await;
    assert_eq!(shadow["errors"][0]["field"], "shadow", "{shadow}");
    g.cp.apply(
        "/v1/rate-limit-policies/first",
        json!({"limit": {"requests": 5, "per": "minute"}, "enforcement": "quota", "routes": ["orders"]}),
    )
    .await;
    let second = refused(
        json!({"limit": {"requests": 9, "per": "minute"}, "enforcement": "quota", "global": true}),
    )
    .await;
    let detail = second.to_string();
    assert!(
        detail.contains("first") && detail.contains("orders"),
        "{detail}"
    );
}

/// ratelimit-service gone: Envoy keeps enforcing its last assignment (it
/// holds for several reporting intervals) instead of letting everything
/// through; the service counts what Envoys reported while it was there. A
/// new instance on the same address gets Envoy's reports again, with no
/// restart of anything else.
#[tokio::test]
async fn envoy_keeps_its_assignment_when_ratelimit_service_dies() {
    let mut g = quota_gateway(json!({"limit": {"requests": 600, "per": "minute"},
        "enforcement": "quota", "routes": ["orders"]}))
    .await;
    let url = g.envoy.url("/orders");
    open_bucket(&url).await;
    let (_, limited) = hammer(url.clone(), Vec::new(), 2, Duration::from_secs(2)).await;
    assert!(limited > 0, "limited while the service runs");
    // Envoy reports every few seconds: wait for one to be counted.
    let denied = |m: &str| {
        m.lines().any(|l| {
            l.starts_with("gatehouse_ratelimit_quota_denied_total{policy=\"fleet\"}")
                && !l.ends_with(" 0")
        })
    };
    eventually(Duration::from_secs(15), "a report with denials", || async {
        denied(&g.limiter().metrics().await)
    })
    .await;
    let metrics = g.limiter().metrics().await;
    assert!(
        metrics.contains("gatehouse_ratelimit_quota_streams 1"),
        "{metrics}"
    );
    let port = g.limiter().addr.port();
    g.limiter.as_mut().expect("limiter").kill().await;
    let (ok, limited) = hammer(url.clone(), Vec::new(), 2, Duration::from_secs(2)).await;
    assert!(
        limited > 0,
        "still limited without the service ({ok} admitted)"
    );
    assert!(ok <= 40, "{ok} admitted in 2 s at 10 a second");

    let back = gatehouse_e2e::Sidecar::ratelimit(g.cp.xds, port, &[]).await;
    eventually(
        Duration::from_secs(20),
        "Envoy reporting to the new instance",
        || async {
            let _ = client().get(&url).send().await;
            back.metrics()
                .await
                .contains("gatehouse_ratelimit_quota_streams 1")
        },
    )
    .await;
    let (_, limited) = hammer(url, Vec::new(), 2, Duration::from_secs(2)).await;
    assert!(limited > 0, "limited again");
}

/// Two ratelimit-service instances, each serving its own Envoy, share one
/// limit through Redis: each takes the part of it its Envoy's demand is of
/// the fleet's.
#[tokio::test]
async fn two_ratelimit_instances_share_one_limit_through_redis() {
    let redis = gatehouse_e2e::redis::RedisServer::start().await;
    let url = format!("--redis-url={}", redis.url());
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let policy = json!({"limit": {"requests": 1200, "per": "minute"},
                            "enforcement": "quota", "routes": ["orders"]});
        gateways.push(Stack::orders_under_policy(&[&url], policy).await);
    }
    let urls: Vec<String> = gateways.iter().map(|g| g.envoy.url("/orders")).collect();
    // Both Envoys report demand (every 5 s) before the measurement.
    let both = |clients, run| {
        let urls = urls.clone();
        async move {
            tokio::join!(
                hammer(urls[0].clone(), Vec::new(), clients, run),
                hammer(urls[1].clone(), Vec::new(), clients, run)
            )
        }
    };
    both(1, Duration::from_secs(7)).await;
    let (first, second) = both(4, Duration::from_secs(4)).await;
    let results = [first, second];
    let ok: u64 = results.iter().map(|(ok, _)| ok).sum();
    assert!(
        results.iter().all(|(_, limited)| *limited > 0),
        "{results:?}"
    );
    // 20 a second for both: 80 in 4 s, plus a refill's worth each; each
    // instance handing out the whole limit would admit about twice that.
    assert!((50..=130).contains(&ok), "{ok} admitted: {results:?}");
    let keys = redis.cli(&["KEYS", "gh:quota:*"]).await;
    assert!(keys.contains("fleet"), "the shared ledger: {keys}");
}

/// After ratelimit-service is gone and the last assignment has expired
/// (its lifetime, then a grace of reusing it), each policy falls back to
/// its `on_store_failure`: `closed` refuses everything, `open` allows
/// everything.
#[tokio::test]
async fn expired_assignments_fall_back_to_the_policys_failure_mode() {
    let mut g = quota_gateway(json!({"limit": {"requests": 600, "per": "minute"},
        "enforcement": "quota", "on_store_failure": "closed", "routes": ["orders"]}))
    .await;
    g.cp.apply(
        "/v1/routes/lenient",
        json!({"match": {"path_prefix": "/lenient"}, "destination": {"service": "orders"}}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/rate-limit-policies/lenient",
            json!({"limit": {"requests": 600, "per": "minute"}, "enforcement": "quota",
                   "on_store_failure": "open", "routes": ["lenient"]}),
        )
        .await;
    g.cp.until_converged(version).await;
    let strict = g.envoy.url("/orders");
    let lenient = g.envoy.url("/lenient");
    open_bucket(&strict).await;
    open_bucket(&lenient).await;
    let (a, b) = tokio::join!(
        hammer(strict.clone(), Vec::new(), 2, Duration::from_secs(2)),
        hammer(lenient.clone(), Vec::new(), 2, Duration::from_secs(2)),
    );
    assert!(a.1 > 0 && b.1 > 0, "both limited: {a:?} {b:?}");
    g.limiter.as_mut().expect("limiter").kill().await;

    // Lifetime (at most 15 s) plus the 10 s grace, and a margin.
    let statuses = |url: String| async move {
        let http = client();
        let mut seen = Vec::new();
        for _ in 0..20 {
            if let Ok(r) = http.get(&url).send().await {
                seen.push(r.status().as_u16());
            }
        }
        seen
    };
    eventually(
        Duration::from_secs(40),
        "open: everything allowed",
        || async { statuses(lenient.clone()).await == [200; 20] },
    )
    .await;
    // A live assignment would refill within a second: closed refuses all.
    eventually(
        Duration::from_secs(10),
        "closed: everything refused",
        || async {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            statuses(strict.clone()).await == [429; 20]
        },
    )
    .await;
}
