use super::*;

fn route(json: serde_json::Value) -> Route {
    serde_json::from_value(json).expect("valid json")
}

fn fields(errors: Vec<FieldError>) -> Vec<String> {
    errors.into_iter().map(|e| e.field).collect()
}

#[test]
fn valid_route_has_no_errors() {
    let r = route(serde_json::json!({
        "name": "users",
        "match": {"path_prefix": "/users", "methods": ["GET"], "hosts": ["api.example.com"],
                  "headers": [{"name": "x-env", "exact": "canary"}]},
        "destination": {"weighted": [{"service": "a", "weight": 90}, {"service": "b", "weight": 10}]},
        "strip_prefix": true,
        "timeout_ms": 1500
    }));
    assert_eq!(r.validate(), vec![]);
    let names: Vec<_> = r.references().into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn route_errors_name_their_fields() {
    let r = route(serde_json::json!({
        "name": "Bad_Name",
        "match": {"path_prefix": "users", "methods": ["FETCH"]},
        "destination": {"weighted": [{"service": "a", "weight": 0}]},
    }));
    assert_eq!(
        fields(r.validate()),
        vec![
            "name",
            "match.path_prefix",
            "match.methods[0]",
            "destination.weighted"
        ]
    );
}

#[test]
fn weighted_destinations_are_capped() {
    let weighted: Vec<_> = (0..=MAX_WEIGHTED_SERVICES)
        .map(|i| serde_json::json!({"service": format!("s{i}"), "weight": MAX_WEIGHT}))
        .collect();
    let r = route(serde_json::json!({
        "name": "r", "match": {"path_prefix": "/"}, "destination": {"weighted": weighted}
    }));
    assert_eq!(fields(r.validate()), vec!["destination.weighted"]);
}

#[test]
fn exactly_one_path_matcher() {
    let r = route(serde_json::json!({
        "name": "r", "match": {"path_prefix": "/a", "path_exact": "/a"},
        "destination": {"service": "s"}
    }));
    assert_eq!(fields(r.validate()), vec!["match"]);
}

#[test]
fn rewrite_rules() {
    let r = route(serde_json::json!({
        "name": "r", "match": {"path_regex": "^/a$"}, "destination": {"service": "s"},
        "strip_prefix": true, "prefix_rewrite": "/b"
    }));
    assert_eq!(
        fields(r.validate()),
        vec!["strip_prefix", "prefix_rewrite", "prefix_rewrite"]
    );
}
