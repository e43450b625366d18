//! JWTs end to end: tokens from a JWKS the test serves and rotates, checked
//! by ext-authz; issuers verified inside Envoy (`verify_in: envoy`) reaching
//! it over ECDS without touching the listener; Envoy's own verification
//! answering like ext-authz.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, ExtAuthz, Stack, Upstream, XdsVariant, eventually,
    free_port,
    tokens::{TestKey, claims, jwks},
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// A JWKS endpoint whose key set the test changes.
async fn jwks_server(initial: Value) -> (SocketAddr, Arc<Mutex<Value>>) {
    let current = Arc::new(Mutex::new(initial));
    let served = current.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = served.lock().expect("jwks lock").clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, current)
}

#[tokio::test]
async fn jwts_from_a_rotating_jwks_through_envoy() {
    const ISS: &str = "https://idp.test/";
    let g = Stack::auth(&[]).await;
    let old = TestKey::rsa("2026-old");
    let ec = TestKey::load("ec-p256.pem", Algorithm::ES256, "2026-ec");
    let new = TestKey::load("rsa-2.pem", Algorithm::RS256, "2026-new");
    let (addr, keys) = jwks_server(jwks(&[&old, &ec])).await;
    g.cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks_uri": format!("http://{addr}/jwks.json"),
               "algorithms": ["RS256", "ES256"], "audiences": ["orders-api"],
               "forward_claims": {"email": "x-user-email"}, "jwks_min_refresh_seconds": 1}),
    )
    .await;
    g.cp.apply("/v1/consumers/dave", json!({"plan": "enterprise"}))
        .await;
    g.cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "jwt", "scopes": ["orders:read"]}}),
    )
    .await;
    let mut c = claims(ISS, "orders-api", "dave");
    c["scope"] = json!("orders:read orders:write");
    c["email"] = json!("dave@example.com");
    let bearer = |token: String| format!("Bearer {token}");
    let rs = bearer(old.sign(&c));
    g.envoy
        .until_answer("/orders", &[("authorization", &rs)], 200)
        .await;
    let ok = g
        .envoy
        .send(
            "/orders",
            &[("authorization", &rs), ("x-user-email", "ceo@example.com")],
        )
        .await;
    assert_eq!(ok.upstream_header("x-gatehouse-consumer"), Some("dave"));
    assert_eq!(ok.upstream_header("x-gatehouse-plan"), Some("enterprise"));
    assert_eq!(ok.upstream_header("x-user-email"), Some("dave@example.com"));
    assert_eq!(ok.upstream_header("authorization"), None, "token stripped");
    assert_eq!(
        g.envoy
            .send("/orders", &[("authorization", &bearer(ec.sign(&c)))])
            .await
            .status,
        200
    );

    let mut narrow = c.clone();
    narrow["scope"] = json!("billing:read");
    let denied = g
        .envoy
        .send("/orders", &[("authorization", &bearer(old.sign(&narrow)))])
        .await;
    assert_eq!(denied.status, 403);
    let challenge = denied.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let expired = {
        let mut e = c.clone();
        e["exp"] = json!(gatehouse_e2e::tokens::now() - 600);
        bearer(old.sign(&e))
    };
    assert_eq!(
        g.envoy
            .send("/orders", &[("authorization", &expired)])
            .await
            .status,
        401
    );

    // The issuer rotates: the new kid is added and the old one removed. A
    // token with the new kid makes ext-authz refetch; the old key is gone.
    *keys.lock().unwrap() = jwks(&[&new, &ec]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = bearer(new.sign(&c));
    g.envoy
        .until_answer("/orders", &[("authorization", &fresh)], 200)
        .await;
    let stale = bearer(old.sign(&{
        let mut s = c.clone();
        s["jti"] = json!("never-seen");
        s
    }));
    assert_eq!(
        g.envoy
            .send("/orders", &[("authorization", &stale)])
            .await
            .status,
        401
    );
    g.cp.assert_no_nacks().await;
}

