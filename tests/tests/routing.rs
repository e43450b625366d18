//! The control-plane foundation end to end: admin API → store → xDS → a real
//! Envoy serving real upstreams.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Stack, Upstream, XdsVariant, client, eventually,
    free_port, load::Load, postgres_database, probe,
};
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(10);

/// A control plane and an Envoy (with an access log) speaking `variant`.
async fn gateway(variant: XdsVariant) -> Stack {
    gateway_with(variant, |_| {}).await
}

async fn gateway_with(
    variant: XdsVariant,
    tweak: impl FnOnce(&mut ControlPlaneOptions) + Send + 'static,
) -> Stack {
    Stack::new()
        .variant(variant)
        .access_log()
        .configure(tweak)
        .start()
        .await
}

/// Waits until `path` through Envoy answers `status` (from `upstream` if given).
async fn until_served(g: &Stack, path: &str, status: u16, upstream: Option<&str>) {
    let http = client();
    let url = g.envoy.url(path);
    eventually(
        CONVERGE,
        &format!("GET {path} → {status} {upstream:?}"),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let (got, from) = probe(&http, &url).await;
                got == status && (upstream.is_none() || from.as_deref() == upstream)
            }
        },
    )
    .await;
}

async fn route_lifecycle(variant: XdsVariant) {
    let g = gateway(variant).await;
    let users = Upstream::start("users").await;
    g.cp.apply("/v1/services/users", users.service("users"))
        .await;
    g.cp.apply(
        "/v1/routes/users",
        json!({"match": {"path_prefix": "/users"}, "destination": {"service": "users"}}),
    )
    .await;
    until_served(&g, "/users/42", 200, Some("users")).await;

    // Change the prefix: the old path stops matching, the new one works.
    let version =
        g.cp.apply(
            "/v1/routes/users",
            json!({"match": {"path_prefix": "/people"}, "destination": {"service": "users"}}),
        )
        .await;
    until_served(&g, "/people/42", 200, Some("users")).await;
    until_served(&g, "/users/42", 404, None).await;
    g.cp.until_converged(version).await;

    let deleted = g.cp.delete("/v1/routes/users").await;
    assert_eq!(deleted.status(), 204);
    until_served(&g, "/people/42", 404, None).await;

    g.cp.assert_no_nacks().await;
    assert_eq!(
        g.envoy.rejected_updates().await,
        0,
        "Envoy rejected an update"
    );
}

#[tokio::test]
async fn route_lifecycle_state_of_the_world() {
    route_lifecycle(XdsVariant::StateOfTheWorld).await;
}

#[tokio::test]
async fn route_lifecycle_delta() {
    route_lifecycle(XdsVariant::Delta).await;
}

