//! Rate limiting benchmarks (BENCHMARKS.md, "Rate limiting"): in-process
//! `ShouldRateLimit` decisions per second on the in-memory store, with one
//! and three descriptors per request.

use std::time::Instant;

use crate::side_by_side::{self, Variant};

use gatehouse_proto::{
    ratelimit as rl,
    ratelimit_common::{RateLimitDescriptor, rate_limit_descriptor::Entry},
    ratelimit_service::{RateLimitRequest, rate_limit_response::Code},
};
use gatehouse_ratelimit_service::{
    counters::{Counters, memory::MemoryStore},
    metrics::Metrics,
    rules::Rules,
    server::decide,
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
            ..Default::default()
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
    let store = Counters::Memory(MemoryStore::default());
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
    let store = std::sync::Arc::new(Counters::redis(
        gatehouse_ratelimit_service::counters::redis::RedisStore::new(
            &server.url(),
            std::time::Duration::from_millis(1000),
        )
        .expect("redis client"),
    ));
    for descriptors in [1, 3] {
        let batch = std::sync::Arc::new(batch(descriptors));
        let (rules, store, metrics) = (rules.clone(), store.clone(), Metrics::default());
        let latencies = crate::load::closed_loop(seconds, concurrency, move |i| {
            let (rules, store, batch, metrics) =
                (rules.clone(), store.clone(), batch.clone(), metrics.clone());
            async move {
                let response = decide(&rules, &store, &batch[i % batch.len()], &metrics)
                    .await
                    .expect("decision");
                assert_eq!(
                    metrics.degraded_decisions.get(),
                    0,
                    "Redis failed during the run"
                );
                std::hint::black_box(response);
            }
        })
        .await;
        report(
            &format!(
                "ShouldRateLimit decided over Redis (loopback), {descriptors} descriptor(s), {concurrency} concurrent"
            ),
            &latencies,
            seconds,
        );
    }
}

/// A no-op rate limit service: always OK, adds nothing.
#[derive(Clone, Copy)]
struct NoopRls {
    /// Answer as Gatehouse does under the limit: a status per descriptor
    /// and the `RateLimit-*` headers Envoy adds to the response.
    with_headers: bool,
}

#[tonic::async_trait]
impl gatehouse_proto::ratelimit_service::rate_limit_service_server::RateLimitService for NoopRls {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<gatehouse_proto::ratelimit_service::RateLimitResponse>, tonic::Status>
    {
        use gatehouse_proto::ratelimit_service::rate_limit_response::{
            DescriptorStatus, RateLimit, rate_limit::Unit,
        };
        let mut response = gatehouse_proto::ratelimit_service::RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        };
        if self.with_headers {
            let status = DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: u32::MAX,
                    unit: Unit::Minute as i32,
                    ..Default::default()
                }),
                limit_remaining: u32::MAX - 1,
                duration_until_reset: Some(gatehouse_proto::protobuf::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                ..Default::default()
            };
            response.statuses = vec![status; request.get_ref().descriptors.len()];
            let header = |key: &str, value: &str| gatehouse_proto::core::HeaderValue {
                key: key.to_owned(),
                value: value.to_owned(),
                ..Default::default()
            };
            response.response_headers_to_add = vec![
                header("ratelimit-limit", "4294967295"),
                header("ratelimit-remaining", "4294967294"),
                header("ratelimit-reset", "30"),
            ];
        }
        Ok(tonic::Response::new(response))
    }
}

/// Serves the no-op rate limit service on `port` (as its own process).
pub async fn serve_noop(port: u16, with_headers: bool) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let routes = tonic::service::Routes::new(
        gatehouse_proto::ratelimit_service::rate_limit_service_server::RateLimitServiceServer::new(
            NoopRls { with_headers },
        ),
    );
    let _ = gatehouse_service_kit::serve(listener, routes, std::future::pending()).await;
}

