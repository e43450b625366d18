//! Rate limiting end to end: admin API → control plane → (Envoy, ext-authz,
//! ratelimit-service) → real upstream, with the in-memory counter store.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Sidecar, Stack, eventually, free_port, redis::RedisServer,
};
use gatehouse_proto::{
    ratelimit as rl,
    ratelimit_common::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    ratelimit_service::{
        RateLimitRequest, rate_limit_response::Code,
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use serde_json::{Value, json};

async fn limited_gateway() -> Stack {
    limited_gateway_with(&[]).await
}

/// ext-authz, ratelimit-service (with extra flags: a Redis URL, say), Envoy
/// and the `orders` upstream.
async fn limited_gateway_with(limiter_args: &[&str]) -> Stack {
    Stack::new()
        .ext_authz(&[])
        .ratelimit(limiter_args)
        .orders()
        .start()
        .await
}

async fn key_for(cp: &ControlPlane, consumer: &str, plan: Option<&str>) -> String {
    let body = match plan {
        Some(plan) => json!({ "plan": plan }),
        None => json!({}),
    };
    cp.apply(&format!("/v1/consumers/{consumer}"), body).await;
    let created: Value = cp
        .post(&format!("/v1/consumers/{consumer}/keys"), json!({}))
        .await
        .json()
        .await
        .expect("json");
    created["key"].as_str().expect("key").to_owned()
}

async fn until_limited(g: &Stack, version: u64) {
    g.cp.until_converged(version).await;
}

/// Plans `free` (2 per minute) and `pro` (100 per minute), in force everywhere.
async fn free_and_pro_plans(g: &Stack) {
    g.cp.apply(
        "/v1/plans/pro",
        json!({"limits": [{"requests": 100, "per": "minute"}]}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/plans/free",
            json!({"limits": [{"requests": 2, "per": "minute"}]}),
        )
        .await;
    until_limited(g, version).await;
}

#[tokio::test]
async fn per_consumer_limits_answer_429_with_ratelimit_headers() {
    let g = limited_gateway().await;
    let alice = key_for(&g.cp, "alice", None).await;
    let bob = key_for(&g.cp, "bob", None).await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key"}}),
    )
    .await;
    g.envoy
        .until_answer("/orders", &[("x-api-key", &alice)], 200)
        .await;
    let version = g
        .cp
        .apply(
            "/v1/rate-limit-policies/per-consumer",
            json!({"limit": {"requests": 3, "per": "minute"}, "by": ["consumer"], "routes": ["orders"]}),
        )
        .await;
    until_limited(&g, version).await;

    for remaining in ["2", "1", "0"] {
        let ok = g.envoy.send("/orders", &[("x-api-key", &alice)]).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("ratelimit-limit"), Some("3"));
        assert_eq!(ok.header("ratelimit-remaining"), Some(remaining));
        assert!(ok.header("ratelimit-reset").is_some());
    }
    let limited = g.envoy.send("/orders", &[("x-api-key", &alice)]).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    // The JSON body of ext-authz's refusals (and of a quota policy's 429).
    assert_eq!(limited.header("content-type"), Some("application/json"));
    assert_eq!(limited.body["error"], "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another consumer has a counter of its own.
    assert_eq!(
        g.envoy.send("/orders", &[("x-api-key", &bob)]).await.status,
        200
    );

    // Routes that fail open identify consumers just the same.
    g.cp.apply(
        "/v1/routes/catalog",
        json!({"match": {"path_prefix": "/catalog"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key", "failure_mode": "open"}}),
    )
    .await;
    let version = g
        .cp
        .apply(
            "/v1/rate-limit-policies/per-consumer",
            json!({"limit": {"requests": 3, "per": "minute"}, "by": ["consumer"], "routes": ["orders", "catalog"]}),
        )
        .await;
    until_limited(&g, version).await;
    let catalog = g.envoy.send("/catalog", &[("x-api-key", &alice)]).await;
    assert_eq!(catalog.status, 429, "alice's quota is spent on catalog too");
    assert_eq!(
        g.envoy
            .send("/catalog", &[("x-api-key", &bob)])
            .await
            .status,
        200
    );
    g.cp.assert_no_nacks().await;
    let metrics = g.limiter().metrics().await;
    assert!(
        metrics.contains("gatehouse_ratelimit_decisions_total{result=\"over_limit\",limit=\"policy:per-consumer\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn per_ip_limits_hold_on_public_routes_whatever_x_forwarded_for_says() {
    let g = limited_gateway().await;
    g.cp.apply(
        "/v1/routes/public",
        json!({"match": {"path_prefix": "/public"}, "destination": {"service": "orders"}}),
    )
    .await;
    g.envoy.until_answer("/public", &[], 200).await;
    let version = g
        .cp
        .apply(
            "/v1/rate-limit-policies/per-ip",
            json!({"limit": {"requests": 2, "per": "minute"}, "by": ["client_ip"], "routes": ["public"],
                   "algorithm": "sliding_window"}),
        )
        .await;
    until_limited(&g, version).await;
    assert_eq!(g.envoy.send("/public", &[]).await.status, 200);
    assert_eq!(g.envoy.send("/public", &[]).await.status, 200);
    assert_eq!(g.envoy.send("/public", &[]).await.status, 429);
    for spoofed in ["203.0.113.7", "198.51.100.1, 203.0.113.9"] {
        let answer = g
            .envoy
            .send("/public", &[("x-forwarded-for", spoofed)])
            .await;
        assert_eq!(
            answer.status, 429,
            "X-Forwarded-For {spoofed} escaped the limit"
        );
    }
}

#[tokio::test]
async fn plans_set_quotas_and_shadow_policies_never_block() {
    let g = limited_gateway().await;
    let free = key_for(&g.cp, "carol", Some("free")).await;
    let pro = key_for(&g.cp, "dave", Some("pro")).await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key"}}),
    )
    .await;
    g.envoy
        .until_answer("/orders", &[("x-api-key", &free)], 200)
        .await;
    g.cp.apply(
        "/v1/rate-limit-policies/watch",
        json!({"limit": {"requests": 1, "per": "minute"}, "by": ["consumer"], "global": true, "shadow": true}),
    )
    .await;
    free_and_pro_plans(&g).await;
    assert_eq!(
        g.envoy
            .send("/orders", &[("x-api-key", &free)])
            .await
            .status,
        200
    );
    assert_eq!(
        g.envoy
            .send("/orders", &[("x-api-key", &free)])
            .await
            .status,
        200
    );
    assert_eq!(
        g.envoy
            .send("/orders", &[("x-api-key", &free)])
            .await
            .status,
        429,
        "free plan: 2/min"
    );
    for _ in 0..5 {
        // The shadow policy (1/min) is exceeded but never blocks.
        assert_eq!(
            g.envoy.send("/orders", &[("x-api-key", &pro)]).await.status,
            200
        );
    }
    let metrics = g.limiter().metrics().await;
    assert!(
        metrics.contains("result=\"shadow_over_limit\",limit=\"policy:watch\""),
        "{metrics}"
    );
}

/// Routes whose JWTs Envoy verifies make no ext-authz call, so no plan
/// arrives in the request's metadata: ratelimit-service looks it up from
/// the consumer Envoy named, and follows plan changes.
#[tokio::test]
async fn plan_quotas_hold_on_routes_whose_jwts_envoy_verifies() {
    use gatehouse_e2e::tokens::{TestKey, claims, jwks};
    const ISS: &str = "https://idp.test/";
    const AUD: &str = "orders-api";
    let g = limited_gateway().await;
    let key = TestKey::rsa("k1");
    g.cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks": jwks(&[&key]), "algorithms": ["RS256"], "audiences": [AUD]}),
    )
    .await;
    g.cp.apply("/v1/consumers/erin", json!({"plan": "free"}))
        .await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "jwt", "verify_in": "envoy"}}),
    )
    .await;
    let erin = format!("Bearer {}", key.sign(&claims(ISS, AUD, "erin")));
    let stranger = format!("Bearer {}", key.sign(&claims(ISS, AUD, "frank")));
    g.envoy
        .until_answer("/orders", &[("authorization", &erin)], 200)
        .await;
    free_and_pro_plans(&g).await;
    for _ in 0..2 {
        assert_eq!(
            g.envoy
                .send("/orders", &[("authorization", &erin)])
                .await
                .status,
            200
        );
    }
    let limited = g.envoy.send("/orders", &[("authorization", &erin)]).await;
    assert_eq!(limited.status, 429, "free plan: 2/min");
    assert_eq!(limited.header("ratelimit-limit"), Some("2"));
    assert!(limited.header("retry-after").is_some());
    // A consumer nobody registered has no plan, hence no plan quota.
    for _ in 0..3 {
        assert_eq!(
            g.envoy
                .send("/orders", &[("authorization", &stranger)])
                .await
                .status,
            200
        );
    }
    // Moving erin to pro reaches ratelimit-service: her quota is pro's.
    let version =
        g.cp.apply("/v1/consumers/erin", json!({"plan": "pro"}))
            .await;
    until_limited(&g, version).await;
    let upgraded = g.envoy.send("/orders", &[("authorization", &erin)]).await;
    assert_eq!(upgraded.status, 200);
    assert_eq!(upgraded.header("ratelimit-limit"), Some("100"));
}

/// A stopping instance gives back every hit it holds: after SIGTERM,
/// Redis counts exactly the admitted requests, so a rolling restart keeps
/// no quota from the other instances.
#[tokio::test]
async fn a_stopping_instance_gives_its_leased_hits_back() {
    let redis = RedisServer::start().await;
    let cp = ControlPlane::start(ControlPlaneOptions::new(free_port())).await;
    cp.apply(
        "/v1/rate-limit-policies/drained",
        json!({"limit": {"requests": 100_000, "per": "hour"}, "global": true}),
    )
    .await;
    // Not across an hour boundary (Redis runs on this machine's clock).
    let into_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 % 3_600_000);
    if into_hour > 3_600_000 - 5_000 {
        tokio::time::sleep(Duration::from_millis(3_600_000 - into_hour + 200)).await;
    }
    let url = format!("--redis-url={}", redis.url());
    // A generous Redis timeout: on a loaded machine the 5 ms default can
    // pass, and a decision made degraded would take no lease.
    let mut limiter = Sidecar::ratelimit(cp.xds, 0, &[&url, "--redis-timeout-ms=1000"]).await;
    let mut client = RateLimitServiceClient::connect(format!("http://{}", limiter.addr))
        .await
        .expect("connect");
    let request = RateLimitRequest {
        domain: rl::DOMAIN.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "policy".into(),
                value: "drained".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    };
    for _ in 0..200 {
        let answer = client
            .should_rate_limit(request.clone())
            .await
            .expect("answer")
            .into_inner();
        assert_eq!(answer.overall_code, Code::Ok as i32);
    }
    let count = || async {
        let key = redis.cli(&["KEYS", "gh:*drained*"]).await;
        redis
            .cli(&["HGET", key.trim(), "c"])
            .await
            .trim()
            .parse::<u64>()
            .expect("a count")
    };
    assert!(count().await > 200, "the instance holds a lease");
    assert_eq!(limiter.terminate().await, Some(0), "a clean stop");
    assert_eq!(count().await, 200, "every unspent hit went back");
}

