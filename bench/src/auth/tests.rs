//! The bench's own check: its identity floor answers as ext-authz does.

use super::*;

/// The identity floor stands for Gatehouse only if Envoy gets the same
/// answer from both.
#[tokio::test]
async fn the_identity_floor_answers_what_ext_authz_answers_for_the_bench_key() {
    let rsa = TestKey::rsa("rs");
    let state = AuthState::build(
        "1",
        auth_config(&[&rsa]),
        None,
        &http_client(),
        &Metrics::default(),
    );
    let request = check_request("/key", &[("x-api-key", KEY)], "api_key");
    let gatehouse = check_response(&state, &request, &Metrics::default()).await;
    assert_eq!(NoopAuthz::with_identity().response, gatehouse);
}
