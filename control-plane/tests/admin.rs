//! The admin API in process (`app()` with `oneshot`, no socket) over a real
//! SQLite store: status codes, headers and problem bodies.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use gatehouse_control_plane::{
    admin::{self, AdminState},
    store::{DatabaseUrl, Store},
    telemetry::Metrics,
    xds::{Rollout, Snapshot, status::NodeRegistry},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    app: Router,
    rollout: Rollout,
}

async fn api() -> Api {
    api_with(None).await
}

async fn api_with(bootstrap: Option<&str>) -> Api {
    let (api, store) = unmigrated(bootstrap);
    store.migrate().await.unwrap();
    api
}

/// An API over a store whose migrations have not run yet (a control plane
/// that is still starting).
fn unmigrated(bootstrap: Option<&str>) -> (Api, Store) {
    let dir = std::env::temp_dir().join(format!(
        "gatehouse_admin_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::connect_lazy(&DatabaseUrl::sqlite_in(&dir)).unwrap();
    let rollout = Rollout::default();
    let app = admin::app(AdminState {
        store: store.clone(),
        nodes: NodeRegistry::default(),
        metrics: Metrics::default(),
        rollout: rollout.clone(),
        bootstrap_token: bootstrap.map(|t| admin::auth::Secret::new(t.into())),
    });
    (Api { app, rollout }, store)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_as(None, method, path, body).await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .header("x-gatehouse-actor", "mallory")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn version(reply: &Reply) -> u64 {
    reply.headers["x-gatehouse-config-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn create_read_replace_delete() {
    let api = api().await;
    let service = json!({"name": "users", "endpoints": [{"host": "10.0.0.1", "port": 80}]});
    let created = api
        .call("POST", "/v1/services", Some(service.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.headers["location"], "/v1/services/users");
    assert_eq!(version(&created), 1);
    assert_eq!(created.body["protocol"], "http1", "defaults are filled in");

    let again = api
        .call("POST", "/v1/services", Some(service.clone()))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let same = api.call("PUT", "/v1/services/users", Some(service)).await;
    assert_eq!(
        (same.status, version(&same)),
        (StatusCode::OK, 1),
        "identical PUT keeps the version"
    );

    let listed = api.call("GET", "/v1/services", None).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));
    let read = api.call("GET", "/v1/services/users", None).await;
    assert_eq!(read.body["endpoints"][0]["port"], 80);

    let deleted = api.call("DELETE", "/v1/services/users", None).await;
    assert_eq!(
        (deleted.status, version(&deleted)),
        (StatusCode::NO_CONTENT, 2)
    );
    let gone = api.call("GET", "/v1/services/users", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.headers["content-type"], "application/problem+json");
    assert_eq!(gone.body["type"], "urn:gatehouse:problem:not-found");

    let current = api.call("GET", "/v1/config/version", None).await;
    assert_eq!(current.body["version"], 2);
}

#[tokio::test]
async fn problems_name_fields_and_paths() {
    let api = api().await;
    let bad = api
        .call(
            "PUT",
            "/v1/routes/r",
            Some(json!({"match": {"path_prefix": "x"}, "destination": {}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["match.path_prefix", "destination"]);
    assert!(
        bad.body["detail"]
            .as_str()
            .unwrap()
            .contains("match.path_prefix")
    );

    let unknown = api.call("GET", "/v1/nothing", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["type"], "urn:gatehouse:problem:no-such-path");

    let bad_path_name = api
        .call(
            "PUT",
            "/v1/services/Not_A_Label",
            Some(json!({"endpoints": []})),
        )
        .await;
    assert_eq!(bad_path_name.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// The first write of a fresh control plane can arrive before its store is
/// prepared: it waits for the start-up instead of failing, and `/readyz`
/// says "starting" meanwhile.
#[tokio::test]
async fn a_write_during_start_up_waits_for_the_store() {
    let (api, store) = unmigrated(None);
    let ready = api.call("GET", "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.as_str().unwrap_or_default().contains("starting"),
        "{:?}",
        ready.body
    );
    let write = api.call(
        "PUT",
        "/v1/services/demo",
        Some(json!({"endpoints": [{"host": "127.0.0.1", "port": 9}]})),
    );
    let start_up = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        store.migrate().await.unwrap();
    };
    let (write, ()) = tokio::join!(write, start_up);
    assert_eq!(write.status, StatusCode::CREATED, "{:?}", write.body);
}

#[tokio::test]
async fn readiness_needs_a_snapshot_and_metrics_count_requests() {
    let api = api().await;
    assert_eq!(
        api.call("GET", "/healthz", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    api.rollout.offer(Arc::new(Snapshot::default()));
    assert_eq!(
        api.call("GET", "/readyz", None).await.status,
        StatusCode::OK
    );
    let metrics = api.call("GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("gatehouse_admin_requests_total"), "{text}");
    assert!(text.contains("gatehouse_xds_streams"), "{text}");
}

#[tokio::test]
async fn declarative_apply_and_export() {
    let api = api().await;
    let doc = json!({
        "services": [{"name": "a", "endpoints": [{"host": "10.0.0.1", "port": 80}]}],
        "routes": [{"name": "r", "match": {"path_prefix": "/"}, "destination": {"service": "a"}}]
    });
    let preview = api
        .call("PUT", "/v1/config?dry_run=true", Some(doc.clone()))
        .await;
    assert_eq!(preview.status, StatusCode::OK);
    assert_eq!(preview.body["dry_run"], true);
    assert_eq!(preview.body["changes"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        api.call("GET", "/v1/config/version", None).await.body["version"],
        0
    );

    let applied = api.call("PUT", "/v1/config", Some(doc.clone())).await;
    assert_eq!((applied.status, version(&applied)), (StatusCode::OK, 1));
    let exported = api.call("GET", "/v1/config", None).await;
    assert_eq!(version(&exported), 1);
    assert_eq!(exported.body["routes"][0]["name"], "r");
    assert_eq!(exported.body["services"][0]["protocol"], "http1");

    let bad = json!({"services": [], "routes": [{"name": "r", "match": {"path_prefix": "/"},
                                                  "destination": {"service": "a"}}]});
    let refused = api.call("PUT", "/v1/config?prune=true", Some(bad)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.body["errors"][0]["field"],
        "routes[0].destination.service"
    );
    let bad_query = api.call("PUT", "/v1/config?dry_run=maybe", Some(doc)).await;
    assert_eq!(bad_query.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_query.body["errors"][0]["field"], "query");
    assert_eq!(
        api.call("GET", "/v1/config/version", None).await.body["version"],
        1
    );
}

#[tokio::test]
async fn if_match_history_and_rollback() {
    let api = api().await;
    let doc = |port: u16| json!({"services": [{"name": "a", "endpoints": [{"host": "10.0.0.1", "port": port}]}]});
    api.call("PUT", "/v1/config", Some(doc(80))).await;
    let exported = api.call("GET", "/v1/config", None).await;
    assert_eq!(exported.headers["etag"], "\"1\"");

    let request = |if_match: &str| {
        Request::builder()
            .method("PUT")
            .uri("/v1/config")
            .header("if-match", if_match)
            .header("x-gatehouse-actor", "ci")
            .body(Body::from(doc(81).to_string()))
            .unwrap()
    };
    let stale = api.app.clone().oneshot(request("\"0\"")).await.unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let fresh = api.app.clone().oneshot(request("\"1\"")).await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);

    let history = api.call("GET", "/v1/config/versions?limit=1", None).await;
    assert_eq!(history.body[0]["version"], 2);
    assert_eq!(history.body[0]["actor"], "ci");
    let detail = api.call("GET", "/v1/config/versions/2", None).await;
    assert_eq!(
        detail.body["changes"][0]["before"]["endpoints"][0]["port"],
        80
    );

    let rolled = api
        .call("POST", "/v1/config/rollback", Some(json!({"to": 1})))
        .await;
    assert_eq!((rolled.status, version(&rolled)), (StatusCode::OK, 3));
    let read = api.call("GET", "/v1/services/a", None).await;
    assert_eq!(read.body["endpoints"][0]["port"], 80);
    let bad = api
        .call("POST", "/v1/config/rollback", Some(json!({"to": 7})))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["field"], "to");
    let missing = api.call("GET", "/v1/config/versions/70", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

const BOOTSTRAP: &str = "bootstrap-token-for-tests-0123456789abcdef";

#[tokio::test]
async fn tokens_and_roles() {
    let api = api_with(Some(BOOTSTRAP)).await;
    let anonymous = api.call("GET", "/v1/routes", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        api.call("GET", "/healthz", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/metrics", None).await.status,
        StatusCode::OK
    );
    let wrong = api
        .call_as(Some("ghadm_nope"), "GET", "/v1/routes", None)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let mut tokens = std::collections::HashMap::new();
    for (name, role) in [("reader", "viewer"), ("ci", "editor")] {
        let created = api
            .call_as(
                Some(BOOTSTRAP),
                "POST",
                "/v1/admin-tokens",
                Some(json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        tokens.insert(name, created.body["token"].as_str().unwrap().to_owned());
    }
    let listed = api
        .call_as(Some(BOOTSTRAP), "GET", "/v1/admin-tokens", None)
        .await;
    let text = listed.body.to_string();
    assert!(
        text.contains("\"prefix\":\"ghadm_") && !text.contains(&tokens["ci"]),
        "{text}"
    );
    assert!(!text.contains("hash"), "{text}");

    let service = json!({"endpoints": [{"host": "10.0.0.1", "port": 80}]});
    let reader = tokens["reader"].as_str();
    assert_eq!(
        api.call_as(Some(reader), "GET", "/v1/routes", None)
            .await
            .status,
        StatusCode::OK
    );
    let denied = api
        .call_as(Some(reader), "PUT", "/v1/services/a", Some(service.clone()))
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body["type"], "urn:gatehouse:problem:forbidden");

    let ci = tokens["ci"].as_str();
    let written = api
        .call_as(Some(ci), "PUT", "/v1/services/a", Some(service))
        .await;
    assert_eq!(written.status, StatusCode::CREATED);
    let history = api
        .call_as(Some(ci), "GET", "/v1/config/versions", None)
        .await;
    assert_eq!(
        history.body[0]["actor"], "ci",
        "the token's name, not the client's claim"
    );
    assert_eq!(
        api.call_as(Some(ci), "GET", "/v1/admin-tokens", None)
            .await
            .status,
        StatusCode::FORBIDDEN,
        "only admins manage tokens"
    );

    let revoked = api
        .call_as(Some(BOOTSTRAP), "DELETE", "/v1/admin-tokens/ci", None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.call_as(Some(ci), "GET", "/v1/routes", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let reserved = api
        .call_as(
            Some(BOOTSTRAP),
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "bootstrap", "role": "admin"})),
        )
        .await;
    assert_eq!(reserved.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn open_on_loopback_until_the_first_token_exists() {
    let api = api().await;
    assert_eq!(
        api.call("GET", "/v1/routes", None).await.status,
        StatusCode::OK
    );
    let created = api
        .call(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "root", "role": "admin"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        api.call("GET", "/v1/routes", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let token = created.body["token"].as_str().unwrap();
    assert_eq!(
        api.call_as(Some(token), "GET", "/v1/routes", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn etags_and_if_match_on_resources() {
    let api = api().await;
    let service = |port: u16| json!({"endpoints": [{"host": "10.0.0.1", "port": port}]});
    let created = api.call("PUT", "/v1/services/a", Some(service(80))).await;
    assert_eq!(created.headers["etag"], "\"1\"");
    let read = api.call("GET", "/v1/services/a", None).await;
    assert_eq!(read.headers["etag"], "\"1\"");

    let with_if_match = |method: &str, if_match: &str, body: Option<Value>| {
        Request::builder()
            .method(method)
            .uri("/v1/services/a")
            .header("if-match", if_match)
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap()
    };
    let updated = api
        .app
        .clone()
        .oneshot(with_if_match("PUT", "\"1\"", Some(service(81))))
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.headers()["etag"], "\"2\"");
    let stale = api
        .app
        .clone()
        .oneshot(with_if_match("PUT", "\"1\"", Some(service(82))))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let stale_delete = api
        .app
        .clone()
        .oneshot(with_if_match("DELETE", "\"1\"", None))
        .await
        .unwrap();
    assert_eq!(stale_delete.status(), StatusCode::PRECONDITION_FAILED);
    let garbage = api
        .app
        .clone()
        .oneshot(with_if_match("DELETE", "W/xyz", None))
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let deleted = api
        .app
        .clone()
        .oneshot(with_if_match("DELETE", "\"2\"", None))
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

/// The framework's own refusals are RFC 7807 problems too: a path segment
/// that does not decode, a method the path does not take (with `Allow`), a
/// body over the documented limit, and an unknown path.
#[tokio::test]
async fn every_error_is_a_problem() {
    let api = api().await;
    let problem = |reply: &Reply| {
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{:?}",
            reply.body
        );
        reply.body["type"].as_str().unwrap_or_default().to_owned()
    };

    let undecodable = api.call("GET", "/v1/services/%FF", None).await;
    assert_eq!(undecodable.status, StatusCode::BAD_REQUEST);
    assert_eq!(problem(&undecodable), "urn:gatehouse:problem:bad-request");

    let method = api.call("PATCH", "/v1/services/web", None).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(&method), "urn:gatehouse:problem:method-not-allowed");
    assert!(method.headers.contains_key("allow"), "{:?}", method.headers);

    let huge = json!({"endpoints": [], "padding": "x".repeat(3 * 1024 * 1024)});
    let too_large = api.call("PUT", "/v1/services/web", Some(huge)).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        problem(&too_large),
        "urn:gatehouse:problem:payload-too-large"
    );
    assert!(
        too_large.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("2097152 bytes"),
        "{:?}",
        too_large.body
    );

    let unknown = api.call("DELETE", "/v2/nothing", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(problem(&unknown), "urn:gatehouse:problem:no-such-path");
}
