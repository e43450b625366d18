//! The exact path (issue 22): an API-key route with a per-consumer exact
//! limit, checked by ext-authz and counted by ratelimit-service on Redis
//! (leases on, the default), beside the same Gatehouse configuration served
//! by the zero-work fixtures (`noop-authz --with-identity`, `noop-rls
//! --with-headers`), and the two mixes (one real service, one fixture) that
//! say which service the gap belongs to. Each variant is its own control
//! plane and Envoy with the same routes and policy; the real services get
//! their configuration from the first control plane and serve every Envoy
//! that names them (the variants run one at a time).

use std::net::SocketAddr;

use gatehouse_e2e::{
    ControlPlane, Envoy, ExtAuthz, Sidecar, Upstream, free_port, redis::RedisServer,
};
use serde_json::json;

use crate::side_by_side::{Variant, interleaved};

const BARE: &str = "bare Envoy (no auth, no limit)";
const FLOOR: &str = "no-op ext_authz with identity + no-op RLS with headers (floor)";
const AUTHZ: &str = "Gatehouse ext-authz + no-op RLS";
const RLS: &str = "no-op ext_authz + Gatehouse RLS on Redis";
const FULL: &str = "Gatehouse ext-authz + Gatehouse RLS on Redis (the exact path)";

/// A control plane and Envoy whose ext_authz and rate limit clusters point
/// at `authz` and `rls`: /bare, and /key (API key, a per-consumer exact
/// limit never reached).
async fn gateway(authz: SocketAddr, rls: SocketAddr, upstream: &Upstream) -> (ControlPlane, Envoy) {
    let (cp, envoy) = crate::gateway_with(upstream, |options| {
        options.ext_authz_addr = Some(authz);
        options.ratelimit_addr = Some(rls);
    })
    .await;
    cp.apply("/v1/consumers/bench", json!({"plan": "pro"}))
        .await;
    crate::route_to_up(&cp, "bare", None).await;
    crate::route_to_up(&cp, "key", Some(json!({"method": "api_key"}))).await;
    cp.apply(
        "/v1/rate-limit-policies/per-consumer",
        json!({"limit": {"requests": 1_000_000_000, "per": "second"}, "by": ["consumer"],
               "routes": ["key"]}),
    )
    .await;
    (cp, envoy)
}

pub async fn run(seconds: u64, rounds: usize, connections: u32) {
    let upstream = Upstream::start("up").await;
    let redis = RedisServer::start().await;
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (authz_addr, rls_addr) = (loopback(free_port()), loopback(free_port()));

    let (cp, envoy) = gateway(authz_addr, rls_addr, &upstream).await;
    let authz = ExtAuthz::start(cp.xds, authz_addr.port(), &[]).await;
    let url = format!("--redis-url={}", redis.url());
    let rls = Sidecar::ratelimit(cp.xds, rls_addr.port(), &[&url]).await;
    let headers = vec![crate::bench_key_header(&cp).await];

    let (noop_authz, noop_authz_process) = crate::auth::start_noop(true).await;
    let (noop_rls, noop_rls_process) = crate::ratelimit::start_noop_rls(true).await;
    let (_floor_cp, floor_envoy) = gateway(noop_authz, noop_rls, &upstream).await;
    let (_authz_cp, authz_envoy) = gateway(authz_addr, noop_rls, &upstream).await;
    let (_rls_cp, rls_envoy) = gateway(noop_authz, rls_addr, &upstream).await;
    for envoy in [&envoy, &floor_envoy, &authz_envoy, &rls_envoy] {
        crate::auth::until_ok(&envoy.url("/key"), &headers).await;
    }

    let none = Vec::new();
    let (noop_authz_pid, noop_rls_pid) = (noop_authz_process.id(), noop_rls_process.id());
    let variant = |name, envoy: &Envoy, path, authz_pid, rls_pid| Variant {
        name,
        url: envoy.url(path),
        headers: if path == "/bare" { &none } else { &headers },
        processes: vec![
            ("envoy", envoy.pid()),
            ("ext-authz", authz_pid),
            ("ratelimit", rls_pid),
            ("redis", redis.pid()),
        ],
    };
    let variants = [
        variant(BARE, &envoy, "/bare", None, None),
        variant(FLOOR, &floor_envoy, "/key", noop_authz_pid, noop_rls_pid),
        variant(AUTHZ, &authz_envoy, "/key", authz.pid(), noop_rls_pid),
        variant(RLS, &rls_envoy, "/key", noop_authz_pid, rls.pid()),
        variant(FULL, &envoy, "/key", authz.pid(), rls.pid()),
    ];
    println!(
        "\nthrough Envoy (--concurrency 1), wrk -t1 -c{connections}, {rounds} rounds of {seconds} s per variant, interleaved:"
    );
    let measured = interleaved(&variants, rounds, seconds, connections).await;
    measured.print();
    println!("shares, taken within each round:");
    measured.print_ratio(FULL, FLOOR);
    measured.print_ratio(AUTHZ, FLOOR);
    measured.print_ratio(RLS, FLOOR);
    measured.print_ratio(FLOOR, BARE);
    cp.assert_no_nacks().await;
}
