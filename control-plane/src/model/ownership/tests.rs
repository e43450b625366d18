use super::*;
use crate::model::{Plan, Route, Service};

fn route(name: &str, owner: Option<&str>, json: serde_json::Value) -> Route {
    let mut value = serde_json::json!({"name": name, "destination": {"service": "s"}});
    if let Some(owner) = owner {
        value["owner"] = owner.into();
    }
    for (k, v) in json.as_object().into_iter().flatten() {
        value[k] = v.clone();
    }
    serde_json::from_value(value).expect("route")
}

fn state(routes: Vec<Route>) -> ConfigState {
    let mut state = ConfigState::default();
    let service: Service =
        serde_json::from_value(serde_json::json!({"name": "s", "shared": true})).expect("service");
    state.services.insert("s".into(), service);
    for r in routes {
        state.routes.insert(r.name.clone(), r);
    }
    state
}

fn messages(state: &ConfigState) -> Vec<String> {
    check_state(state).into_iter().map(|e| e.message).collect()
}

#[test]
fn routes_of_two_teams_must_not_overlap() {
    let prefix = |p: &str| serde_json::json!({"match": {"path_prefix": p}});
    let a = route("a-orders", Some("team-a"), prefix("/orders"));
    // Same prefix, and a longer one inside team-a's: both capture.
    for (b, overlaps) in [
        (route("b", Some("team-b"), prefix("/orders")), true),
        (route("b", Some("team-b"), prefix("/orders/export")), true),
        (route("b", Some("team-b"), prefix("/")), true),
        (
            route(
                "b",
                Some("team-b"),
                serde_json::json!({"match": {"path_exact": "/orders/1"}}),
            ),
            true,
        ),
        (route("b", Some("team-b"), prefix("/payments")), false),
        (
            route(
                "b",
                Some("team-b"),
                serde_json::json!({"match": {"path_prefix": "/orders", "hosts": ["b.example.com"]}}),
            ),
            true,
        ),
        (route("b", Some("team-a"), prefix("/orders/mine")), false),
        (route("b", None, prefix("/orders/ops")), false),
        (
            route(
                "b",
                Some("team-b"),
                serde_json::json!({"match": {"path_regex": "/orders/.*"}}),
            ),
            false,
        ),
    ] {
        let found = messages(&state(vec![a.clone(), b.clone()]));
        assert_eq!(!found.is_empty(), overlaps, "{:?}: {found:?}", b.matches);
        if overlaps {
            assert!(
                found[0].contains("\"a-orders\" (owner team-a)"),
                "{found:?}"
            );
            assert!(found[0].contains("\"b\" (owner team-b)"), "{found:?}");
        }
    }
}

#[test]
fn different_hosts_never_overlap() {
    let on = |name: &str, owner: &str, host: &str| {
        route(
            name,
            Some(owner),
            serde_json::json!({"match": {"path_prefix": "/", "hosts": [host]}}),
        )
    };
    let routes = vec![
        on("a", "team-a", "a.example.com"),
        on("b", "team-b", "b.example.com"),
    ];
    assert!(messages(&state(routes)).is_empty());
    let routes = vec![
        on("a", "team-a", "a.example.com"),
        on("b", "team-b", "A.example.com"),
    ];
    assert_eq!(messages(&state(routes)).len(), 1);
}

#[test]
fn references_across_owners_need_a_shared_target() {
    let mut s = state(vec![route(
        "a",
        Some("team-a"),
        serde_json::json!({"match": {"path_prefix": "/a"}}),
    )]);
    assert!(check_state(&s).is_empty(), "the service is shared");
    if let Some(service) = s.services.get_mut("s") {
        service.shared = false;
    }
    let errors = check_state(&s);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "destination.service");
    assert!(
        errors[0]
            .message
            .contains("of the operators, which is not shared"),
        "{}",
        errors[0].message
    );
    // Within one owner, nothing needs sharing.
    if let Some(service) = s.services.get_mut("s") {
        service.owner = Some("team-a".into());
    }
    assert!(check_state(&s).is_empty());
}

#[test]
fn unowned_configurations_are_never_checked() {
    let routes = vec![
        route(
            "a",
            None,
            serde_json::json!({"match": {"path_prefix": "/"}}),
        ),
        route(
            "b",
            None,
            serde_json::json!({"match": {"path_prefix": "/"}}),
        ),
    ];
    let mut s = state(routes);
    if let Some(service) = s.services.get_mut("s") {
        service.shared = false;
    }
    assert!(check_state(&s).is_empty());
}

#[test]
fn owners_and_labels_are_validated() {
    let plan: Plan = serde_json::from_value(serde_json::json!({
        "name": "free", "limits": [], "owner": "Team A",
        "labels": {"tier": "free", "Bad Key": "x", "ok/key.1": "v\n"}
    }))
    .expect("plan");
    let fields: Vec<String> = validate_meta(&plan).into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["owner", "labels.Bad Key", "labels.ok/key.1"]);
}