/// Issuers verified in Envoy reach it over ECDS: adding and removing keys
/// changes the `jwt_authn` configuration, never the listener, so open
/// connections are not drained.
#[tokio::test]
async fn issuer_key_changes_reach_envoy_without_touching_the_listener() {
    const ISS: &str = "https://idp.test/";
    const AUD: &str = "orders-api";
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.validate_with_envoy = true;
    let cp = ControlPlane::start(options).await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let upstream = Upstream::start("orders").await;
    cp.apply("/v1/services/orders", upstream.service("orders"))
        .await;
    let old = TestKey::rsa("2026-old");
    let new = TestKey::load("rsa-2.pem", Algorithm::RS256, "2026-new");
    let issuer = |keys: &[&TestKey]| json!({"issuer": ISS, "jwks": jwks(keys), "algorithms": ["RS256"], "audiences": [AUD]});
    cp.apply("/v1/jwt-issuers/idp", issuer(&[&old])).await;
    cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "jwt", "verify_in": "envoy"}}),
    )
    .await;
    let bearer = |key: &TestKey| format!("Bearer {}", key.sign(&claims(ISS, AUD, "erin")));
    let (old_token, new_token) = (bearer(&old), bearer(&new));
    envoy
        .until_answer("/orders", &[("authorization", &old_token)], 200)
        .await;
    assert_eq!(
        envoy
            .send("/orders", &[("authorization", &new_token)])
            .await
            .status,
        401
    );
    let modified = envoy.stat("listener_manager.listener_modified").await;
    assert!(modified.is_some(), "Envoy counts listener changes");

    // Rotation: the new key is added, then the old one removed.
    cp.apply("/v1/jwt-issuers/idp", issuer(&[&old, &new])).await;
    envoy
        .until_answer("/orders", &[("authorization", &new_token)], 200)
        .await;
    let version = cp.apply("/v1/jwt-issuers/idp", issuer(&[&new])).await;
    cp.until_converged(version).await;
    envoy
        .until_answer("/orders", &[("authorization", &old_token)], 401)
        .await;
    assert_eq!(
        envoy
            .send("/orders", &[("authorization", &new_token)])
            .await
            .status,
        200
    );
    assert_eq!(
        envoy.stat("listener_manager.listener_modified").await,
        modified,
        "issuer changes must not replace the listener"
    );
    cp.assert_no_nacks().await;
}

