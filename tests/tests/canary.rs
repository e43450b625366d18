//! Canary rollouts of configuration through three real Envoys: while a
//! canary runs only its node gets new versions; promote gives them to all;
//! a NACK on the canary aborts it and never reaches the other two; a canary
//! whose upstream starts failing is aborted by its analysis. Every
//! node shares the listener (SO_REUSEPORT), so per-node checks read the
//! control plane's node status and each Envoy's config dump.

use std::time::Duration;

use gatehouse_e2e::{
    Behaviour, ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, ctl::ctl,
    eventually, free_port, reqwest,
};
use serde_json::{Value, json};

/// The RDS version `node` acknowledged.
async fn rds_version(cp: &ControlPlane, node: &str) -> Option<u64> {
    let status = cp.nodes().await;
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == node)?["types"]["rds"]["acked_version"]
        .as_str()?
        .parse()
        .ok()
}

async fn until_rds(cp: &ControlPlane, node: &str, version: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("{node} to acknowledge routes of version {version}"),
        || async { rds_version(cp, node).await == Some(version) },
    )
    .await;
}

fn routes_of(dump: &Value) -> String {
    dump.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_new_versions_first_and_a_nack_never_reaches_the_rest() {
    let web = Upstream::start("web").await;
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        validate_with_envoy: true,
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    cp.apply("/v1/services/web", web.service("web")).await;
    let base = cp
        .apply(
            "/v1/routes/main",
            json!({"match": {"path_prefix": "/main"}, "destination": {"service": "web"}}),
        )
        .await;
    // The canary runs a stricter RE2 limit than the rest, as a node on new
    // settings would: what it refuses, the other two would have taken.
    let canary = Envoy::start_with_runtime(
        cp.xds,
        proxy_port,
        &[("re2.max_program_size.error_level", "10")],
    )
    .await;
    let second = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let third = Envoy::start(cp.xds, proxy_port, XdsVariant::Delta).await;
    cp.until_converged(base).await;

    // Bad input first: a selector matching no node, a promote with none running.
    let none = ctl(&cp, &["rollout", "start", "--node", "no-such-node"]).await;
    assert_eq!(none.code, 3, "{}", none.stderr);
    assert!(
        none.stderr.contains("matches none of the"),
        "{}",
        none.stderr
    );
    let nothing = ctl(&cp, &["rollout", "promote"]).await;
    assert_eq!(nothing.code, 3);
    assert!(
        nothing.stderr.contains("no canary is running"),
        "{}",
        nothing.stderr
    );

    // A canary on one node: only it gets the new route.
    let started = ctl(
        &cp,
        &["rollout", "start", "--node", &canary.node_id, "-o", "json"],
    )
    .await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    let started: Value = serde_json::from_str(&started.stdout).expect("json");
    assert_eq!(started["stable_version"], json!(base));
    let new = cp
        .apply(
            "/v1/routes/new",
            json!({"match": {"path_prefix": "/new"}, "destination": {"service": "web"}}),
        )
        .await;
    until_rds(&cp, &canary.node_id, new).await;
    assert!(routes_of(&canary.config_dump().await).contains("/new"));
    for other in [&second, &third] {
        assert_eq!(rds_version(&cp, &other.node_id).await, Some(base));
        assert!(!routes_of(&other.config_dump().await).contains("/new"));
    }
    let status = ctl(&cp, &["rollout", "status", "-o", "json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(status["canary"]["phase"], "running");
    assert_eq!(status["canary"]["canary_version"], json!(new));
    assert_eq!(status["canary_nodes"], json!([canary.node_id]));

    // Promote: every node gets it.
    let promoted = ctl(&cp, &["rollout", "promote"]).await;
    assert_eq!(promoted.code, 0, "{}", promoted.stderr);
    cp.until_converged(new).await;
    assert!(routes_of(&third.config_dump().await).contains("/new"));

    // A second canary: a route the canary refuses (its RE2 program is over
    // the canary's limit). The canary is aborted; the other two never see it.
    ok_start(&cp, &canary.node_id).await;
    let bad = cp
        .apply(
            "/v1/routes/greek",
            json!({"match": {"path_regex": "^/r/(alpha|beta|gamma)$"},
                   "destination": {"service": "web"}}),
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "the canary to be aborted by its NACK",
        || async { cp.nodes().await["canary"]["phase"] == "aborted" },
    )
    .await;
    let status = cp.nodes().await;
    let reason = status["canary"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains(&format!("node {} rejected version {bad}", canary.node_id)),
        "{reason}"
    );
    until_rds(&cp, &canary.node_id, new).await;
    for other in [&second, &third] {
        assert_eq!(rds_version(&cp, &other.node_id).await, Some(new));
        assert!(!routes_of(&other.config_dump().await).contains("alpha|beta|gamma"));
    }
    for node in status["nodes"].as_array().into_iter().flatten() {
        if node["id"] != json!(canary.node_id) {
            assert_eq!(node["types"]["rds"]["nacks"], 0, "{node}");
        }
    }
    // An aborted canary cannot be promoted.
    let late = ctl(&cp, &["rollout", "promote"]).await;
    assert_eq!(late.code, 3);
    assert!(late.stderr.contains("aborted: node"), "{}", late.stderr);
    // A node connecting now gets the stable version too.
    let fourth = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    until_rds(&cp, &fourth.node_id, new).await;
}

async fn ok_start(cp: &ControlPlane, node: &str) {
    let out = ctl(cp, &["rollout", "start", "--node", node]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// Requests to `url`, each on a new connection (so the kernel spreads them
/// over every Envoy sharing the port), until `done` or 60 s; the statuses.
async fn load_until(url: &str, done: impl AsyncFn() -> bool) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        for _ in 0..10 {
            if let Ok(response) = client.get(url).send().await {
                statuses.push(response.status().as_u16());
            }
        }
        if done().await {
            return statuses;
        }
    }
    panic!("not done within 60 s; statuses seen: {statuses:?}");
}

/// A canary whose new route sends `/api` to an upstream behaving as
/// `behaviour`, under load over three Envoys: the analysis aborts it with a
/// reason starting `reason`, and afterwards every request answers 200.
/// Returns the statuses seen while it ran.
async fn aborted_by_analysis(behaviour: Behaviour, reason: &str) -> Vec<u16> {
    let good = Upstream::start("good").await;
    let worse = Upstream::start_with("worse", behaviour).await;
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions::new(proxy_port)).await;
    cp.apply("/v1/services/good", good.service("good")).await;
    cp.apply("/v1/services/worse", worse.service("worse")).await;
    let base = cp
        .apply(
            "/v1/routes/api",
            json!({"match": {"path_prefix": "/api"}, "destination": {"service": "good"}}),
        )
        .await;
    let canary = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let _second = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let _third = Envoy::start(cp.xds, proxy_port, XdsVariant::Delta).await;
    cp.until_converged(base).await;

    let started = cp
        .post(
            "/v1/rollout",
            json!({"selector": {"nodes": [canary.node_id]},
                   "analysis": {"min_requests": 10, "window_ms": 10000}}),
        )
        .await;
    assert_eq!(started.status().as_u16(), 201);
    let switched = cp
        .apply(
            "/v1/routes/api",
            json!({"match": {"path_prefix": "/api"}, "destination": {"service": "worse"}}),
        )
        .await;
    until_rds(&cp, &canary.node_id, switched).await;
    let at = std::time::Instant::now();
    let url = canary.url("/api/x");
    let statuses = load_until(&url, async || {
        cp.nodes().await["canary"]["phase"] == "aborted"
    })
    .await;
    let detected = at.elapsed();
    let status = cp.nodes().await;
    let why = status["canary"]["reason"].as_str().unwrap_or_default();
    assert!(why.starts_with(reason), "{why}");
    eprintln!("canary aborted {detected:?} after the switch: {why}");
    // The canary node is back on the stable routes: everything answers 200.
    until_rds(&cp, &canary.node_id, base).await;
    let after = load_until(&url, async || true).await;
    assert!(after.iter().all(|s| *s == 200), "{after:?}");
    assert!(worse.hit_count() > 0, "the canary did use the new upstream");
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_upstream_starts_failing_is_aborted_by_its_analysis() {
    // A fifth of its answers are 500s.
    let statuses = aborted_by_analysis(Behaviour::failing(5, 500), "error rate").await;
    assert!(
        statuses.contains(&500),
        "the canary did fail some: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_upstream_turns_slow_is_aborted_on_p99() {
    // Every answer takes 300 ms; the rest answer within milliseconds.
    let statuses = aborted_by_analysis(Behaviour::delayed(Duration::from_millis(300)), "p99").await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "slow, not failing: {statuses:?}"
    );
}