/// Three instances on skewed clocks, deciding every request in Redis and
/// then with leases (`--redis-lease-max`): one limit either way.
#[tokio::test]
async fn instances_with_clocks_30_s_apart_enforce_one_limit_through_redis() {
    let redis = RedisServer::start().await;
    let cp = ControlPlane::start(ControlPlaneOptions::new(free_port())).await;
    for policy in ["shared", "leased"] {
        cp.apply(
            &format!("/v1/rate-limit-policies/{policy}"),
            json!({"limit": {"requests": 300, "per": "minute"}, "global": true}),
        )
        .await;
    }
    // Not across a minute boundary of the true clock.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 % 60_000);
    if into_minute > 45_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into_minute + 200)).await;
    }
    let url = format!("--redis-url={}", redis.url());
    for (policy, lease) in [("shared", "0"), ("leased", "16")] {
        let lease = format!("--redis-lease-max={lease}");
        let mut instances = Vec::new();
        // Each on another runtime too: one thread, one per CPU, a pool of three.
        for (offset, threads) in [("-30s", "1"), ("+0s", "0"), ("+30s", "3")] {
            let threads = format!("--worker-threads={threads}");
            let args = [url.as_str(), "--redis-timeout-ms=1000", &threads, &lease];
            instances.push(Sidecar::ratelimit_skewed(cp.xds, &args, offset).await);
        }
        let mut clients = Vec::new();
        for instance in &instances {
            clients.push(
                RateLimitServiceClient::connect(format!("http://{}", instance.addr))
                    .await
                    .expect("connect"),
            );
        }
        let request = RateLimitRequest {
            domain: rl::DOMAIN.into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "policy".into(),
                    value: policy.into(),
                }],
                ..Default::default()
            }],
            hits_addend: 1,
        };
        let mut allowed = 0;
        for i in 0..450 {
            let client = &mut clients[i % 3];
            let answer = client
                .should_rate_limit(request.clone())
                .await
                .expect("answer")
                .into_inner();
            if answer.overall_code == Code::Ok as i32 {
                allowed += 1;
            }
        }
        assert_eq!(
            allowed, 300,
            "{lease}: one limit across instances whose clocks differ by a minute"
        );
    }
}

