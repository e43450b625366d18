//! Hostile input against the real decision code, in process: every case is
//! refused, and well-formed credentials are accepted (so refusals are not an
//! accident of a broken setup).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_e2e::tokens::{TestKey, b64, claims, hs256, jwks, now, raw_token};
use gatehouse_ext_authz::{
    decision::{Decision, RequestView, decide},
    http_client,
    metrics::Metrics,
    state::AuthState,
};
use gatehouse_proto::auth;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders-api";

fn issuer(keys: Value) -> auth::JwtIssuer {
    auth::JwtIssuer {
        name: "idp".into(),
        issuer: ISS.into(),
        jwks_json: keys.to_string(),
        algorithms: ["RS256", "PS256", "ES256", "EdDSA"]
            .map(String::from)
            .to_vec(),
        audiences: vec![AUD.into()],
        leeway_seconds: 30,
        consumer_claim: "sub".into(),
        forward_claims: [("email".to_string(), "x-user-email".to_string())].into(),
        jwks_min_refresh_seconds: 30,
        jwks_refresh_seconds: 300,
        ..Default::default()
    }
}

const KEY: &str =
    "gk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const EXPIRED_KEY: &str =
    "gk_ba9876543210_ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

fn api_key(key: &str, scopes: &[&str], expires_at: i64) -> auth::ApiKey {
    auth::ApiKey {
        id: key[3..15].to_owned(),
        sha256: Sha256::digest(key.as_bytes()).to_vec(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        expires_at,
    }
}

fn config(issuers: Vec<auth::JwtIssuer>) -> auth::AuthConfig {
    auth::AuthConfig {
        consumers: vec![auth::Consumer {
            name: "alice".into(),
            plan: "pro".into(),
            roles: vec!["buyer".into()],
            api_keys: vec![
                api_key(KEY, &["orders:read"], 0),
                api_key(EXPIRED_KEY, &["orders:read"], now() - 1),
            ],
            ..Default::default()
        }],
        jwt_issuers: issuers,
        introspection_providers: Vec::new(),
    }
}

fn build(config: auth::AuthConfig) -> AuthState {
    AuthState::build("1", config, None, &http_client(), &Metrics::default())
}

fn rsa() -> TestKey {
    TestKey::rsa("k1")
}

fn state() -> AuthState {
    build(config(vec![issuer(jwks(&[&rsa()]))]))
}

fn policy(methods: &str, scopes: &str) -> HashMap<String, String> {
    let mut context = HashMap::from([
        (auth::context::ROUTE.to_owned(), "orders".to_owned()),
        (auth::context::METHODS.to_owned(), methods.to_owned()),
        (auth::context::STRIP_CREDENTIALS.to_owned(), "1".to_owned()),
    ]);
    if !scopes.is_empty() {
        context.insert(auth::context::SCOPES.into(), scopes.into());
    }
    context
}

async fn decide_with(
    state: &AuthState,
    headers: &[(&str, &str)],
    path: &str,
    context: &HashMap<String, String>,
) -> Decision {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    decide(
        state,
        &RequestView {
            headers: &headers,
            path,
            context,
        },
    )
    .await
}

async fn bearer(state: &AuthState, token: &str) -> Decision {
    let auth = format!("Bearer {token}");
    decide_with(
        state,
        &[("authorization", &auth)],
        "/orders",
        &policy("jwt", ""),
    )
    .await
}

#[track_caller]
fn assert_denied(decision: &Decision, status: u16, code: &str, case: &str) {
    match decision {
        Decision::Deny(deny) => {
            assert_eq!((deny.status, deny.code), (status, code), "{case}");
        }
        Decision::Allow(allow) => panic!("{case}: wrongly accepted as {}", allow.consumer),
    }
}

#[track_caller]
fn assert_allowed(decision: &Decision, consumer: &str, case: &str) {
    match decision {
        Decision::Allow(allow) => assert_eq!(allow.consumer, consumer, "{case}"),
        Decision::Deny(deny) => panic!("{case}: refused with {}", deny.code),
    }
}

#[tokio::test]
async fn well_formed_tokens_of_every_algorithm_are_accepted() {
    let keys = [
        TestKey::rsa("rs"),
        TestKey::load("rsa-2.pem", Algorithm::PS256, "ps"),
        TestKey::load("ec-p256.pem", Algorithm::ES256, "es"),
        TestKey::load("ed25519.pem", Algorithm::EdDSA, "ed"),
    ];
    let state = build(config(vec![issuer(jwks(&keys.iter().collect::<Vec<_>>()))]));
    for key in &keys {
        let mut c = claims(ISS, AUD, "bob");
        c["email"] = json!("bob@example.com");
        let decision = bearer(&state, &key.sign(&c)).await;
        assert_allowed(&decision, "bob", &format!("{:?}", key.alg));
        let Decision::Allow(allow) = decision else {
            unreachable!()
        };
        assert!(
            allow
                .set_headers
                .contains(&("x-user-email".into(), "bob@example.com".into()))
        );
        assert!(allow.remove_headers.contains(&"authorization".to_string()));
    }
}

#[tokio::test]
async fn alg_none_in_any_case_and_stripped_signatures_are_refused() {
    let state = state();
    let c = claims(ISS, AUD, "mallory");
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": "k1"});
        assert_denied(
            &bearer(&state, &raw_token(&header, &c, b"")).await,
            401,
            "invalid_token",
            alg,
        );
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(c.to_string().as_bytes())
        );
        assert_denied(&bearer(&state, &unsigned).await, 401, "invalid_token", alg);
    }
    // A valid RS256 token with its signature removed.
    let token = rsa().sign(&c);
    let stripped = &token[..token.rfind('.').unwrap() + 1];
    assert_denied(
        &bearer(&state, stripped).await,
        401,
        "invalid_token",
        "stripped signature",
    );
    let two_parts = &token[..token.rfind('.').unwrap()];
    assert_denied(
        &bearer(&state, two_parts).await,
        401,
        "invalid_token",
        "two segments",
    );
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_refused() {
    let state = state();
    let public_pem =
        std::fs::read(gatehouse_e2e::workspace_root().join("tests/fixtures/jwt/rsa-1.pub.pem"))
            .unwrap();
    let jwk = rsa().jwk();
    let c = claims(ISS, AUD, "mallory");
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    for secret in [
        public_pem.clone(),
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        jwk.to_string().into_bytes(),
    ] {
        assert_denied(
            &bearer(&state, &hs256(&header, &c, &secret)).await,
            401,
            "invalid_token",
            "key confusion",
        );
    }
}