#[tokio::test]
async fn every_route_feature_is_accepted_by_envoy() {
    let g = gateway(XdsVariant::StateOfTheWorld).await;
    let api = Upstream::start("api").await;
    let grpc = Upstream::start("grpc").await;
    g.cp.apply("/v1/services/api", api.service("api")).await;
    g.cp.apply(
        "/v1/services/grpc-svc",
        json!({"endpoints": [{"host": "127.0.0.1", "port": grpc.addr.port(), "weight": 3}],
               "protocol": "grpc", "connect_timeout_ms": 250}),
    )
    .await;
    // A DNS endpoint makes a STRICT_DNS cluster.
    g.cp.apply(
        "/v1/services/by-name",
        json!({"endpoints": [{"host": "localhost", "port": api.addr.port()}], "protocol": "http2"}),
    )
    .await;
    let routes = [
        (
            "exact",
            json!({"match": {"path_exact": "/exact"}, "destination": {"service": "api"}, "prefix_rewrite": "/rewritten"}),
        ),
        (
            "regex",
            json!({"match": {"path_regex": "^/items/[0-9]+$", "methods": ["GET", "HEAD"]}, "destination": {"service": "api"}, "timeout_ms": 2500}),
        ),
        (
            "strip",
            json!({"match": {"path_prefix": "/strip/"}, "destination": {"service": "api"}, "strip_prefix": true}),
        ),
        (
            "hosted",
            json!({"match": {"path_prefix": "/", "hosts": ["api.example.com", "*.example.org"]}, "destination": {"service": "api"}}),
        ),
        (
            "headers",
            json!({"match": {"path_prefix": "/h", "headers": [
            {"name": "x-canary", "exact": "1"}, {"name": "x-tenant", "prefix": "t-"},
            {"name": "x-re", "regex": "^[a-z]+$"}, {"name": "x-debug", "present": true, "invert": true}]},
            "destination": {"service": "api"}}),
        ),
        (
            "split",
            json!({"match": {"path_prefix": "/split"}, "destination": {"weighted": [
            {"service": "api", "weight": 1}, {"service": "by-name", "weight": 0}]}}),
        ),
        (
            "live",
            json!({"match": {"path_prefix": "/live"}, "destination": {"service": "api"},
                   "websocket": {"max_duration_ms": 3600000}, "idle_timeout_ms": 60000}),
        ),
    ];
    let mut version = 0;
    for (name, body) in routes {
        version = g.cp.apply(&format!("/v1/routes/{name}"), body).await;
    }
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;
    assert_eq!(g.envoy.rejected_updates().await, 0);

    let http = client();
    let echo = |path: &str, host: Option<&str>| {
        let mut request = http.get(g.envoy.url(path));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move {
            let response = request.send().await.expect("proxy reachable");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body["path"].as_str().unwrap_or_default().to_owned())
        }
    };
    assert_eq!(echo("/exact", None).await, (200, "/rewritten".into()));
    assert_eq!(echo("/items/7", None).await, (200, "/items/7".into()));
    assert_eq!(echo("/items/x", None).await.0, 404);
    assert_eq!(echo("/strip/a/b?q=1", None).await, (200, "/a/b".into()));
    assert_eq!(echo("/anything", Some("api.example.com:8000")).await.0, 200);
    assert_eq!(echo("/anything", Some("www.example.org")).await.0, 200);
    assert_eq!(echo("/anything", Some("other.test")).await.0, 404);
    assert_eq!(
        echo("/exact", Some("api.example.com")).await.0,
        200,
        "host-less routes apply on every host"
    );
    assert_eq!(echo("/split", None).await.0, 200);
    let headers = http
        .get(g.envoy.url("/h"))
        .header("x-canary", "1")
        .header("x-tenant", "t-9")
        .header("x-re", "abc")
        .send()
        .await
        .expect("proxy");
    assert_eq!(headers.status(), 200);
    let debug = http
        .get(g.envoy.url("/h"))
        .header("x-canary", "1")
        .header("x-tenant", "t-9")
        .header("x-re", "abc")
        .header("x-debug", "1")
        .send()
        .await
        .expect("proxy");
    assert_eq!(
        debug.status(),
        404,
        "inverted present match excludes the route"
    );
}

#[tokio::test]
async fn weighted_destinations_split_traffic_by_weight() {
    let g = gateway(XdsVariant::StateOfTheWorld).await;
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    g.cp.apply("/v1/services/stable", stable.service("stable"))
        .await;
    g.cp.apply("/v1/services/canary", canary.service("canary"))
        .await;
    g.cp.apply(
        "/v1/routes/split",
        json!({"match": {"path_prefix": "/"}, "destination": {"weighted": [
            {"service": "stable", "weight": 80}, {"service": "canary", "weight": 20}]}}),
    )
    .await;
    until_served(&g, "/", 200, None).await;
    let http = client();
    let (mut stable_hits, mut canary_hits) = (0u32, 0u32);
    let total = 2000;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..total {
        let (http, url) = (http.clone(), g.envoy.url("/"));
        requests.spawn(async move { probe(&http, &url).await });
        if requests.len() >= 32 {
            match requests.join_next().await {
                Some(Ok((200, Some(u)))) if u == "stable" => stable_hits += 1,
                Some(Ok((200, Some(u)))) if u == "canary" => canary_hits += 1,
                other => panic!("unexpected response {other:?}"),
            }
        }
    }
    while let Some(result) = requests.join_next().await {
        match result {
            Ok((200, Some(u))) if u == "stable" => stable_hits += 1,
            Ok((200, Some(u))) if u == "canary" => canary_hits += 1,
            other => panic!("unexpected response {other:?}"),
        }
    }
    assert_eq!(stable_hits + canary_hits, total);
    let canary_share = f64::from(canary_hits) / f64::from(total);
    assert!(
        (canary_share - 0.20).abs() <= 0.05,
        "canary got {:.1}% of traffic, expected 20% ± 5%",
        canary_share * 100.0
    );
}

