//! Authentication end to end: admin API → control plane → (Envoy, ext-authz)
//! → real upstream. API keys with revoke and rotate, the xDS token, OAuth2
//! introspection against a test server, and what happens when ext-authz is
//! gone. JWTs are in `jwt.rs`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_e2e::{ControlPlane, Stack, eventually};
use serde_json::{Value, json};

async fn keys_of(cp: &ControlPlane, consumer: &str) -> Value {
    cp.get(&format!("/v1/consumers/{consumer}/keys"))
        .await
        .json()
        .await
        .expect("json")
}

/// Waits until ext-authz has reported key `id` of `consumer` as used.
async fn until_last_use_reported(cp: &ControlPlane, consumer: &str, id: &str) {
    eventually(Duration::from_secs(5), "last use reported", || async {
        keys_of(cp, consumer)
            .await
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["id"] == id && k["last_used_at_ms"].is_i64())
    })
    .await;
}

async fn create_key(cp: &ControlPlane, consumer: &str, body: Value) -> (String, String) {
    let response = cp
        .post(&format!("/v1/consumers/{consumer}/keys"), body)
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    (
        created["id"].as_str().expect("id").to_owned(),
        created["key"].as_str().expect("key").to_owned(),
    )
}

/// A control plane with an xDS token serves only clients that present it:
/// Envoy and ext-authz get their configuration and report key use; anyone
/// else is refused before a byte of configuration (key hashes, topology).
#[tokio::test]
async fn the_xds_port_serves_only_clients_that_present_its_token() {
    use gatehouse_proto::discovery::{
        DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    };

    const TOKEN: &str = "an-xds-token-for-the-end-to-end-test-0123";
    let g = Stack::new()
        .ext_authz(&[])
        .xds_token(TOKEN)
        .orders()
        .route("public", "/public", "orders")
        .start()
        .await;
    g.cp.apply("/v1/consumers/alice", json!({"plan": "pro"}))
        .await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key"}}),
    )
    .await;
    let (id, key) = create_key(&g.cp, "alice", json!({})).await;
    g.envoy
        .until_answer("/orders/1", &[("x-api-key", &key)], 200)
        .await;
    until_last_use_reported(&g.cp, "alice", &id).await;
    // ratelimit-service with the token gets its configuration (ready).
    let flag = format!("--xds-token={TOKEN}");
    let _limiter = gatehouse_e2e::Sidecar::ratelimit(g.cp.xds, 0, &[&flag]).await;

    for presented in [None, Some("Bearer not-the-token"), Some(TOKEN)] {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", g.cp.xds))
            .await
            .expect("connect");
        let mut request = tonic::Request::new(tokio_stream::iter([DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        }]));
        if let Some(value) = presented {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        let status = match client.stream_aggregated_resources(request).await {
            Ok(mut stream) => stream.get_mut().message().await.err(),
            Err(status) => Some(status),
        };
        let status = status.expect("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{presented:?}");
        assert!(!status.message().contains(TOKEN));
    }
}

