//! Hostile API keys and identity headers.

use gatehouse_ext_authz::decision::Decision;

use crate::support::*;

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