/// Redis killed under a running gateway: fail-open policies keep serving,
/// held to their limit by the local safety net; fail-closed ones answer 429;
/// both recover when Redis returns, without restarting anything.
#[tokio::test]
async fn redis_outage_through_envoy_fails_open_or_closed_per_policy_and_recovers() {
    // Hourly windows: no window boundary falls inside the test (unless the
    // hour is about to turn, which it waits out).
    let into_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 3600);
    if into_hour > 3580 {
        tokio::time::sleep(Duration::from_secs(3600 - into_hour + 1)).await;
    }
    let mut redis = RedisServer::start().await;
    let url = format!("--redis-url={}", redis.url());
    let g = limited_gateway_with(&[&url]).await;
    for (route, prefix) in [("open", "/open"), ("closed", "/closed")] {
        g.cp.apply(
            &format!("/v1/routes/{route}"),
            json!({"match": {"path_prefix": prefix}, "destination": {"service": "orders"}}),
        )
        .await;
    }
    g.envoy.until_answer("/closed", &[], 200).await;
    g.cp.apply(
        "/v1/rate-limit-policies/open",
        json!({"limit": {"requests": 5, "per": "hour"}, "routes": ["open"],
               "on_store_failure": "open"}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/rate-limit-policies/closed",
            json!({"limit": {"requests": 1000, "per": "hour"}, "routes": ["closed"],
                   "on_store_failure": "closed"}),
        )
        .await;
    until_limited(&g, version).await;
    assert_eq!(g.envoy.send("/open", &[]).await.status, 200);
    assert_eq!(g.envoy.send("/closed", &[]).await.status, 200);
    let counted = redis.cli(&["DBSIZE"]).await;
    assert_ne!(counted.trim(), "0", "counters live in Redis");

    redis.kill().await;
    // Hits leased before the outage (on by default) are spent without
    // Redis until their loan falls due, a second at most; after that every
    // decision needs Redis.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(g.envoy.send("/open", &[]).await.status);
    }
    assert_eq!(open[0], 200, "fail-open keeps serving: {open:?}");
    assert!(
        open.iter().filter(|s| **s == 200).count() <= 5 && open.contains(&429),
        "the local safety net holds the limit: {open:?}"
    );
    for _ in 0..3 {
        assert_eq!(
            g.envoy.send("/closed", &[]).await.status,
            429,
            "fail-closed refuses"
        );
    }
    let metrics = g.limiter().metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gatehouse_ratelimit_degraded_decisions_total") && !l.ends_with(" 0")
        ),
        "degraded decisions are counted:\n{metrics}"
    );

    redis.restart().await;
    eventually(
        Duration::from_secs(10),
        "recovery once Redis is back",
        || async { g.envoy.send("/closed", &[]).await.status == 200 },
    )
    .await;
    assert_eq!(
        g.envoy.send("/open", &[]).await.status,
        200,
        "a fresh Redis has fresh counters"
    );
}
