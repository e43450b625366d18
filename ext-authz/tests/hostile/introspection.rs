//! Introspection endpoints that fail in every way.

use std::time::{Duration, Instant};

use gatehouse_proto::auth;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn introspection_failures_all_deny_within_the_timeout() {
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(|body: String| async move {
            let token = body
                .split('&')
                .find_map(|p| p.strip_prefix("token="))
                .unwrap_or_default()
                .to_owned();
            match token.as_str() {
                "good" => (
                    axum::http::StatusCode::OK,
                    json!({"active": true, "sub": "carol", "scope": "orders:read"}).to_string(),
                ),
                "inactive" => (
                    axum::http::StatusCode::OK,
                    json!({"active": false}).to_string(),
                ),
                "no-active" => (
                    axum::http::StatusCode::OK,
                    json!({"sub": "carol"}).to_string(),
                ),
                "string-active" => (
                    axum::http::StatusCode::OK,
                    json!({"active": "true", "sub": "carol"}).to_string(),
                ),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (
                        axum::http::StatusCode::OK,
                        json!({"active": true, "sub": "carol"}).to_string(),
                    )
                }
                "not-json" => (axum::http::StatusCode::OK, "<html>".to_owned()),
                _ => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret = std::env::temp_dir().join(gatehouse_e2e::unique("client-secret"));
    std::fs::write(&secret, "client-secret").unwrap();
    let mut cfg = config(Vec::new());
    cfg.introspection_providers
        .push(auth::IntrospectionProvider {
            name: "oauth".into(),
            endpoint: format!("http://{addr}/introspect"),
            client_id: "gatehouse".into(),
            client_secret: Some(auth::SecretRef {
                source: Some(auth::secret_ref::Source::File(secret.display().to_string())),
            }),
            max_cache_seconds: 60,
            timeout_ms: 100,
            consumer_claim: "sub".into(),
        });
    let state = build(cfg);
    let context = policy("introspection", "");
    let ask = |token: &'static str| {
        let auth = format!("Bearer {token}");
        let state = &state;
        let context = &context;
        async move { decide_with(state, &[("authorization", &auth)], "/orders", context).await }
    };
    assert_allowed(&ask("good").await, "carol", "active token");
    for token in [
        "inactive",
        "no-active",
        "string-active",
        "slow",
        "not-json",
        "boom",
    ] {
        let started = Instant::now();
        assert_denied(&ask(token).await, 401, "invalid_token", token);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{token}: denied only after {:?}",
            started.elapsed()
        );
    }
    let _ = std::fs::remove_file(secret);
}