/// Every invalid write gets a problem+json naming the field, and changes
/// neither the version nor what Envoy serves.
#[tokio::test]
async fn invalid_input_changes_nothing() {
    let g = gateway(XdsVariant::StateOfTheWorld).await;
    let up = Upstream::start("up").await;
    let version = g.cp.route_all_to(&up).await;
    g.cp.until_converged(version).await;
    let envoy_before = g.envoy.dynamic_config().await;
    assert!(!envoy_before.is_empty());

    use reqwest::Method;
    let raw_cases: Vec<(Method, &str, &'static str, u16, &str)> = vec![
        (Method::PUT, "/v1/routes/bad", "{not json", 422, ""),
        (Method::PUT, "/v1/routes/bad", "[1, 2]", 422, ""),
    ];
    for (method, path, body, status, field) in raw_cases {
        let response = g.cp.send_raw(method, path, body).await;
        assert_problem(response, status, field).await;
    }
    let route = |m: Value| json!({"match": m, "destination": {"service": "up"}});
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/routes/bad",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "up"}, "colour": 1}),
            422,
            "colour",
        ),
        (
            "/v1/routes/Bad_Name",
            route(json!({"path_prefix": "/"})),
            422,
            "name",
        ),
        (
            "/v1/routes/bad",
            route(json!({"path_prefix": "no-slash"})),
            422,
            "match.path_prefix",
        ),
        (
            "/v1/routes/bad",
            route(json!({"path_regex": "(unclosed"})),
            422,
            "match.path_regex",
        ),
        (
            "/v1/routes/bad",
            route(json!({"path_regex": "(?=lookahead)"})),
            422,
            "match.path_regex",
        ),
        (
            "/v1/routes/bad",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "missing"}}),
            422,
            "destination.service",
        ),
        (
            "/v1/routes/bad",
            json!({"match": {"path_prefix": "/"}, "destination": {"weighted": [{"service": "up", "weight": 0}]}}),
            422,
            "destination.weighted",
        ),
        (
            "/v1/services/bad",
            json!({"endpoints": [{"host": "127.0.0.1", "port": 70000}]}),
            422,
            "endpoints[0].port",
        ),
        (
            "/v1/services/bad",
            json!({"endpoints": [{"host": "127.0.0.1"}]}),
            422,
            "endpoints[0].port",
        ),
    ];
    for (path, body, status, field) in cases {
        let response = g.cp.put(path, body.clone()).await;
        assert_problem(response, status, field).await;
    }
    // POST of an existing name, DELETE of a service in use, DELETE of nothing.
    assert_problem(g.cp.post("/v1/services", up.service("up")).await, 409, "").await;
    assert_problem(g.cp.delete("/v1/services/up").await, 409, "").await;
    assert_problem(g.cp.delete("/v1/routes/nothing").await, 404, "").await;

    assert_eq!(
        g.cp.version().await,
        version,
        "no invalid write bumped the version"
    );
    assert_eq!(
        g.envoy.dynamic_config().await,
        envoy_before,
        "Envoy's configuration did not change"
    );
    until_served(&g, "/", 200, Some("up")).await;
}

