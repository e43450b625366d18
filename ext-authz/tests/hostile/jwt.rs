//! Hostile JWTs: algorithms, keys, headers, time and identity claims,
//! tampering, floods of unknown key ids, HMAC secrets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use gatehouse_e2e::tokens::{TestKey, b64, claims, hs256, jwks, now, raw_token};
use gatehouse_ext_authz::decision::Decision;
use gatehouse_proto::auth;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

use crate::support::*;

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
