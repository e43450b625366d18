//! What the hostile-input tests share: an issuer, keys, a state built like
//! ext-authz builds it, asking for a decision, and asserting its answer.

use std::collections::HashMap;

use gatehouse_e2e::tokens::{TestKey, jwks, now};
use gatehouse_ext_authz::{
    decision::{Decision, RequestView, decide},
    http_client,
    metrics::Metrics,
    state::AuthState,
};
use gatehouse_proto::auth;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub(crate) const ISS: &str = "https://idp.test/";
pub(crate) const AUD: &str = "orders-api";

pub(crate) fn issuer(keys: Value) -> auth::JwtIssuer {
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

pub(crate) const KEY: &str =
    "gk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub(crate) const EXPIRED_KEY: &str =
    "gk_ba9876543210_ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

pub(crate) fn api_key(key: &str, scopes: &[&str], expires_at: i64) -> auth::ApiKey {
    auth::ApiKey {
        id: key[3..15].to_owned(),
        sha256: Sha256::digest(key.as_bytes()).to_vec(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        expires_at,
    }
}

pub(crate) fn config(issuers: Vec<auth::JwtIssuer>) -> auth::AuthConfig {
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

pub(crate) fn build(config: auth::AuthConfig) -> AuthState {
    AuthState::build("1", config, None, &http_client(), &Metrics::default())
}

pub(crate) fn rsa() -> TestKey {
    TestKey::rsa("k1")
}

pub(crate) fn state() -> AuthState {
    build(config(vec![issuer(jwks(&[&rsa()]))]))
}

pub(crate) fn policy(methods: &str, scopes: &str) -> HashMap<String, String> {
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

pub(crate) async fn decide_with(
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
            peer_certificate: "",
        },
    )
    .await
}

pub(crate) async fn bearer(state: &AuthState, token: &str) -> Decision {
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
pub(crate) fn assert_denied(decision: &Decision, status: u16, code: &str, case: &str) {
    match decision {
        Decision::Deny(deny) => {
            assert_eq!((deny.status, deny.code), (status, code), "{case}");
        }
        Decision::Allow(allow) => panic!("{case}: wrongly accepted as {}", allow.consumer),
    }
}

#[track_caller]
pub(crate) fn assert_allowed(decision: &Decision, consumer: &str, case: &str) {
    match decision {
        Decision::Allow(allow) => assert_eq!(allow.consumer, consumer, "{case}"),
        Decision::Deny(deny) => panic!("{case}: refused with {}", deny.code),
    }
}