#[tokio::test]
async fn unknown_and_hostile_kids_are_refused() {
    let state = state();
    let c = claims(ISS, AUD, "mallory");
    for kid in [
        "k2",
        "../../../etc/passwd",
        "' OR '1'='1' --",
        "k1\0",
        "%2e%2e%2f",
        "",
    ] {
        let key = TestKey::rsa(kid);
        assert_denied(
            &bearer(&state, &key.sign(&c)).await,
            401,
            "invalid_token",
            kid,
        );
    }
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_headers_are_ignored() {
    let state = state();
    let attacker = TestKey::load("rsa-2.pem", Algorithm::RS256, "k1");
    let c = claims(ISS, AUD, "mallory");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    header.jku = Some("https://attacker.test/jwks.json".into());
    header.x5u = Some("https://attacker.test/cert.pem".into());
    header.jwk = Some(serde_json::from_value(attacker.jwk()).unwrap());
    assert_denied(
        &bearer(&state, &attacker.sign_with_header(header.clone(), &c)).await,
        401,
        "invalid_token",
        "attacker key advertised in jku/x5u/jwk",
    );
    // The same headers on a token signed by the real key change nothing.
    assert_allowed(
        &bearer(&state, &rsa().sign_with_header(header, &c)).await,
        "mallory",
        "ignored headers",
    );
}

#[tokio::test]
async fn time_claims_are_enforced_with_leeway() {
    let state = state();
    let key = rsa();
    let mut expired = claims(ISS, AUD, "a");
    expired["exp"] = json!(now() - 120);
    assert_denied(
        &bearer(&state, &key.sign(&expired)).await,
        401,
        "invalid_token",
        "expired",
    );
    let mut future = claims(ISS, AUD, "a");
    future["nbf"] = json!(now() + 120);
    assert_denied(
        &bearer(&state, &key.sign(&future)).await,
        401,
        "invalid_token",
        "nbf beyond leeway",
    );
    let mut within = claims(ISS, AUD, "a");
    within["nbf"] = json!(now() + 10);
    assert_allowed(
        &bearer(&state, &key.sign(&within)).await,
        "a",
        "nbf within leeway",
    );
    for (claim, value) in [
        ("exp", json!("99999999999")),
        ("nbf", json!(String::from("0"))),
    ] {
        let mut typed = claims(ISS, AUD, "a");
        typed[claim] = value;
        if claim == "nbf" {
            typed["nbf"] = json!((now() + 999_999).to_string());
        }
        assert_denied(
            &bearer(&state, &key.sign(&typed)).await,
            401,
            "invalid_token",
            &format!("string {claim}"),
        );
    }
}

#[tokio::test]
async fn issuer_and_audience_must_match_and_be_present() {
    let state = state();
    let key = rsa();
    let cases = [
        ("wrong iss", claims("https://evil.test/", AUD, "a")),
        ("wrong aud", claims(ISS, "other-api", "a")),
    ];
    for (case, c) in cases {
        assert_denied(
            &bearer(&state, &key.sign(&c)).await,
            401,
            "invalid_token",
            case,
        );
    }
    for missing in ["iss", "aud", "exp"] {
        let mut c = claims(ISS, AUD, "a");
        c.as_object_mut().unwrap().remove(missing);
        assert_denied(
            &bearer(&state, &key.sign(&c)).await,
            401,
            "invalid_token",
            &format!("missing {missing}"),
        );
    }
    let mut no_sub = claims(ISS, AUD, "a");
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_denied(
        &bearer(&state, &key.sign(&no_sub)).await,
        401,
        "invalid_token",
        "no consumer claim",
    );
}

#[tokio::test]
async fn critical_header_extensions_are_refused() {
    let state = state();
    let c = claims(ISS, AUD, "a");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    header.crit = Some(vec!["exp".into()]);
    assert_denied(
        &bearer(&state, &rsa().sign_with_header(header, &c)).await,
        401,
        "invalid_token",
        "crit",
    );
}

#[tokio::test]
async fn tampered_truncated_malformed_and_oversized_tokens_are_refused() {
    let state = state();
    let key = rsa();
    let token = key.sign(&claims(ISS, AUD, "alice"));
    let parts: Vec<&str> = token.split('.').collect();
    let tampered_claims = b64(claims(ISS, AUD, "admin").to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], tampered_claims, parts[2]);
    let truncated = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 4]
    );
    let bad_base64 = format!("{}.{}.{}", parts[0], "%%%not-base64%%%", parts[2]);
    let mut big = claims(ISS, AUD, "alice");
    big["padding"] = json!("x".repeat(9 * 1024));
    let oversized = key.sign(&big);
    for (case, token) in [
        ("tampered payload", tampered),
        ("truncated signature", truncated),
        ("invalid base64", bad_base64),
        ("over 8 KiB", oversized),
        ("garbage", "a.b.c".into()),
        ("four segments", format!("{token}.x")),
    ] {
        assert_denied(&bearer(&state, &token).await, 401, "invalid_token", case);
    }
    assert_allowed(
        &bearer(&state, &token).await,
        "alice",
        "the untouched token",
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_floor() {
    let fetches = Arc::new(AtomicU64::new(0));
    let counter = fetches.clone();
    let body = jwks(&[&rsa()]);
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut remote = issuer(json!({}));
    remote.jwks_json.clear();
    remote.jwks_uri = format!("http://{addr}/jwks.json");
    let state = build(config(vec![remote]));
    let c = claims(ISS, AUD, "a");
    // Wait for the initial fetch, then flood.
    gatehouse_e2e::eventually(Duration::from_secs(5), "initial JWKS fetch", || {
        let n = fetches.load(Ordering::SeqCst);
        async move { n >= 1 }
    })
    .await;
    assert_allowed(&bearer(&state, &rsa().sign(&c)).await, "a", "known kid");
    for i in 0..200 {
        let key = TestKey::load("ec-p256.pem", Algorithm::ES256, &format!("unknown-{i}"));
        assert_denied(
            &bearer(&state, &key.sign(&c)).await,
            401,
            "invalid_token",
            "unknown kid",
        );
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the initial fetch happened less than 30 s ago: no refetch"
    );
}

#[tokio::test]
async fn api_keys_refuse_wrong_secrets_expired_keys_scopes_and_ambiguity() {
    let state = state();
    let read = policy("api_key", "orders:read");
    let write = policy("api_key", "orders:write");
    let ok = decide_with(&state, &[("x-api-key", KEY)], "/orders", &read).await;
    assert_allowed(&ok, "alice", "valid key");
    let Decision::Allow(allow) = ok else {
        unreachable!()
    };
    assert!(
        allow
            .set_headers
            .contains(&("x-gatehouse-plan".into(), "pro".into()))
    );

    let wrong_secret = format!("{}{}", &KEY[..16], "f".repeat(64));
    let revoked =
        "gk_aaaaaaaaaaaa_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    for (case, key) in [
        ("valid prefix, wrong secret", wrong_secret.as_str()),
        ("unknown (revoked) key", revoked),
        ("expired key", EXPIRED_KEY),
        ("truncated key", &KEY[..40]),
        ("no prefix", &KEY[3..]),
        ("empty", ""),
    ] {
        let decision = decide_with(&state, &[("x-api-key", key)], "/orders", &read).await;
        assert_denied(&decision, 401, "invalid_credentials", case);
    }
    let scoped = decide_with(&state, &[("x-api-key", KEY)], "/orders", &write).await;
    assert_denied(
        &scoped,
        403,
        "insufficient_scope",
        "key of another route's scope",
    );
    let both = decide_with(
        &state,
        &[("x-api-key", KEY)],
        &format!("/orders?api_key={KEY}"),
        &read,
    )
    .await;
    assert_denied(&both, 401, "ambiguous_credentials", "header and query");
    let twice = decide_with(
        &state,
        &[],
        &format!("/orders?api_key={KEY}&api_key={KEY}"),
        &read,
    )
    .await;
    assert_denied(&twice, 401, "ambiguous_credentials", "query twice");
    let query = decide_with(&state, &[], &format!("/orders?x=1&api_key={KEY}"), &read).await;
    let Decision::Allow(allow) = query else {
        panic!("query key refused")
    };
    assert_eq!(allow.remove_query, vec!["api_key"]);
    let missing = decide_with(&state, &[], "/orders", &read).await;
    assert_denied(&missing, 401, "missing_credentials", "no key");
}

