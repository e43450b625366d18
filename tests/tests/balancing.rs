//! Load balancing, connection pools and DNS through a real Envoy (issue 20):
//! least_request avoids a slow endpoint, ring_hash keeps a key on one
//! endpoint and moves few keys when one is added, and a DNS-named service
//! really serves traffic.

use std::{collections::BTreeMap, time::Duration};

use gatehouse_e2e::{Behaviour, Stack, Upstream, client, eventually, probe};
use serde_json::{Value, json};

fn endpoints(upstreams: &[&Upstream]) -> Value {
    json!(
        upstreams
            .iter()
            .map(|u| json!({"host": "127.0.0.1", "port": u.addr.port()}))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn every_balancing_field_is_accepted_by_envoy() {
    let g = Stack::new()
        .configure(|o| o.validate_with_envoy = true)
        .start()
        .await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let services = [
        (
            "hashed",
            json!({"endpoints": endpoints(&[&a, &b]),
            "load_balancing": {"policy": "ring_hash", "hash_on": {"header": "x-user"}}}),
        ),
        (
            "sticky",
            json!({"endpoints": endpoints(&[&a, &b]),
            "load_balancing": {"policy": "maglev", "hash_on": {"cookie": {"name": "gh-sticky", "ttl_s": 3600}}}}),
        ),
        (
            "by-ip",
            json!({"endpoints": endpoints(&[&a]),
            "load_balancing": {"policy": "ring_hash", "hash_on": {"client_ip": true}}}),
        ),
        (
            "by-query",
            json!({"endpoints": endpoints(&[&a]),
            "load_balancing": {"policy": "maglev", "hash_on": {"query_parameter": "tenant"}}}),
        ),
        (
            "least",
            json!({"endpoints": endpoints(&[&a, &b]),
            "load_balancing": {"policy": "least_request", "slow_start_ms": 10000},
            "connection_pool": {"idle_timeout_ms": 30000, "max_requests_per_connection": 100}}),
        ),
        (
            "random",
            json!({"endpoints": endpoints(&[&b]), "load_balancing": {"policy": "random"}}),
        ),
        (
            "slow-start",
            json!({"endpoints": endpoints(&[&b]),
            "load_balancing": {"policy": "round_robin", "slow_start_ms": 5000}}),
        ),
        (
            "h2",
            json!({"endpoints": endpoints(&[&a]), "protocol": "http2",
            "connection_pool": {"http2_keepalive_ms": 15000, "idle_timeout_ms": 60000}}),
        ),
        (
            "named",
            json!({"endpoints": [{"host": "localhost", "port": b.addr.port()}],
            "dns": {"refresh_ms": 2000, "respect_ttl": true, "family": "v4_only"}}),
        ),
    ];
    for (name, body) in services {
        g.cp.apply(&format!("/v1/services/{name}"), body).await;
    }
    let mut version = 0;
    for (route, service) in [
        ("/hashed", "hashed"),
        ("/sticky", "sticky"),
        ("/named", "named"),
    ] {
        version =
            g.cp.apply(
                &format!("/v1/routes/r{}", &route[1..]),
                json!({"match": {"path_prefix": route}, "destination": {"service": service},
                       "host_rewrite_to_endpoint": service == "named"}),
            )
            .await;
    }
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;
    assert_eq!(g.envoy.rejected_updates().await, 0);
    // A DNS-named service (localhost) really serves traffic.
    g.envoy.until_status("/named", 200).await;
    let (status, from) = probe(&client(), &g.envoy.url("/named")).await;
    assert_eq!((status, from.as_deref()), (200, Some("b")));
    let received = b.received().pop().expect("a request");
    assert!(
        received
            .headers
            .iter()
            .any(|(n, v)| n == "host" && v.starts_with("localhost")),
        "the Host is the endpoint's name: {:?}",
        received.headers
    );
    // The cookie is set for the client to come back with.
    let sticky = client()
        .get(g.envoy.url("/sticky"))
        .send()
        .await
        .expect("answered");
    let cookie = sticky
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(cookie.starts_with("gh-sticky="), "{cookie}");
}

#[tokio::test]
async fn least_request_sends_less_to_a_slow_endpoint() {
    let g = Stack::new().start().await;
    let fast = Upstream::start("fast").await;
    let slow = Upstream::start_with("slow", Behaviour::delayed(Duration::from_millis(150))).await;
    g.cp.apply(
        "/v1/services/mixed",
        json!({"endpoints": endpoints(&[&fast, &slow]), "load_balancing": {"policy": "least_request"}}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/mixed",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "mixed"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let workers = (0..8).map(|_| {
        let url = g.envoy.url("/work");
        tokio::spawn(async move {
            let http = client();
            for _ in 0..25 {
                assert_eq!(probe(&http, &url).await.0, 200);
            }
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.expect("worker");
    }
    let (f, s) = (fast.hit_count(), slow.hit_count());
    assert!(
        s * 10 < (f + s) * 4,
        "the slow endpoint got {s} of {} (round robin would give half)",
        f + s
    );
}

#[tokio::test]
async fn ring_hash_keeps_keys_and_moves_few_when_an_endpoint_joins() {
    let g = Stack::new().start().await;
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
        Upstream::start("u3").await,
    ];
    let service = |n: usize| {
        json!({"endpoints": endpoints(&ups.iter().take(n).collect::<Vec<_>>()),
               "load_balancing": {"policy": "ring_hash", "hash_on": {"header": "x-user"}}})
    };
    g.cp.apply("/v1/services/hashed", service(3)).await;
    let version =
        g.cp.apply(
            "/v1/routes/hashed",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "hashed"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let http = client();
    let owner = |user: String| {
        let (http, url) = (http.clone(), g.envoy.url("/me"));
        async move {
            let response = http
                .get(url)
                .header("x-user", user)
                .send()
                .await
                .expect("answered");
            response
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }
    };
    // One key, many requests: one endpoint.
    let first = owner("alice".into()).await;
    for _ in 0..200 {
        assert_eq!(owner("alice".into()).await, first);
    }
    let mut before = BTreeMap::new();
    for user in 0..200 {
        before.insert(user, owner(format!("user-{user}")).await);
    }
    // A fourth endpoint joins: about a quarter of the keys move, to it.
    let version = g.cp.apply("/v1/services/hashed", service(4)).await;
    g.cp.until_converged(version).await;
    eventually(
        Duration::from_secs(10),
        "the new endpoint in the ring",
        || async {
            let mut seen = false;
            for user in 0..50 {
                seen |= owner(format!("user-{user}")).await == "u3";
            }
            seen
        },
    )
    .await;
    let (mut moved, mut to_new) = (0, 0);
    for user in 0..200 {
        let now = owner(format!("user-{user}")).await;
        if now != before[&user] {
            moved += 1;
            to_new += usize::from(now == "u3");
        }
    }
    // Envoy gives each endpoint fewer points on the ring as endpoints join,
    // so some keys also move between the others; most go to the new one.
    // (A modulo hash would move three quarters of them.)
    assert!(
        (10..=100).contains(&moved) && to_new * 2 >= moved,
        "{moved} of 200 keys moved, {to_new} to the new endpoint (about 50 expected)"
    );
}

/// A canary rolled out under load: weights 0 → 10 → 50 → 100 % changed
/// live, and not one request fails.
#[tokio::test]
async fn weights_changed_live_under_load_fail_no_request() {
    let g = Stack::new().start().await;
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    g.cp.apply("/v1/services/stable", stable.service("stable"))
        .await;
    g.cp.apply("/v1/services/canary", canary.service("canary"))
        .await;
    let split = |weight: u32| {
        json!({"match": {"path_prefix": "/"}, "destination": {"weighted": [
            {"service": "stable", "weight": 100 - weight}, {"service": "canary", "weight": weight}]}})
    };
    let version = g.cp.apply("/v1/routes/main", split(0)).await;
    g.cp.until_converged(version).await;
    g.envoy.until_status("/", 200).await;
    let load = gatehouse_e2e::load::Load::start(g.envoy.url("/live"), 300, Duration::from_secs(60));
    for weight in [10, 50, 100] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let version = g.cp.apply("/v1/routes/main", split(weight)).await;
        g.cp.until_converged(version).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.finish().await;
    assert!(report.sent > 500, "{}", report.summary());
    assert!(report.failures.is_empty(), "{}", report.summary());
    let before = stable.hit_count();
    for _ in 0..20 {
        assert_eq!(
            probe(&client(), &g.envoy.url("/")).await.1.as_deref(),
            Some("canary")
        );
    }
    assert_eq!(stable.hit_count(), before, "all on the canary at 100 %");
}