/// Envoy with `local_ratelimit` (a limit never reached), statically configured.
fn local_ratelimit_bootstrap(proxy_port: u16, upstream: std::net::SocketAddr) -> String {
    let routes = r#"              - match: {prefix: "/limited"}
                route: {cluster: upstream}
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: local
                    token_bucket: {max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s}
                    filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: le}
                    filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: lf}
"#;
    let filter = r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: local
"#;
    crate::static_envoy(proxy_port, upstream, routes, filter)
}

pub(crate) async fn start_noop_rls(
    with_headers: bool,
) -> (std::net::SocketAddr, tokio::process::Child) {
    let port = gatehouse_e2e::free_port();
    let child = tokio::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["noop-rls", "--port", &port.to_string()])
        .args(with_headers.then_some("--with-headers"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the no-op rate limit service");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    gatehouse_e2e::eventually(
        std::time::Duration::from_secs(10),
        "no-op RLS to listen",
        || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await;
    (addr, child)
}

/// A control plane and Envoy whose ratelimit cluster points at `rls`:
/// /bare (no limit) and /limited (a per-client-IP limit never reached).
async fn limited_gateway(
    rls: std::net::SocketAddr,
    upstream: &gatehouse_e2e::Upstream,
) -> (gatehouse_e2e::ControlPlane, gatehouse_e2e::Envoy) {
    gateway_enforcing(rls, upstream, "exact").await
}

/// [`limited_gateway`] with the limit's `enforcement` (`exact`, `quota`).
async fn gateway_enforcing(
    rls: std::net::SocketAddr,
    upstream: &gatehouse_e2e::Upstream,
    enforcement: &str,
) -> (gatehouse_e2e::ControlPlane, gatehouse_e2e::Envoy) {
    use serde_json::json;
    let (cp, envoy) = crate::gateway_with(upstream, |options| {
        options.ratelimit_addr = Some(rls);
    })
    .await;
    for name in ["bare", "limited"] {
        crate::route_to_up(&cp, name, None).await;
    }
    cp.apply(
        "/v1/rate-limit-policies/per-ip",
        json!({"limit": {"requests": 1_000_000_000, "per": "second"}, "by": ["client_ip"],
               "routes": ["limited"], "enforcement": enforcement}),
    )
    .await;
    (cp, envoy)
}

/// On the quota gateway: /jwtq, a JWT verified in Envoy (`verify_in:
/// envoy`, Envoy's JWT cache on) under a per-consumer quota policy never
/// reached, and /jwtonly, the same JWT route without a limit. Returns the
/// headers of a valid request.
async fn jwt_quota_route(cp: &gatehouse_e2e::ControlPlane) -> crate::auth::Headers {
    use gatehouse_e2e::tokens::{TestKey, claims, jwks};
    use serde_json::json;

    use crate::auth::{AUD, ISS};
    let key = TestKey::rsa("rs");
    cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks": jwks(&[&key]), "algorithms": ["RS256"], "audiences": [AUD]}),
    )
    .await;
    // And the same JWT route without a limit: what the JWT alone costs.
    for name in ["jwtq", "jwtonly"] {
        crate::route_to_up(
            cp,
            name,
            Some(json!({"method": "jwt", "verify_in": "envoy"})),
        )
        .await;
    }
    cp.apply(
        "/v1/rate-limit-policies/per-consumer",
        json!({"limit": {"requests": 1_000_000_000, "per": "second"}, "by": ["consumer"],
               "routes": ["jwtq"], "enforcement": "quota"}),
    )
    .await;
    let token = key.sign(&claims(ISS, AUD, "bench"));
    vec![("authorization".to_owned(), format!("Bearer {token}"))]
}