#[tokio::test]
async fn client_sent_identity_headers_are_removed_or_overwritten() {
    let state = state();
    let decision = decide_with(
        &state,
        &[
            ("x-api-key", KEY),
            ("x-gatehouse-consumer", "mallory"),
            ("x-gatehouse-admin", "true"),
            ("x-user-email", "ceo@example.com"),
        ],
        "/orders",
        &policy("api_key", ""),
    )
    .await;
    let Decision::Allow(allow) = decision else {
        panic!("refused")
    };
    assert!(
        allow
            .set_headers
            .contains(&("x-gatehouse-consumer".into(), "alice".into()))
    );
    for header in ["x-gatehouse-admin", "x-user-email", "x-api-key"] {
        assert!(
            allow.remove_headers.iter().any(|h| h == header),
            "{header} kept"
        );
    }
}

#[tokio::test]
async fn hmac_issuers_need_their_configured_secret() {
    let secret_var = "GATEHOUSE_TEST_HMAC_SECRET_HOSTILE";
    // SAFETY-free: tests in this binary do not read this variable concurrently.
    let mut hs = issuer(json!({}));
    hs.jwks_json.clear();
    hs.algorithms = vec!["HS256".into()];
    hs.hmac_secret = Some(auth::SecretRef {
        source: Some(auth::secret_ref::Source::Env(secret_var.into())),
    });
    // Without the variable the issuer is unusable: everything is refused.
    let state = build(config(vec![hs.clone()]));
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let c = claims(ISS, AUD, "svc");
    assert_denied(
        &bearer(&state, &hs256(&header, &c, b"s3cret-value")).await,
        401,
        "invalid_token",
        "no secret",
    );
    let path = std::env::temp_dir().join(gatehouse_e2e::unique("hmac"));
    std::fs::write(&path, "s3cret-value\n").unwrap();
    hs.hmac_secret = Some(auth::SecretRef {
        source: Some(auth::secret_ref::Source::File(path.display().to_string())),
    });
    let state = build(config(vec![hs]));
    assert_allowed(
        &bearer(&state, &hs256(&header, &c, b"s3cret-value")).await,
        "svc",
        "right secret",
    );
    assert_denied(
        &bearer(&state, &hs256(&header, &c, b"guess")).await,
        401,
        "invalid_token",
        "wrong secret",
    );
    let _ = std::fs::remove_file(path);
}

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
