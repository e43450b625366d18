//! The pre-commit check with a real Envoy: what Envoy would NACK is refused
//! with Envoy's own reason, what it accepts passes, and a check that cannot
//! run refuses rather than letting a change through unchecked.

use gatehouse_control_plane::{
    admission::EnvoyValidator,
    model::ConfigState,
    model::{Route, Service},
    store::AdmissionError,
    translate::{self, ProxySettings},
};
use gatehouse_e2e::envoy_bin;
use serde_json::json;

/// A state with one service and one route whose regex is `path_regex`,
/// built directly (model validation is what this check backs up).
fn state(path_regex: &str) -> ConfigState {
    let service: Service = serde_json::from_value(json!({
        "name": "web", "endpoints": [{"host": "127.0.0.1", "port": 9}]
    }))
    .expect("service");
    let route: Route = serde_json::from_value(json!({
        "name": "hex", "match": {"path_regex": path_regex},
        "destination": {"service": "web"}
    }))
    .expect("route");
    let mut state = ConfigState {
        version: 7,
        ..Default::default()
    };
    state.services.insert("web".into(), service);
    state.routes.insert("hex".into(), route);
    state
}

#[tokio::test]
async fn envoy_refuses_what_it_would_nack_and_passes_the_rest() {
    let validator = EnvoyValidator::new(envoy_bin());
    let proxy = ProxySettings::default();

    let good = translate::snapshot(&state("^/[0-9a-f]+$"), &proxy, 0).expect("translates");
    validator.validate(&good).await.expect("Envoy accepts it");

    // RE2 has no Unicode binary properties; Envoy refuses the route table.
    let bad =
        translate::snapshot(&state(r"^/\p{ASCII_Hex_Digit}+$"), &proxy, 0).expect("translates");
    match validator.validate(&bad).await {
        Err(AdmissionError::Refused(errors)) => {
            let message = &errors[0].message;
            assert!(
                message.contains("Envoy rejects") && message.contains("ASCII_Hex_Digit"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_validator_that_cannot_run_refuses_as_unavailable() {
    let validator = EnvoyValidator::new("/nonexistent/envoy".into());
    let snapshot =
        translate::snapshot(&state("^/a$"), &ProxySettings::default(), 0).expect("translates");
    assert!(matches!(
        validator.validate(&snapshot).await,
        Err(AdmissionError::Unavailable(_))
    ));
}
