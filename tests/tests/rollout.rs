//! A version some node rejects is not rolled out: the whole fleet, including
//! nodes that connect later, stays on (or goes back to) the last good version,
//! and status says why. Real Envoys; one of them runs with a stricter runtime
//! than the rest, as a fleet on mixed settings would.

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, free_port, postgres_database,
};
use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_version_never_reaches_the_fleet() {
    let upstream = Upstream::start("web").await;
    // Every node gets the same listener (SO_REUSEPORT): which one answers a
    // request is up to the kernel, so per-node checks read config dumps.
    let proxy_port = free_port();
    // Validated before commit by a default Envoy, which accepts the route
    // below: the fleet's own NACK is the last line.
    let mut cp = ControlPlane::start(ControlPlaneOptions {
        validate_with_envoy: true,
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    cp.apply("/v1/services/web", upstream.service("web")).await;
    let base = cp
        .apply(
            "/v1/routes/main",
            json!({"match": {"path_prefix": "/main"}, "destination": {"service": "web"}}),
        )
        .await;
    let edge = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let strict = Envoy::start_with_runtime(
        cp.xds,
        proxy_port,
        &[("re2.max_program_size.error_level", "10")],
    )
    .await;
    cp.until_converged(base).await;
    edge.until_status("/main", 200).await;

    // Its RE2 program (about 30 instructions) is within what Gatehouse and a
    // default Envoy accept, but above the strict node's limit.
    let bad = cp
        .apply(
            "/v1/routes/greek",
            json!({"match": {"path_regex": "^/r/(alpha|beta|gamma)$"},
                   "destination": {"service": "web"}, "timeout_ms": 1234}),
        )
        .await;

    let status = cp.until_held_back().await;
    assert_eq!(status["latest_version"], json!(bad));
    assert_eq!(status["served_version"], json!(base));
    let rejection = &status["rejections"][0];
    assert_eq!(rejection["node"], json!(strict.node_id), "{rejection}");
    assert_eq!(rejection["type"], json!("rds"));
    assert_eq!(rejection["version"], json!(bad.to_string()));

    // The fleet is back on the last good version: the edge node, which may
    // have taken the new route before the rejection, converges on `base`.
    cp.until_converged(base).await;
    let route = edge.config_dump().await.to_string();
    assert!(
        !route.contains("alpha|beta|gamma"),
        "the rejected route is gone from the edge node"
    );

    edge.until_status("/r/alpha", 404).await;

    // A node connecting now is given the last good version too.
    let late = Envoy::start(cp.xds, proxy_port, XdsVariant::Delta).await;
    cp.until_converged(base).await;
    assert!(
        !late
            .config_dump()
            .await
            .to_string()
            .contains("alpha|beta|gamma")
    );

    // A restarted control plane remembers the refusal: it starts from the
    // last good version (rebuilt from history), and so do the nodes that
    // reconnect and a node that joins afterwards.
    cp.kill().await;
    let mut options = cp.options.clone();
    options.xds_port = cp.xds.port();
    options.data_dir = Some(cp.dir.clone());
    cp = ControlPlane::start(options).await;
    let status = cp.until_held_back().await;
    assert_eq!(status["served_version"], json!(base), "{status}");
    assert_eq!(status["latest_version"], json!(bad), "{status}");
    assert_eq!(status["rejections"][0]["node"], json!(strict.node_id));
    let joined = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    // Every node is back (Envoy's reconnect backoff varies) before
    // convergence means anything.
    gatehouse_e2e::eventually(Duration::from_secs(20), "4 nodes reconnected", || async {
        cp.nodes().await["nodes"].as_array().map(Vec::len) == Some(4)
    })
    .await;
    cp.until_converged(base).await;
    assert!(
        !joined
            .config_dump()
            .await
            .to_string()
            .contains("alpha|beta|gamma"),
        "a node joining after the restart gets the last good version"
    );
    let status = cp.nodes().await;
    assert_eq!(
        status["rejections"].as_array().map(Vec::len),
        Some(1),
        "nobody was sent the refused route again: {status}"
    );

    // A version that changes the rejected route rolls out to everyone.
    let fixed = cp
        .apply(
            "/v1/routes/greek",
            json!({"match": {"path_prefix": "/r/"},
                   "destination": {"service": "web"}, "timeout_ms": 1234}),
        )
        .await;
    cp.until_converged(fixed).await;
    let status = cp.nodes().await;
    assert_eq!(status["held_back"], json!(false), "{status}");
    assert_eq!(status["served_version"], json!(fixed));
    for node in [&edge, &strict, &late, &joined] {
        assert!(
            node.config_dump().await.to_string().contains("1.234s"),
            "{} {status}",
            node.node_id
        );
    }
    late.until_status("/r/alpha", 200).await;
}

/// Replicas sharing one Postgres learn each other's refusals: a version a
/// node of one replica refused is taken back from the other replica's nodes,
/// and a node joining the other replica never gets it. The other replica
/// polls only once a minute, so the refusal reaches it by notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_seen_by_one_replica_keeps_the_other_replicas_nodes_off_it() {
    let database = postgres_database().await;
    let upstream = Upstream::start("web").await;
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.database_url = Some(database);
    options.poll_interval_ms = 60_000;
    let first = ControlPlane::start(options.clone()).await;
    let second = ControlPlane::start(options).await;
    first
        .apply("/v1/services/web", upstream.service("web"))
        .await;
    let base = first
        .apply(
            "/v1/routes/main",
            json!({"match": {"path_prefix": "/main"}, "destination": {"service": "web"}}),
        )
        .await;
    let strict = Envoy::start_with_runtime(
        first.xds,
        proxy_port,
        &[("re2.max_program_size.error_level", "10")],
    )
    .await;
    let edge = Envoy::start(second.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    first.until_converged(base).await;
    second.until_converged(base).await;

    // Refused by the strict node (connected to the first replica) only.
    let bad = first
        .apply(
            "/v1/routes/greek",
            json!({"match": {"path_regex": "^/r/(alpha|beta|gamma)$"},
                   "destination": {"service": "web"}}),
        )
        .await;
    let status = first.until_held_back().await;
    assert_eq!(status["rejections"][0]["node"], json!(strict.node_id));

    let status = second.until_held_back().await;
    assert_eq!(status["latest_version"], json!(bad), "{status}");
    assert_eq!(status["served_version"], json!(base), "{status}");
    assert_eq!(status["rejections"][0]["node"], json!(strict.node_id));
    second.until_converged(base).await;
    assert!(
        !edge
            .config_dump()
            .await
            .to_string()
            .contains("alpha|beta|gamma"),
        "the refused route is gone from the other replica's node"
    );
    let late = Envoy::start(second.xds, proxy_port, XdsVariant::Delta).await;
    second.until_converged(base).await;
    assert!(
        !late
            .config_dump()
            .await
            .to_string()
            .contains("alpha|beta|gamma"),
        "a node joining the other replica gets the last good version"
    );
    assert_eq!(edge.rejected_updates().await, 0);
    assert_eq!(late.rejected_updates().await, 0);
}

/// After investigating why a version is held back (the strict node is
/// retired, say), an operator releases it with `gatehousectl release`: the
/// newest version rolls out to the rest of the fleet, and the history
/// records who released what and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_releases_a_held_back_version() {
    let upstream = Upstream::start("web").await;
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions::new(proxy_port)).await;
    cp.apply("/v1/services/web", upstream.service("web")).await;
    let edge = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let strict = Envoy::start_with_runtime(
        cp.xds,
        proxy_port,
        &[("re2.max_program_size.error_level", "10")],
    )
    .await;
    let bad = cp
        .apply(
            "/v1/routes/greek",
            json!({"match": {"path_regex": "^/r/(alpha|beta|gamma)$"},
                   "destination": {"service": "web"}}),
        )
        .await;
    let status = cp.until_held_back().await;
    assert_eq!(status["latest_version"], json!(bad));
    let ctl = |args: &'static [&'static str]| {
        let server = format!("http://{}", cp.admin);
        async move {
            tokio::process::Command::new(gatehouse_e2e::gatehouse_bin("gatehousectl"))
                .args(args)
                .env("GATEHOUSE_SERVER", server)
                .env("GATEHOUSE_ACTOR", "oncall")
                .output()
                .await
                .expect("gatehousectl runs")
        }
    };
    let shown = ctl(&["status"]).await;
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&strict.node_id),
        "status names the refusing node"
    );

    let strict_node = strict.node_id.clone();
    drop(strict);
    let out = ctl(&["release", "--reason", "strict node retired"]).await;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("rds") && said.contains(&strict_node),
        "{said}"
    );
    let released = bad + 1;
    cp.until_converged(released).await;
    edge.until_status("/r/alpha", 200).await;
    let status = cp.nodes().await;
    assert_eq!(status["held_back"], json!(false), "{status}");
    assert_eq!(status["served_version"], json!(released));

    let record: serde_json::Value = gatehouse_e2e::client()
        .get(cp.url(&format!("/v1/config/versions/{released}")))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(record["source"], json!("release"), "{record}");
    let note = record["note"].as_str().unwrap_or_default();
    assert!(note.contains("strict node retired"), "{record}");
    assert!(
        note.contains(&bad.to_string()),
        "names the released version: {record}"
    );

    // Nothing left to release: a clean refusal, nothing changed.
    let again = ctl(&["release"]).await;
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert_eq!(cp.version().await, released);
}