#[tokio::test]
async fn api_keys_authenticate_revoke_and_rotate_through_envoy() {
    let g = Stack::auth(&[]).await;
    g.cp.apply(
        "/v1/consumers/alice",
        json!({"plan": "pro", "roles": ["buyer"]}),
    )
    .await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key", "scopes": ["orders:read"]}}),
    )
    .await;
    g.cp.apply(
        "/v1/routes/admin",
        json!({"match": {"path_prefix": "/admin"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key", "roles": ["admin"]}}),
    )
    .await;
    let (id, key) = create_key(&g.cp, "alice", json!({"scopes": ["orders:read"]})).await;
    assert!(key.starts_with(&format!("gk_{id}_")));
    g.envoy
        .until_answer("/orders/1", &[("x-api-key", &key)], 200)
        .await;

    // No key: 401 with a challenge and a stable error code, no upstream call.
    let missing = g.envoy.send("/orders/1", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"], "missing_credentials");
    assert!(missing.headers.contains_key("www-authenticate"));

    // Valid key: identity headers upstream, the key and spoofed headers gone.
    let ok = g
        .envoy
        .send(
            "/orders/1",
            &[
                ("x-api-key", &key),
                ("x-gatehouse-consumer", "mallory"),
                ("x-gatehouse-role", "root"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.upstream_header("x-gatehouse-consumer"), Some("alice"));
    assert_eq!(ok.upstream_header("x-gatehouse-plan"), Some("pro"));
    assert_eq!(ok.upstream_header("x-api-key"), None, "credential stripped");
    assert_eq!(
        ok.upstream_header("x-gatehouse-role"),
        None,
        "spoofed header removed"
    );

    // The key in the query works, and is removed before the upstream.
    let query = g
        .envoy
        .send(&format!("/orders/1?page=2&api_key={key}"), &[])
        .await;
    assert_eq!(query.status, 200);
    assert_eq!(query.body["query"], "page=2");

    // Public routes never see client-sent identity headers either.
    let public = g
        .envoy
        .send("/public", &[("x-gatehouse-consumer", "mallory")])
        .await;
    assert_eq!(public.status, 200);
    assert_eq!(public.upstream_header("x-gatehouse-consumer"), None);

    // Wrong secret, both places, missing role: refused.
    let forged = format!("{}{}", &key[..16], "0".repeat(64));
    assert_eq!(
        g.envoy
            .send("/orders/1", &[("x-api-key", &forged)])
            .await
            .status,
        401
    );
    let both = g
        .envoy
        .send(&format!("/orders/1?api_key={key}"), &[("x-api-key", &key)])
        .await;
    assert_eq!(
        (both.status, both.body["error"].as_str()),
        (401, Some("ambiguous_credentials"))
    );
    let role = g.envoy.send("/admin", &[("x-api-key", &key)]).await;
    assert_eq!(
        (role.status, role.body["error"].as_str()),
        (403, Some("insufficient_role"))
    );

    // Scope mismatch: a key without orders:read.
    let (_, unscoped) = create_key(&g.cp, "alice", json!({"scopes": ["billing:read"]})).await;
    g.envoy
        .until_answer("/admin", &[("x-api-key", &unscoped)], 403)
        .await;
    let scope = g.envoy.send("/orders/1", &[("x-api-key", &unscoped)]).await;
    assert_eq!(
        (scope.status, scope.body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );

    // Rotation: old and new both work until the grace deadline, then only new.
    let rotated =
        g.cp.post(
            &format!("/v1/consumers/alice/keys/{id}/rotate"),
            json!({"grace_seconds": 3}),
        )
        .await;
    assert_eq!(rotated.status(), 201);
    let rotated: Value = rotated.json().await.expect("json");
    let new_key = rotated["key"].as_str().expect("key").to_owned();
    let new_id = rotated["id"].as_str().expect("id").to_owned();
    assert_eq!(
        rotated["scopes"],
        json!(["orders:read"]),
        "scopes carried over"
    );
    g.envoy
        .until_answer("/orders/1", &[("x-api-key", &new_key)], 200)
        .await;
    assert_eq!(
        g.envoy
            .send("/orders/1", &[("x-api-key", &key)])
            .await
            .status,
        200
    );
    // ext-authz reports use: the listing shows when each key was last used.
    until_last_use_reported(&g.cp, "alice", &id).await;
    let listed = keys_of(&g.cp, "alice").await;
    let old = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(old["expires_at_ms"].is_i64(), "old key now expires: {old}");
    assert!(
        listed.to_string().find(&key[16..]).is_none(),
        "no secret in listings"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    g.envoy
        .until_answer("/orders/1", &[("x-api-key", &key)], 401)
        .await;
    assert_eq!(
        g.envoy
            .send("/orders/1", &[("x-api-key", &new_key)])
            .await
            .status,
        200
    );

    // Revocation reaches the gateway within a second.
    let revoked =
        g.cp.post(
            &format!("/v1/consumers/alice/keys/{new_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status(), 204);
    let started = Instant::now();
    eventually(
        Duration::from_secs(1),
        "revoked key refused within 1 s",
        || async {
            g.envoy
                .send("/orders/1", &[("x-api-key", &new_key)])
                .await
                .status
                == 401
        },
    )
    .await;
    eprintln!("revocation effective after {:?}", started.elapsed());

    g.cp.assert_no_nacks().await;
    let metrics = g.ext_authz().metrics().await;
    assert!(metrics.contains(
        "gatehouse_ext_authz_decisions_total{result=\"allow\",method=\"api_key\",code=\"ok\"}"
    ));
    assert!(!metrics.contains(&key[16..]), "no secret in metrics");
}

#[tokio::test]
async fn opaque_tokens_are_introspected_through_envoy() {
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                // client_id:client_secret = gatehouse:s3cret
                let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Basic Z2F0ZWhvdXNlOnMzY3JldA==");
                let answer = match (authorized, body.contains("token=opaque-good")) {
                    (false, _) => return (axum::http::StatusCode::UNAUTHORIZED, String::new()),
                    (true, true) => json!({"active": true, "sub": "erin", "scope": "orders:read",
                                           "exp": gatehouse_e2e::tokens::now() + 600}),
                    (true, false) => json!({"active": false}),
                };
                (axum::http::StatusCode::OK, answer.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let g = Stack::auth(&[("GATEHOUSE_TEST_OAUTH_SECRET", "s3cret")]).await;
    g.cp.apply(
        "/v1/introspection-providers/oauth",
        json!({"endpoint": format!("http://{addr}/introspect"), "client_id": "gatehouse",
               "client_secret": {"env": "GATEHOUSE_TEST_OAUTH_SECRET"}, "timeout_ms": 1000}),
    )
    .await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "introspection", "scopes": ["orders:read"]}}),
    )
    .await;
    g.envoy
        .until_answer("/orders", &[("authorization", "Bearer opaque-good")], 200)
        .await;
    let ok = g
        .envoy
        .send("/orders", &[("authorization", "Bearer opaque-good")])
        .await;
    assert_eq!(ok.upstream_header("x-gatehouse-consumer"), Some("erin"));
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            g.envoy
                .send("/orders", &[("authorization", "Bearer opaque-good")])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "active answers are cached"
    );
    assert_eq!(
        g.envoy
            .send("/orders", &[("authorization", "Bearer opaque-revoked")])
            .await
            .status,
        401
    );
    let exported: Value = g.cp.get("/v1/config").await.json().await.expect("json");
    assert_eq!(
        exported["introspection_providers"][0]["client_secret"],
        json!({"env": "GATEHOUSE_TEST_OAUTH_SECRET"}),
        "only the reference is stored and exported"
    );
    g.cp.assert_no_nacks().await;
}

#[tokio::test]
async fn decisions_survive_the_control_plane_and_fail_closed_without_ext_authz() {
    let mut g = Stack::auth(&[]).await;
    g.cp.apply("/v1/consumers/alice", json!({})).await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key"}}),
    )
    .await;
    g.cp.apply(
        "/v1/routes/catalog",
        json!({"match": {"path_prefix": "/catalog"}, "destination": {"service": "orders"},
               "auth": {"method": "api_key", "failure_mode": "open"}}),
    )
    .await;
    let (_, key) = create_key(&g.cp, "alice", json!({})).await;
    g.envoy
        .until_answer("/orders", &[("x-api-key", &key)], 200)
        .await;
    g.envoy.until_answer("/catalog", &[], 401).await;

    // The control plane goes away: Envoy and ext-authz keep their last
    // configuration, and decisions go on unchanged.
    g.cp.kill().await;
    for _ in 0..10 {
        assert_eq!(
            g.envoy.send("/orders", &[("x-api-key", &key)]).await.status,
            200
        );
        assert_eq!(g.envoy.send("/orders", &[]).await.status, 401);
    }

    g.ext_authz_mut().kill().await;
    // Every protected, fail-closed request gets the configured error status,
    // with or without a valid key; nothing reaches the upstream.
    for headers in [vec![], vec![("x-api-key", key.as_str())]] {
        for _ in 0..10 {
            let answer = g.envoy.send("/orders", &headers).await;
            assert_eq!(answer.status, 503, "fail closed");
        }
    }
    // Fail-open routes let requests through, marked; public routes are untouched.
    let open = g.envoy.send("/catalog", &[]).await;
    assert_eq!(open.status, 200);
    assert_eq!(
        open.upstream_header("x-envoy-auth-failure-mode-allowed"),
        Some("true")
    );
    assert_eq!(g.envoy.send("/public", &[]).await.status, 200);
}