async fn assert_problem(response: reqwest::Response, status: u16, field: &str) {
    let url = response.url().to_string();
    assert_eq!(response.status().as_u16(), status, "{url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "{url}");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)), "{body}");
    if !field.is_empty() {
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{url}: expected field {field}, got {body}"
        );
    }
}

/// Killing and restarting the control plane drops no request; the new one
/// picks Envoy back up and serves later changes.
#[tokio::test]
async fn control_plane_restart_drops_no_request() {
    let mut g = gateway(XdsVariant::StateOfTheWorld).await;
    let up = Upstream::start("up").await;
    g.cp.route_all_to(&up).await;
    until_served(&g, "/", 200, Some("up")).await;

    let load = Load::start(g.envoy.url("/steady"), 200, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.cp.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut options = g.cp.options.clone();
    options.xds_port = g.cp.xds.port();
    options.data_dir = Some(g.cp.dir.clone());
    g.cp = ControlPlane::start(options).await;
    eventually(CONVERGE, "Envoy to reconnect", || async {
        g.cp.nodes().await["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
    })
    .await;
    let other = Upstream::start("other").await;
    g.cp.apply("/v1/services/other", other.service("other"))
        .await;
    let version =
        g.cp.apply(
            "/v1/routes/other",
            json!({"match": {"path_prefix": "/other"}, "destination": {"service": "other"}}),
        )
        .await;
    until_served(&g, "/other", 200, Some("other")).await;
    g.cp.until_converged(version).await;
    let report = load.finish().await;
    assert!(report.sent > 300, "load ran: {}", report.summary());
    assert!(report.failures.is_empty(), "{}", report.summary());
    g.cp.assert_no_nacks().await;
}

/// 100 route updates under 500 rps: each adds a new service, moves the route
/// onto it and deletes the old one, with 0 failures. With builds at least
/// 50 ms apart, the first write is served at once and the other two coalesce
/// into one snapshot, so Envoy gets the route to the new cluster and the old
/// cluster's removal at once (and, when the first build is still in flight,
/// the new cluster too): only make-before-break ordering keeps every request
/// succeeding.
#[tokio::test]
async fn route_updates_under_load_drop_no_request() {
    for variant in [XdsVariant::StateOfTheWorld, XdsVariant::Delta] {
        let g = gateway_with(variant, |o| o.debounce_ms = 50).await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        g.cp.apply("/v1/services/svc-0", blue.service("svc-0"))
            .await;
        g.cp.apply(
            "/v1/routes/main",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "svc-0"}}),
        )
        .await;
        until_served(&g, "/", 200, Some("blue")).await;

        let load = Load::start(g.envoy.url("/live"), 500, Duration::from_secs(120));
        let mut version = 0;
        for i in 1..=100 {
            let upstream = if i % 2 == 0 { &blue } else { &green };
            let name = format!("svc-{i}");
            g.cp.apply(&format!("/v1/services/{name}"), upstream.service(&name))
                .await;
            g.cp.apply(
                "/v1/routes/main",
                json!({"match": {"path_prefix": "/"}, "destination": {"service": name}}),
            )
            .await;
            let old = g.cp.delete(&format!("/v1/services/svc-{}", i - 1)).await;
            assert_eq!(old.status(), 204);
            version = old
                .headers()
                .get("x-gatehouse-config-version")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .expect("version");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        g.cp.until_converged(version).await;
        let report = load.finish().await;
        assert!(report.sent > 1000, "{variant:?}: {}", report.summary());
        assert!(
            report.failures.is_empty(),
            "{variant:?}: {}",
            report.summary()
        );
        until_served(&g, "/", 200, Some("blue")).await;
        g.cp.assert_no_nacks().await;
        assert_eq!(g.envoy.rejected_updates().await, 0);
    }
}

