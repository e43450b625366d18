//! WebSocket routes through a real Envoy (issue 23): the upgrade only on
//! routes that ask for it, connections that outlive the request timeout and
//! end at their idle timeout or maximum duration, and browsers' credentials
//! (query parameter or `Sec-WebSocket-Protocol`) checked on the upgrade and
//! never seen upstream.

use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Stack,
    websocket::{Connected, Next, WsUpstream, close, connect, next, send},
};
use serde_json::json;

fn ws_url(g: &Stack, path: &str) -> String {
    g.envoy.url(path).replacen("http://", "ws://", 1)
}

/// Connects (101 expected) and reads the upstream's greeting: what it
/// received.
async fn greeted(url: &str, headers: &[(&str, &str)]) -> (Connected, serde_json::Value) {
    let mut connected = connect(url, headers).await.expect("101");
    let hello = next(&mut connected.socket, Duration::from_secs(5))
        .await
        .json();
    (connected, hello)
}

async fn with_live_service(g: &Stack) -> WsUpstream {
    let upstream = WsUpstream::start("live").await;
    g.cp.apply("/v1/services/live", upstream.service()).await;
    upstream
}

#[tokio::test]
async fn only_websocket_routes_upgrade_and_connections_end_when_idle_or_too_old() {
    let g = Stack::new().start().await;
    let _upstream = with_live_service(&g).await;
    for (name, extra) in [
        ("plain", json!({})),
        ("live", json!({"websocket": {}, "idle_timeout_ms": 800})),
        ("brief", json!({"websocket": {"max_duration_ms": 1500}})),
    ] {
        let mut route = json!({"match": {"path_prefix": format!("/{name}")},
                               "destination": {"service": "live"}});
        if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
            route.extend(extra.clone());
        }
        let version = g.cp.apply(&format!("/v1/routes/{name}"), route).await;
        g.cp.until_converged(version).await;
    }
    g.cp.assert_no_nacks().await;

    // A plain route refuses the upgrade (Envoy answers it, not the upstream).
    let refused = connect(&ws_url(&g, "/plain"), &[]).await.err();
    assert!(refused.is_some_and(|status| status >= 400), "{refused:?}");
    assert_eq!(g.envoy.send("/plain", &[]).await.status, 200);

    // A WebSocket route: greeted, echoed, kept while busy past the idle
    // timeout, closed once silent for it.
    let (mut live, hello) = greeted(&ws_url(&g, "/live/feed"), &[]).await;
    assert_eq!(hello["path"], "/live/feed");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2_000) {
        send(&mut live.socket, "ping")
            .await
            .expect("open while busy");
        assert_eq!(
            next(&mut live.socket, Duration::from_secs(2)).await,
            Next::Text("ping".into())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let silent = Instant::now();
    assert!(
        matches!(
            next(&mut live.socket, Duration::from_secs(10)).await,
            Next::Closed(_)
        ),
        "closed once idle"
    );
    assert!(silent.elapsed() >= Duration::from_millis(700));

    // Busy or not, a connection ends at its maximum duration.
    let (mut brief, _) = greeted(&ws_url(&g, "/brief"), &[]).await;
    let opened = Instant::now();
    let ended = loop {
        if send(&mut brief.socket, "x").await.is_err() {
            break opened.elapsed();
        }
        match next(&mut brief.socket, Duration::from_secs(5)).await {
            Next::Text(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => break opened.elapsed(),
        }
        assert!(opened.elapsed() < Duration::from_secs(10), "never ended");
    };
    assert!(ended >= Duration::from_millis(1_200), "{ended:?}");
    close(&mut live.socket).await;
}

#[tokio::test]
async fn browsers_authenticate_the_upgrade_in_the_query_or_protocol_and_upstreams_never_see_it() {
    let g = Stack::auth(&[]).await;
    let _upstream = with_live_service(&g).await;
    let key = g.cp.consumer_key("alice").await;
    let version =
        g.cp.apply(
            "/v1/routes/live",
            json!({"match": {"path_prefix": "/live"}, "destination": {"service": "live"},
               "websocket": {}, "auth": {"method": "api_key"}}),
        )
        .await;
    g.cp.until_converged(version).await;

    // No key, a wrong key: 401 on the upgrade.
    assert_eq!(connect(&ws_url(&g, "/live"), &[]).await.err(), Some(401));
    assert_eq!(
        connect(&ws_url(&g, "/live?api_key=gk_000000000000_nope"), &[])
            .await
            .err(),
        Some(401)
    );

    // In the query: the upstream sees the other parameters, not the key.
    let (mut by_query, hello) =
        greeted(&ws_url(&g, &format!("/live?room=7&api_key={key}")), &[]).await;
    assert_eq!(hello["query"], "room=7", "{hello}");
    assert_eq!(hello["headers"]["x-gatehouse-consumer"], "alice");

    // In Sec-WebSocket-Protocol next to the real protocol: the upstream is
    // offered only `chat`, and chooses it.
    let offered = format!("chat, gatehouse.key.{key}");
    let (mut by_protocol, hello) = greeted(
        &ws_url(&g, "/live"),
        &[("sec-websocket-protocol", &offered)],
    )
    .await;
    assert_eq!(
        by_protocol
            .headers
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chat")
    );
    assert_eq!(
        hello["headers"]["sec-websocket-protocol"], "chat",
        "{hello}"
    );
    assert_eq!(hello["protocol"], "chat");
    assert!(!hello.to_string().contains(&key), "{hello}");
    assert_eq!(hello["headers"]["x-gatehouse-consumer"], "alice");

    // Two credentials at once are ambiguous.
    assert_eq!(
        connect(
            &ws_url(&g, &format!("/live?api_key={key}")),
            &[("sec-websocket-protocol", &offered)]
        )
        .await
        .err(),
        Some(401)
    );
    close(&mut by_query.socket).await;
    close(&mut by_protocol.socket).await;
}

/// A bearer token from a browser: `?access_token=` or a
/// `gatehouse.bearer.<token>` protocol entry, verified by ext-authz and
/// never seen upstream.
#[tokio::test]
async fn browsers_send_bearer_tokens_in_the_query_or_protocol() {
    use gatehouse_e2e::tokens::{TestKey, claims, jwks};
    const ISS: &str = "https://idp.ws.test/";
    let g = Stack::auth(&[]).await;
    let _upstream = with_live_service(&g).await;
    let key = TestKey::rsa("ws");
    g.cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks": jwks(&[&key]), "algorithms": ["RS256"], "audiences": ["ws"]}),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/live",
            json!({"match": {"path_prefix": "/live"}, "destination": {"service": "live"},
               "websocket": {}, "auth": {"method": "jwt"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    let token = key.sign(&claims(ISS, "ws", "carol"));

    let (mut by_query, hello) =
        greeted(&ws_url(&g, &format!("/live?access_token={token}")), &[]).await;
    assert_eq!(hello["query"], serde_json::Value::Null, "{hello}");
    assert!(!hello.to_string().contains(&token));

    let offered = format!("chat, gatehouse.bearer.{token}");
    let (mut by_protocol, hello) = greeted(
        &ws_url(&g, "/live"),
        &[("sec-websocket-protocol", &offered)],
    )
    .await;
    assert_eq!(
        hello["headers"]["sec-websocket-protocol"], "chat",
        "{hello}"
    );
    assert!(!hello.to_string().contains(&token));
    assert_eq!(
        connect(&ws_url(&g, "/live?access_token=not.a.token"), &[])
            .await
            .err(),
        Some(401)
    );
    close(&mut by_query.socket).await;
    close(&mut by_protocol.socket).await;
}

/// Rate limits count upgrade requests: the third connection in a minute
/// of a consumer limited to two is refused with 429.
#[tokio::test]
async fn rate_limits_apply_to_the_upgrade() {
    let g = Stack::new().ext_authz(&[]).ratelimit(&[]).start().await;
    let _upstream = with_live_service(&g).await;
    let key = g.cp.consumer_key("alice").await;
    g.cp.apply(
        "/v1/routes/live",
        json!({"match": {"path_prefix": "/live"}, "destination": {"service": "live"},
               "websocket": {}, "auth": {"method": "api_key"}}),
    )
    .await;
    g.cp.per_consumer_limit(2, "live").await;
    let url = ws_url(&g, &format!("/live?api_key={key}"));
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(connect(&url, &[]).await.expect("101"));
    }
    assert_eq!(connect(&url, &[]).await.err(), Some(429));
}

#[tokio::test]
async fn invalid_websocket_settings_are_refused_by_field() {
    let g = Stack::new().start().await;
    g.cp.apply(
        "/v1/services/live",
        json!({"endpoints": [{"host": "127.0.0.1", "port": 9}]}),
    )
    .await;
    let base = json!({"match": {"path_prefix": "/live"}, "destination": {"service": "live"}});
    for (extra, field) in [
        (
            json!({"websocket": {"max_duration_ms": 0}}),
            "websocket.max_duration_ms",
        ),
        (json!({"websocket": {"idle": 1}}), "websocket"),
        (
            json!({"websocket": {}, "auth": {"method": "jwt", "verify_in": "envoy"}}),
            "auth.verify_in",
        ),
        (json!({"websocket": {}, "timeout_ms": 1000}), "timeout_ms"),
        (
            json!({"websocket": {}, "max_body_bytes": 1024}),
            "max_body_bytes",
        ),
    ] {
        let mut route = base.clone();
        if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
            route.extend(extra.clone());
        }
        let response = g.cp.put("/v1/routes/live", route).await;
        assert_eq!(response.status(), 422, "{extra}");
        let problem: serde_json::Value = response.json().await.expect("problem");
        assert!(problem.to_string().contains(field), "{extra} → {problem}");
    }
    assert_eq!(g.cp.get("/v1/routes/live").await.status(), 404);
}