/// Through Envoy, side by side: no limit, a no-op RLS (the floor),
/// Gatehouse on Redis, a quota policy (decided in Envoy over RLQS),
/// Envoy's `local_ratelimit`.
/// `only` names the variants to run (`bare`, `floor`, `floor-headers`,
/// `memory`, `redis`, `leases`, `quota`, `jwt`, `jwt-quota`, `local`); empty runs them
/// all. Fewer
/// variants put the slices compared closer together in time.
pub async fn through_envoy(seconds: u64, rounds: usize, connections: u32, only: &[String]) {
    let upstream = gatehouse_e2e::Upstream::start("up").await;
    let redis = gatehouse_e2e::redis::RedisServer::start().await;
    let rl_port = gatehouse_e2e::free_port();
    let rl_addr = std::net::SocketAddr::from(([127, 0, 0, 1], rl_port));
    let (cp, envoy) = limited_gateway(rl_addr, &upstream).await;
    let url = format!("--redis-url={}", redis.url());
    let limiter =
        gatehouse_e2e::Sidecar::ratelimit(cp.xds, rl_port, &[&url, "--redis-lease-max=0"]).await;
    let (noop, noop_process) = start_noop_rls(false).await;
    let (_noop_cp, noop_envoy) = limited_gateway(noop, &upstream).await;
    let (noop_headers, noop_headers_process) = start_noop_rls(true).await;
    let (_noop_headers_cp, noop_headers_envoy) = limited_gateway(noop_headers, &upstream).await;
    let memory_port = gatehouse_e2e::free_port();
    let memory_addr = std::net::SocketAddr::from(([127, 0, 0, 1], memory_port));
    let (memory_cp, memory_envoy) = limited_gateway(memory_addr, &upstream).await;
    let memory = gatehouse_e2e::Sidecar::ratelimit(memory_cp.xds, memory_port, &[]).await;
    // The same service on Redis with its default leases (up to 100 hits),
    // sharing the Redis.
    let leasing_port = gatehouse_e2e::free_port();
    let leasing_addr = std::net::SocketAddr::from(([127, 0, 0, 1], leasing_port));
    let (leasing_cp, leasing_envoy) = limited_gateway(leasing_addr, &upstream).await;
    let leasing = gatehouse_e2e::Sidecar::ratelimit(leasing_cp.xds, leasing_port, &[&url]).await;
    // A quota policy: Envoy decides from its assignment, no call per request.
    let quota_port = gatehouse_e2e::free_port();
    let quota_addr = std::net::SocketAddr::from(([127, 0, 0, 1], quota_port));
    let (quota_cp, quota_envoy) = gateway_enforcing(quota_addr, &upstream, "quota").await;
    let quota = gatehouse_e2e::Sidecar::ratelimit(quota_cp.xds, quota_port, &[]).await;
    let jwt_headers = jwt_quota_route(&quota_cp).await;
    let static_port = gatehouse_e2e::free_port();
    let static_envoy = gatehouse_e2e::Envoy::start_static(
        &local_ratelimit_bootstrap(static_port, upstream.addr),
        static_port,
    )
    .await;
    let none: crate::auth::Headers = Vec::new();
    for url in [
        envoy.url("/limited"),
        noop_envoy.url("/limited"),
        noop_headers_envoy.url("/limited"),
        memory_envoy.url("/limited"),
        leasing_envoy.url("/limited"),
        quota_envoy.url("/limited"),
        static_envoy.url("/limited"),
    ] {
        crate::auth::until_ok(&url, &none).await;
    }
    crate::auth::until_ok(&quota_envoy.url("/jwtq"), &jwt_headers).await;
    const BARE: &str = "bare Envoy (no limit)";
    const FLOOR: &str = "Envoy + no-op RLS (floor)";
    const FLOOR_HEADERS: &str = "Envoy + no-op RLS with RateLimit headers";
    const MEMORY: &str = "Envoy + Gatehouse RLS in memory";
    const REDIS: &str = "Envoy + Gatehouse RLS on Redis, no leases (every request in Redis)";
    const REDIS_LEASING: &str = "Envoy + Gatehouse RLS on Redis (default: leases of up to 100)";
    const QUOTA: &str = "Envoy + Gatehouse quota policy (RLQS: decided in Envoy)";
    const JWT_QUOTA: &str =
        "Envoy + JWT verified in Envoy + per-consumer quota policy (no call out of Envoy)";
    const JWT_ONLY: &str = "Envoy + JWT verified in Envoy (no limit)";
    const LOCAL: &str = "Envoy local_ratelimit (static)";
    let variant = |name,
                   envoy: &gatehouse_e2e::Envoy,
                   path,
                   services: &[(&'static str, Option<u32>)]| Variant {
        name,
        url: envoy.url(path),
        headers: &none,
        processes: [("envoy", envoy.pid())]
            .into_iter()
            .chain(services.iter().copied())
            .collect(),
    };
    let variants: Vec<_> = [
        ("bare", variant(BARE, &envoy, "/bare", &[])),
        (
            "floor",
            variant(
                FLOOR,
                &noop_envoy,
                "/limited",
                &[("service", noop_process.id())],
            ),
        ),
        (
            "floor-headers",
            variant(
                FLOOR_HEADERS,
                &noop_headers_envoy,
                "/limited",
                &[("service", noop_headers_process.id())],
            ),
        ),
        (
            "memory",
            variant(
                MEMORY,
                &memory_envoy,
                "/limited",
                &[("service", memory.pid())],
            ),
        ),
        (
            "redis",
            variant(
                REDIS,
                &envoy,
                "/limited",
                &[("service", limiter.pid()), ("redis", redis.pid())],
            ),
        ),
        (
            "leases",
            variant(
                REDIS_LEASING,
                &leasing_envoy,
                "/limited",
                &[("service", leasing.pid()), ("redis", redis.pid())],
            ),
        ),
        (
            "quota",
            variant(QUOTA, &quota_envoy, "/limited", &[("service", quota.pid())]),
        ),
        (
            "jwt",
            Variant {
                headers: &jwt_headers,
                ..variant(JWT_ONLY, &quota_envoy, "/jwtonly", &[])
            },
        ),
        (
            "jwt-quota",
            Variant {
                headers: &jwt_headers,
                ..variant(
                    JWT_QUOTA,
                    &quota_envoy,
                    "/jwtq",
                    &[("service", quota.pid())],
                )
            },
        ),
        ("local", variant(LOCAL, &static_envoy, "/limited", &[])),
    ]
    .into_iter()
    .filter(|(key, _)| only.is_empty() || only.iter().any(|o| o == key))
    .map(|(_, v)| v)
    .collect();
    println!(
        "\nthrough Envoy (--concurrency 1), wrk -t1 -c{connections}, {rounds} rounds of {seconds} s per variant, interleaved:"
    );
    let measured = side_by_side::interleaved(&variants, rounds, seconds, connections).await;
    measured.print();
    println!("shares, taken within each round:");
    measured.print_ratio(REDIS, FLOOR);
    measured.print_ratio(MEMORY, FLOOR);
    measured.print_ratio(REDIS_LEASING, FLOOR);
    measured.print_ratio(REDIS, FLOOR_HEADERS);
    measured.print_ratio(REDIS_LEASING, FLOOR_HEADERS);
    measured.print_ratio(MEMORY, FLOOR_HEADERS);
    measured.print_ratio(FLOOR_HEADERS, FLOOR);
    measured.print_ratio(FLOOR, BARE);
    measured.print_ratio(QUOTA, BARE);
    measured.print_ratio(JWT_QUOTA, BARE);
    measured.print_ratio(JWT_ONLY, BARE);
    measured.print_ratio(JWT_QUOTA, JWT_ONLY);
    measured.print_ratio(LOCAL, BARE);
    if only.is_empty() || only.iter().any(|o| o == "leases") {
        print_lease_share(REDIS_LEASING, &leasing).await;
    }
    cp.assert_no_nacks().await;
}

/// How many of `service`'s requests so far were decided from leases.
async fn print_lease_share(what: &str, service: &gatehouse_e2e::Sidecar) {
    let metrics = service.metrics().await;
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (requests, from_leases, script_calls) = (
        count("gatehouse_ratelimit_redis_requests_total"),
        count("gatehouse_ratelimit_lease_requests_total"),
        count("gatehouse_ratelimit_redis_script_calls_total"),
    );
    println!(
        "{what}: {:.1} % of requests decided from leases, {script_calls} script calls for {requests} requests decided in Redis",
        100.0 * from_leases / (from_leases + requests).max(1.0)
    );
}

/// gRPC load straight at ratelimit-service, over one HTTP/2 connection (as
/// Envoy does): a closed loop of `concurrency` callers for throughput, then
/// an open loop at `rate` decisions per second for latency.
pub async fn grpc(seconds: u64, concurrency: usize, rate: u32) {
    use serde_json::json;

    let redis = gatehouse_e2e::redis::RedisServer::start().await;
    let cp = gatehouse_e2e::ControlPlane::start(gatehouse_e2e::ControlPlaneOptions::new(
        gatehouse_e2e::free_port(),
    ))
    .await;
    for name in ["per-consumer", "per-ip", "per-route"] {
        cp.apply(
            &format!("/v1/rate-limit-policies/{name}"),
            json!({"limit": {"requests": 1_000_000_000, "per": "second"}, "global": true}),
        )
        .await;
    }
    let url = format!("--redis-url={}", redis.url());
    let on_redis =
        gatehouse_e2e::Sidecar::ratelimit(cp.xds, 0, &[&url, "--redis-lease-max=0"]).await;
    let leasing = gatehouse_e2e::Sidecar::ratelimit(cp.xds, 0, &[&url]).await;
    let in_memory = gatehouse_e2e::Sidecar::ratelimit(cp.xds, 0, &[]).await;
    let (noop, _noop_process) = start_noop_rls(false).await;
    // Side by side: the same load at a server that answers OK at once (the
    // floor of a gRPC hop on this machine), at ratelimit-service in memory
    // and at ratelimit-service on Redis.
    for descriptors in [1, 3] {
        for (what, addr) in [
            ("no-op RLS", noop),
            ("ratelimit-service in memory", in_memory.addr),
            ("ratelimit-service on Redis, no leases", on_redis.addr),
            (
                "ratelimit-service on Redis (default: leases of up to 100)",
                leasing.addr,
            ),
        ] {
            let call = grpc_call(addr, descriptors).await;
            let must_succeed = call.clone();
            let latencies = crate::load::closed_loop(seconds, concurrency, move |i| {
                let answered = must_succeed(i);
                async move { assert!(answered.await, "a decision failed") }
            })
            .await;
            report(
                &format!(
                    "gRPC ShouldRateLimit to {what}, {descriptors} descriptor(s), {concurrency} concurrent"
                ),
                &latencies,
                seconds,
            );
            let (latencies, failed) = crate::load::open_loop(rate, seconds, call).await;
            report(
                &format!(
                    "gRPC ShouldRateLimit to {what}, {descriptors} descriptor(s), open loop at {rate}/s, {failed} failed"
                ),
                &latencies,
                seconds,
            );
        }
        print_lease_share(
            &format!("ratelimit-service with leases, after the {descriptors}-descriptor runs"),
            &leasing,
        )
        .await;
    }
}

/// One `ShouldRateLimit` call over a fresh connection to `addr`: the i-th
/// asks about the i-th request of a [`batch`]; whether it was answered OK.
async fn grpc_call(
    addr: std::net::SocketAddr,
    descriptors: usize,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    use gatehouse_proto::ratelimit_service::rate_limit_service_client::RateLimitServiceClient;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    let batch = std::sync::Arc::new(batch(descriptors));
    let client = RateLimitServiceClient::new(channel);
    move |i| {
        let (mut client, batch) = (client.clone(), batch.clone());
        Box::pin(async move {
            client
                .should_rate_limit(batch[i % batch.len()].clone())
                .await
                .is_ok_and(|answer| answer.into_inner().overall_code == Code::Ok as i32)
        })
    }
}

fn report(what: &str, latencies: &[std::time::Duration], seconds: u64) {
    println!(
        "{what}: {:.0} decisions/s, p50 {} p99 {}",
        latencies.len() as f64 / seconds as f64,
        crate::us(crate::percentile(latencies, 0.5)),
        crate::us(crate::percentile(latencies, 0.99)),
    );
}