/// Two replicas on one Postgres: a write through one reaches an Envoy
/// connected to the other. Polling is slowed to a minute, so only
/// LISTEN/NOTIFY can deliver the change in time.
#[tokio::test]
async fn replicas_sharing_postgres_serve_the_same_config() {
    let database = postgres_database().await;
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.database_url = Some(database.clone());
    options.poll_interval_ms = 60_000;
    let writer = ControlPlane::start(options.clone()).await;
    let server = ControlPlane::start(options).await;
    let envoy = Envoy::start(server.xds, proxy_port, XdsVariant::Delta).await;
    let g = Stack {
        cp: server,
        envoy,
        ext: None,
        limiter: None,
        orders: None,
    };

    let up = Upstream::start("up").await;
    let version = writer.route_all_to(&up).await;
    until_served(&g, "/via-replica", 200, Some("up")).await;
    g.cp.until_converged(version).await;
    assert_eq!(g.cp.version().await, version);
    g.cp.assert_no_nacks().await;
}

/// A control plane that starts while Postgres is unreachable serves nothing,
/// so the Envoy that reconnects to it keeps its listeners and routes.
#[tokio::test]
async fn store_unreachable_at_start_never_empties_envoy() {
    let database = postgres_database().await;
    // As in production, the admin API has a bootstrap token: operators can
    // read node status even while the store is down.
    let mut g = gateway_with(XdsVariant::StateOfTheWorld, |o| {
        o.database_url = Some(database);
        o.admin_token = Some("bootstrap-token-for-the-outage-test-0123456789".into());
    })
    .await;
    let up = Upstream::start("up").await;
    g.cp.route_all_to(&up).await;
    until_served(&g, "/", 200, Some("up")).await;

    g.cp.kill().await;
    let mut broken = g.cp.options.clone();
    broken.xds_port = g.cp.xds.port();
    broken.database_url = Some(format!(
        "postgres://postgres@127.0.0.1:{}/nothing",
        free_port()
    ));
    broken.wait_ready = false;
    g.cp = ControlPlane::start(broken).await;
    eventually(CONVERGE, "Envoy to reconnect", || async {
        g.cp.nodes().await["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
    })
    .await;
    let ready = g.cp.get("/readyz").await;
    assert_eq!(ready.status(), 503, "not ready without a store");
    let write = g.cp.put("/v1/services/x", json!({"endpoints": []})).await;
    assert_eq!(
        write.status(),
        503,
        "writes fail cleanly while the store is down"
    );
    assert_eq!(
        write.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let problem: serde_json::Value = write.json().await.expect("problem+json");
    assert_eq!(problem["type"], "urn:gatehouse:problem:starting");

    // Over several poll intervals, Envoy keeps its listener and routes.
    let load = Load::start(g.envoy.url("/still-here"), 100, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    assert!(report.failures.is_empty(), "{}", report.summary());
    let dump = g.envoy.config_dump().await.to_string();
    assert!(dump.contains("gatehouse_http"), "listener still present");
    assert_eq!(
        g.envoy
            .stat("listener_manager.total_listeners_active")
            .await,
        Some(1)
    );
}

/// SIGTERM with an Envoy connected (a long-lived ADS stream) exits cleanly
/// well within the shutdown deadline, and Envoy keeps serving.
#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_envoy_connected() {
    let mut g = gateway(XdsVariant::Delta).await;
    let up = Upstream::start("up").await;
    let version = g.cp.route_all_to(&up).await;
    g.cp.until_converged(version).await;
    let started = std::time::Instant::now();
    let code = g.cp.terminate().await;
    assert_eq!(code, Some(0), "clean exit");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?} (grace is 2 s)",
        started.elapsed()
    );
    until_served(&g, "/after-shutdown", 200, Some("up")).await;
}

#[tokio::test]
async fn bootstrap_yaml_is_valid_for_envoy() {
    let root = gatehouse_e2e::workspace_root();
    let output = tokio::process::Command::new(gatehouse_e2e::envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(root.join("envoy/bootstrap.yaml"))
        .output()
        .await
        .expect("envoy runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