/// `verify_in: envoy`: Envoy's own `jwt_authn` verifies the token, with no
/// ext-authz call, and answers like ext-authz does.
#[tokio::test]
async fn jwts_verified_in_envoy_without_ext_authz() {
    use gatehouse_e2e::tokens::{hs256, now, raw_token};
    const ISS: &str = "https://idp.test/";
    const AUD: &str = "orders-api";
    let proxy_port = free_port();
    let ext_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.ext_authz_addr = Some(SocketAddr::from(([127, 0, 0, 1], ext_port)));
    options.validate_with_envoy = true;
    let cp = ControlPlane::start(options).await;
    let mut ext = ExtAuthz::start(cp.xds, ext_port, &[]).await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::Delta).await;
    let upstream = Upstream::start("orders").await;
    cp.apply("/v1/services/orders", upstream.service("orders"))
        .await;

    let old = TestKey::rsa("2026-old");
    let ec = TestKey::load("ec-p256.pem", Algorithm::ES256, "2026-ec");
    let new = TestKey::load("rsa-2.pem", Algorithm::RS256, "2026-new");
    let partner = TestKey::load("ed25519.pem", Algorithm::EdDSA, "partner-1");
    let (addr, keys) = jwks_server(jwks(&[&old, &ec])).await;
    cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks_uri": format!("http://{addr}/jwks.json"),
               "algorithms": ["RS256", "ES256"], "audiences": [AUD],
               "forward_claims": {"email": "x-user-email"}, "jwks_refresh_seconds": 10,
               "jwks_min_refresh_seconds": 1}),
    )
    .await;
    cp.apply(
        "/v1/jwt-issuers/partner",
        json!({"issuer": "https://partner.test/", "jwks": jwks(&[&partner]),
               "algorithms": ["EdDSA"], "audiences": [AUD]}),
    )
    .await;
    cp.apply("/v1/consumers/dave", json!({"plan": "enterprise"}))
        .await;
    cp.apply(
        "/v1/routes/orders",
        json!({"match": {"path_prefix": "/orders"}, "destination": {"service": "orders"},
               "auth": {"method": "jwt", "verify_in": "envoy", "scopes": ["orders:read"]}}),
    )
    .await;
    cp.apply(
        "/v1/routes/audit",
        json!({"match": {"path_prefix": "/audit"}, "destination": {"service": "orders"},
               "auth": {"method": "jwt", "verify_in": "envoy", "strip_credentials": false}}),
    )
    .await;
    cp.apply(
        "/v1/routes/slow",
        json!({"match": {"path_prefix": "/slow"}, "destination": {"service": "orders"},
               "auth": {"method": "jwt"}}),
    )
    .await;

    let mut c = claims(ISS, AUD, "dave");
    c["scope"] = json!("orders:read orders:write");
    c["email"] = json!("dave@example.com");
    let bearer = |token: String| format!("Bearer {token}");
    let good = bearer(old.sign(&c));
    envoy
        .until_answer("/orders", &[("authorization", &good)], 200)
        .await;
    envoy
        .until_answer("/slow", &[("authorization", &good)], 200)
        .await;

    // Allowed: identity headers from the token replace the client's; the
    // plan (consumer records live in ext-authz) is not set, nor spoofable.
    let ok = envoy
        .send(
            "/orders",
            &[
                ("authorization", &good),
                ("x-gatehouse-consumer", "admin"),
                ("x-gatehouse-plan", "enterprise"),
                ("x-user-email", "ceo@example.com"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.upstream_header("x-gatehouse-consumer"), Some("dave"));
    assert_eq!(ok.upstream_header("x-user-email"), Some("dave@example.com"));
    assert_eq!(ok.upstream_header("x-gatehouse-plan"), None);
    assert_eq!(ok.upstream_header("authorization"), None, "token stripped");
    let kept = envoy.send("/audit", &[("authorization", &good)]).await;
    assert_eq!(kept.upstream_header("authorization"), Some(good.as_str()));
    for token in [ec.sign(&c), {
        let mut p = c.clone();
        p["iss"] = json!("https://partner.test/");
        p.as_object_mut().map(|o| o.remove("scope"));
        p["scp"] = json!(["orders:read"]);
        partner.sign(&p)
    }] {
        assert_eq!(
            envoy
                .send("/orders", &[("authorization", &bearer(token))])
                .await
                .status,
            200
        );
    }

    // Denials in ext-authz's shape.
    let missing = envoy
        .send("/orders", &[("x-gatehouse-consumer", "dave")])
        .await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"], "missing_credentials");
    assert_eq!(
        missing.headers["www-authenticate"],
        "Bearer realm=\"gatehouse\""
    );
    let mut narrow = c.clone();
    narrow["scope"] = json!("billing:read");
    let denied = envoy
        .send("/orders", &[("authorization", &bearer(old.sign(&narrow)))])
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body["error"], "insufficient_scope");
    assert_eq!(
        denied.headers["www-authenticate"],
        "Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"orders:read\"",
        "the route's scopes, as ext-authz names them"
    );

    // Hostile tokens: every one refused as invalid; each has an accepted twin above.
    let header = json!({"alg": "RS256", "kid": "2026-old", "typ": "JWT"});
    let without = |claim: &str| {
        let mut x = c.clone();
        x.as_object_mut().map(|o| o.remove(claim));
        old.sign(&x)
    };
    let with = |claim: &str, value: serde_json::Value| {
        let mut x = c.clone();
        x[claim] = value;
        old.sign(&x)
    };
    let crit = {
        let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
        h.kid = Some("2026-old".into());
        h.crit = Some(vec!["exp2".into()]);
        old.sign_with_header(h, &c)
    };
    let disallowed_alg = {
        // The issuer allows RS256 and ES256; the key could sign RS512 too.
        let mut h = jsonwebtoken::Header::new(Algorithm::RS512);
        h.kid = Some("2026-old".into());
        old.sign_with_header(h, &c)
    };
    let good_parts: Vec<&str> = good["Bearer ".len()..].split('.').collect();
    let hostile = [
        ("algorithm the issuer does not allow", disallowed_alg),
        ("expired", with("exp", json!(now() - 600))),
        ("not yet valid", with("nbf", json!(now() + 600))),
        ("wrong issuer", with("iss", json!("https://evil.test/"))),
        ("wrong audience", with("aud", json!("billing-api"))),
        ("no exp", without("exp")),
        ("no aud", without("aud")),
        ("no iss", without("iss")),
        ("crit", crit),
        (
            "alg none",
            raw_token(&json!({"alg": "nOnE", "kid": "2026-old"}), &c, b""),
        ),
        (
            "stripped signature",
            format!("{}.{}.", good_parts[0], good_parts[1]),
        ),
        (
            "key confusion",
            hs256(
                &header,
                &c,
                serde_json::to_string(&old.jwk()).unwrap().as_bytes(),
            ),
        ),
        (
            "unknown kid",
            raw_token(
                &json!({"alg": "RS256", "kid": "../../etc/passwd"}),
                &c,
                b"sig",
            ),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                good_parts[0],
                with("sub", json!("admin"))
                    .split('.')
                    .nth(1)
                    .unwrap_or_default(),
                good_parts[2]
            ),
        ),
        (
            "truncated signature",
            format!(
                "{}.{}.{}",
                good_parts[0],
                good_parts[1],
                &good_parts[2][..good_parts[2].len() / 2]
            ),
        ),
        ("invalid base64", "!!!.???.***".to_owned()),
    ];
    // /orders has scopes (the payload in metadata), /audit none (the header only).
    for ((what, token), path) in hostile
        .into_iter()
        .flat_map(|h| [(h.clone(), "/orders"), (h, "/audit")])
    {
        let answer = envoy.send(path, &[("authorization", &bearer(token))]).await;
        assert_eq!(answer.status, 401, "{what} on {path}");
        assert_eq!(answer.body["error"], "invalid_token", "{what}");
        assert_eq!(
            answer.headers["www-authenticate"],
            "Bearer realm=\"gatehouse\", error=\"invalid_token\"",
            "{what}"
        );
    }

    // No ext-authz on the path: with it gone, routes verified in Envoy still
    // answer, while routes that need it fail closed.
    ext.kill().await;
    assert_eq!(
        envoy
            .send("/orders", &[("authorization", &good)])
            .await
            .status,
        200
    );
    assert_eq!(
        envoy
            .send("/slow", &[("authorization", &good)])
            .await
            .status,
        503
    );

    // The issuer rotates: Envoy picks the new key set up on its refresh.
    *keys.lock().unwrap() = jwks(&[&new, &ec]);
    let fresh = bearer(new.sign(&c));
    eventually(Duration::from_secs(20), "the rotated key", || async {
        envoy
            .send("/orders", &[("authorization", &fresh)])
            .await
            .status
            == 200
    })
    .await;
    let stale = bearer(with("jti", json!("never-seen")));
    assert_eq!(
        envoy
            .send("/orders", &[("authorization", &stale)])
            .await
            .status,
        401
    );

    // An issuer Envoy cannot use leaves such routes without one: refused.
    let refused = cp.delete("/v1/jwt-issuers/partner").await;
    assert_eq!(refused.status(), 204);
    let refused = cp.delete("/v1/jwt-issuers/idp").await;
    assert_eq!(refused.status(), 422);
    cp.assert_no_nacks().await;
}
