//! A route's traffic policy through a real Envoy: CORS preflights answered
//! before authentication, and header rules seen at the upstream and the
//! client (issue 20).

use gatehouse_e2e::{Stack, client};
use serde_json::{Value, json};

/// Checks ext-authz has decided so far.
async fn decisions(g: &Stack) -> u64 {
    g.ext_authz()
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("gatehouse_ext_authz_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_cors_preflight_on_a_protected_route_is_answered_before_authentication() {
    let g = Stack::auth(&[]).await;
    g.cp.apply("/v1/consumers/web", json!({"plan": "free"}))
        .await;
    let version = g
        .cp
        .apply(
            "/v1/routes/orders",
            json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
                   "auth": {"method": "api_key"},
                   "cors": {"allow_origins": ["https://app.example.com"],
                            "allow_methods": ["GET", "POST"], "allow_headers": ["x-api-key", "content-type"],
                            "expose_headers": ["x-request-id"], "max_age_s": 600}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let key: Value =
        g.cp.post("/v1/consumers/web/keys", json!({}))
            .await
            .json()
            .await
            .expect("key");
    let key = key["key"].as_str().expect("key").to_owned();
    let http = client();
    g.envoy
        .until_answer("/orders/1", &[("x-api-key", &key)], 200)
        .await;

    let checks = decisions(&g).await;
    let upstream_hits = g.orders.as_ref().expect("orders").hit_count();
    let preflight = http
        .request(reqwest::Method::OPTIONS, g.envoy.url("/orders/1"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await
        .expect("answered");
    assert!(
        preflight.status().is_success(),
        "a preflight never gets 401: {}",
        preflight.status()
    );
    let header = |name: &str| {
        preflight
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header("access-control-allow-methods").contains("POST"));
    assert!(header("access-control-allow-headers").contains("x-api-key"));
    assert_eq!(header("access-control-max-age"), "600");
    assert_eq!(decisions(&g).await, checks, "no ext-authz call");
    assert_eq!(
        g.orders.as_ref().expect("orders").hit_count(),
        upstream_hits,
        "nor an upstream one"
    );

    // A preflight from another origin gets no CORS headers.
    let other = http
        .request(reqwest::Method::OPTIONS, g.envoy.url("/orders/1"))
        .header("origin", "https://evil.example.net")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("answered");
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // The real request still needs its key.
    let without = http
        .get(g.envoy.url("/orders/1"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("answered");
    assert_eq!(without.status(), 401);
    let with = http
        .get(g.envoy.url("/orders/1"))
        .header("origin", "https://app.example.com")
        .header("x-api-key", &key)
        .send()
        .await
        .expect("answered");
    assert_eq!(with.status(), 200);
    assert_eq!(
        with.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    g.cp.assert_no_nacks().await;
}

#[tokio::test]
async fn header_rules_reach_the_upstream_and_the_client() {
    let g = Stack::new().orders().start().await;
    let version = g
        .cp
        .apply(
            "/v1/routes/orders",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "orders"},
                   "headers": {
                       "request": {"set": {"x-env": "prod"}, "add": {"x-tag": "gateway"}, "remove": ["x-debug"]},
                       "response": {"set": {"x-served-by": "gatehouse"}, "remove": ["x-upstream"]}}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let response = client()
        .get(g.envoy.url("/orders/1"))
        .header("x-env", "dev")
        .header("x-tag", "client")
        .header("x-debug", "1")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok()),
        Some("gatehouse")
    );
    assert!(
        !response.headers().contains_key("x-upstream"),
        "removed: {:?} {}",
        response.headers(),
        g.envoy.config_dump().await
    );
    let orders = g.orders.as_ref().expect("orders");
    let received = orders.received().pop().expect("a request");
    let values = |name: &str| -> Vec<String> {
        received
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(values("x-env"), ["prod"], "set replaces");
    assert_eq!(values("x-tag").join(","), "client,gateway", "add keeps");
    assert!(
        values("x-debug").is_empty(),
        "removed: {:?}",
        received.headers
    );
    g.cp.assert_no_nacks().await;
}

/// Redirects, direct responses, a mirror, query conditions, a Host rewrite
/// and injected faults, each observed at the client or the upstream.
#[tokio::test]
async fn redirects_direct_responses_mirrors_queries_host_rewrites_and_faults() {
    let g = Stack::new().orders().start().await;
    let shadow = gatehouse_e2e::Upstream::start("shadow").await;
    g.cp.apply("/v1/services/shadow", shadow.service("shadow"))
        .await;
    let routes = [
        (
            "to-https",
            json!({"match": {"path_prefix": "/old"},
            "redirect": {"scheme": "https", "host": "new.example.com", "path": "/new", "status": 308}}),
        ),
        (
            "teapot",
            json!({"match": {"path_exact": "/teapot"},
            "direct_response": {"status": 418, "body": "{\"short\":\"stout\"}", "content_type": "application/json"}}),
        ),
        (
            "mirrored",
            json!({"match": {"path_prefix": "/mirrored"}, "destination": {"service": "orders"},
            "mirror": {"service": "shadow", "percent": 100}}),
        ),
        (
            "v2",
            json!({"match": {"path_prefix": "/q", "query_params": [{"name": "v", "exact": "2"}]},
            "destination": {"service": "shadow"}}),
        ),
        (
            "v1",
            json!({"match": {"path_prefix": "/q"}, "destination": {"service": "orders"}}),
        ),
        (
            "rehost",
            json!({"match": {"path_prefix": "/rehost"}, "destination": {"service": "orders"},
            "host_rewrite": "orders.internal", "idle_timeout_ms": 60000}),
        ),
        (
            "chaos",
            json!({"match": {"path_prefix": "/chaos"}, "destination": {"service": "orders"},
            "fault": {"abort": {"status": 503, "percent": 100}}}),
        ),
        (
            "slow",
            json!({"match": {"path_prefix": "/slow"}, "destination": {"service": "orders"},
            "fault": {"delay": {"ms": 300, "percent": 100}}}),
        ),
    ];
    let mut version = 0;
    for (name, body) in routes {
        version = g.cp.apply(&format!("/v1/routes/{name}"), body).await;
    }
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;
    let orders = g.orders.as_ref().expect("orders");
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |path: &str| http.get(g.envoy.url(path)).send();

    let redirect = get("/old/page?x=1").await.expect("answered");
    assert_eq!(redirect.status(), 308);
    assert_eq!(
        redirect
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("https://new.example.com/new?x=1")
    );

    let hits = orders.hit_count();
    let teapot = get("/teapot").await.expect("answered");
    assert_eq!(teapot.status(), 418);
    assert_eq!(
        teapot
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(
        teapot.text().await.unwrap_or_default(),
        "{\"short\":\"stout\"}"
    );
    assert_eq!(orders.hit_count(), hits, "no upstream");

    let mirrored = get("/mirrored/1").await.expect("answered");
    assert_eq!(
        mirrored
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("orders"),
        "the client sees the primary's answer"
    );
    gatehouse_e2e::eventually(
        std::time::Duration::from_secs(5),
        "the mirror's copy",
        || async { shadow.received().iter().any(|r| r.path == "/mirrored/1") },
    )
    .await;

    let from = |response: reqwest::Response| {
        response
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(from(get("/q?v=2").await.expect("answered")), "shadow");
    assert_eq!(from(get("/q?v=1").await.expect("answered")), "orders");

    get("/rehost").await.expect("answered");
    let received = orders.received().pop().expect("a request");
    assert!(
        received
            .headers
            .iter()
            .any(|(n, v)| n == "host" && v == "orders.internal"),
        "{:?}",
        received.headers
    );

    let hits = orders.hit_count();
    assert_eq!(get("/chaos").await.expect("answered").status(), 503);
    assert_eq!(orders.hit_count(), hits, "aborted before the upstream");
    // Envoy's timers fire a millisecond or two either side of the delay.
    let started = std::time::Instant::now();
    assert_eq!(get("/slow").await.expect("answered").status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(280));

    // A redirect and a destination together: refused, naming the field.
    let refused =
        g.cp.put(
            "/v1/routes/both",
            json!({"match": {"path_prefix": "/both"}, "destination": {"service": "orders"},
                   "redirect": {"scheme": "https"}}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(
        problem["errors"][0]["field"],
        json!("destination"),
        "{problem}"
    );
}

/// A route's body limit: a larger body gets 413 from Envoy and never
/// reaches the upstream; other routes are not limited.
#[tokio::test]
async fn a_body_over_the_routes_limit_gets_413() {
    let g = Stack::new().orders().start().await;
    g.cp.apply(
        "/v1/routes/limited",
        json!({"match": {"path_prefix": "/limited"}, "destination": {"service": "orders"},
               "max_body_bytes": 1024}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/open",
            json!({"match": {"path_prefix": "/open"}, "destination": {"service": "orders"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;
    let orders = g.orders.as_ref().expect("orders");
    let http = client();
    let post = |path: &str, size: usize| http.post(g.envoy.url(path)).body(vec![b'x'; size]).send();
    assert_eq!(
        post("/limited", 1000).await.expect("answered").status(),
        200
    );
    let hits = orders.hit_count();
    assert_eq!(
        post("/limited", 5000).await.expect("answered").status(),
        413
    );
    assert_eq!(orders.hit_count(), hits, "never reached the upstream");
    assert_eq!(
        post("/open", 100_000).await.expect("answered").status(),
        200
    );
}
