//! The admin REST API: resources by name under `/v1`, the declarative
//! configuration with its history and rollback, admin tokens, node status,
//! usage per route and consumer, health and metrics.
//!
//! Every resource kind gets the same five operations from one generic set of
//! handlers. Input is validated in full before the store is touched; every
//! error is an RFC 7807 problem (see [`problem`]); access is checked by
//! [`auth`]; the OpenAPI document is in [`openapi`].

pub mod auth;
mod canary;
mod config;
pub(crate) mod keys;
mod node_tokens;
pub mod openapi;
pub mod problem;
mod rollout;
mod tokens;
mod usage;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::Value;
use std::time::Duration;

use crate::{
    model::{
        Certificate, Consumer, FieldError, Gateway, IntrospectionProvider, JwtIssuer, Owner, Plan,
        RateLimitPolicy, Resource, Route, Service, Topic,
    },
    store::{Origin, Source, Store},
    telemetry::{HttpLabels, Metrics},
    xds::{Rollout, status::NodeRegistry},
};
use auth::{MaybeCaller, may_read, scope_of};
pub use problem::ApiError;

/// Response header carrying the config version after a write.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-config-version");
/// Request header naming who makes a change, recorded in the history.
pub const ACTOR_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-actor");

/// The store, recording writes under the request's actor and confined to
/// the caller's owner, if its token is scoped.
fn writer(
    state: &AdminState,
    headers: &HeaderMap,
    source: Source,
    caller: &MaybeCaller,
) -> Result<Store, ApiError> {
    let actor = match headers.get(&ACTOR_HEADER) {
        None => "anonymous".to_owned(),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|a| {
                !a.is_empty()
                    && a.len() <= 64
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._@:-".contains(&b))
            })
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    ACTOR_HEADER.as_str(),
                    "must be 1-64 letters, digits or . _ @ : -",
                )])
            })?,
    };
    Ok(state
        .store
        .with_origin(Origin { actor, source })
        .with_scope(scope_of(caller).map(str::to_owned)))
}

#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub nodes: NodeRegistry,
    pub metrics: Metrics,
    /// What the fleet is served, and which versions nodes rejected.
    pub rollout: Rollout,
    /// Configured at start; authentication is enforced when set.
    pub bootstrap_token: Option<auth::Secret>,
}

/// The whole admin API; shared by `main` and the tests.
pub fn app(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route(
            "/v1/config/schema.json",
            get(|| async { Json(openapi::document_schema()) }),
        )
        .route(
            "/v1/config",
            get(config::export_config).put(config::apply_config),
        )
        .route("/v1/config/version", get(config::config_version))
        .route("/v1/config/versions", get(config::versions))
        .route("/v1/config/versions/{version}", get(config::version_record))
        .route("/v1/config/rollback", axum::routing::post(config::rollback))
        .route("/v1/status/nodes", get(rollout::nodes))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/status/release", axum::routing::post(rollout::release))
        .route("/v1/status/confirm", axum::routing::post(rollout::confirm))
        .route("/v1/rollout", get(canary::status).post(canary::start))
        .route("/v1/rollout/promote", axum::routing::post(canary::promote))
        .route("/v1/rollout/abort", axum::routing::post(canary::abort))
        .route(
            "/v1/admin-tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route(
            "/v1/admin-tokens/{name}",
            axum::routing::delete(tokens::revoke_token),
        )
        .route(
            "/v1/xds-tokens",
            get(node_tokens::list).post(node_tokens::create),
        )
        .route(
            "/v1/xds-tokens/{name}",
            axum::routing::delete(node_tokens::revoke),
        )
        .merge(resource_routes::<Owner>())
        .merge(resource_routes::<Service>())
        .merge(resource_routes::<Route>())
        .merge(resource_routes::<Consumer>())
        .merge(resource_routes::<JwtIssuer>())
        .merge(resource_routes::<IntrospectionProvider>())
        .merge(resource_routes::<Plan>())
        .merge(resource_routes::<Certificate>())
        .merge(resource_routes::<Gateway>())
        .merge(resource_routes::<RateLimitPolicy>())
        .merge(resource_routes::<Topic>())
        .merge(resource_routes::<crate::model::GrpcApi>())
        .merge(keys::routes())
        .fallback(|| async { ApiError::NoSuchPath })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), require_store))
        .layer(axum::extract::DefaultBodyLimit::max(
            problem::MAX_BODY_BYTES,
        ))
        .layer(middleware::from_fn(problem::framework_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

fn resource_routes<R: Resource>() -> Router<AdminState> {
    let collection = format!("/v1/{}", R::KIND.plural());
    Router::new()
        .route(&collection, get(list::<R>).post(create::<R>))
        .route(
            &format!("{collection}/{{name}}"),
            get(read::<R>).put(replace::<R>).delete(delete::<R>),
        )
}

async fn count_requests(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let response = next.run(request).await;
    state
        .metrics
        .admin_requests
        .get_or_create(&HttpLabels {
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// How long a request made while the control plane is starting waits for
/// the store to be ready before it is answered `503 starting`.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Requests made while the store is being prepared (migrations) wait for it,
/// at most [`STARTUP_WAIT`]; then they are answered `503 starting` with
/// `Retry-After`, never "store unavailable". The control plane starts even
/// while its database is down. Node status needs no store.
///
/// While the store is known to be down, requests that need it are answered
/// 503 at once (node status and canaries do not: a canary can be aborted
/// while the store is down); a request that finds it unreachable has the store checked
/// (a direct connection attempt) so the next ones need not wait.
async fn require_store(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let needs_store = path.starts_with("/v1/")
        && !path.starts_with("/v1/status/")
        && !path.starts_with("/v1/rollout")
        && path != "/v1/openapi.json"
        && path != "/v1/config/schema.json";
    if needs_store {
        if !state.store.wait_migrated(STARTUP_WAIT).await {
            return ApiError::Starting.into_response();
        }
        if state.store.is_down() {
            return ApiError::Unavailable.into_response();
        }
    }
    let response = next.run(request).await;
    if response
        .extensions()
        .get::<problem::StoreUnreachable>()
        .is_some()
    {
        state.store.notice(&crate::store::StoreError::Down).await;
    }
    response
}

/// 200 once writes will succeed and Envoy can be served: the store is
/// migrated and reachable and a snapshot is built.
async fn readyz(State(state): State<AdminState>) -> Response {
    if !state.store.is_migrated() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: preparing the store",
        )
            .into_response();
    }
    if state.store.is_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response();
    }
    if let Err(e) = state.store.ping().await {
        tracing::debug!(error = %e, "not ready: store unreachable");
        state.store.notice(&e).await;
        return (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response();
    }
    if state.rollout.watch().borrow().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet").into_response();
    }
    "ready".into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this owner's resources.
    owner: Option<String>,
    /// Only resources with this label, `key=value`.
    label: Option<String>,
}

async fn list<R: Resource>(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<R>>, ApiError> {
    let axum::extract::Query(query) = query?;
    let label = match &query.label {
        None => None,
        Some(label) => Some(label.split_once('=').ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new("label", "must be key=value")])
        })?),
    };
    let mut resources = state.store.list::<R>().await?;
    resources.retain(|r| {
        may_read(&caller, r.owner(), r.shared())
            && query.owner.as_deref().is_none_or(|o| r.owner() == Some(o))
            && label.is_none_or(|(k, v)| r.labels().get(k).is_some_and(|l| l == v))
    });
    Ok(Json(resources))
}

async fn read<R: Resource>(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !R::is_valid_name(&name) {
        return Err(ApiError::NotFound {
            kind: R::KIND,
            name,
        });
    }
    let (resource, version) = state
        .store
        .get_versioned::<R>(&name)
        .await?
        .filter(|(r, _)| may_read(&caller, r.owner(), r.shared()))
        .ok_or(ApiError::NotFound {
            kind: R::KIND,
            name,
        })?;
    Ok(([(header::ETAG, etag(version))], Json(resource)).into_response())
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` header names (`"42"`), if any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().trim_matches('"').parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "if-match",
                "must be an ETag this API returned, e.g. \"42\"",
            )])
        })
}

#[tracing::instrument(name = "admin.create", skip_all, fields(kind = R::KIND.plural()))]
async fn create<R: Resource>(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource: R = owned_by_caller(parse(&body, None)?, &caller)?;
    let written = writer(&state, &headers, Source::Api, &caller)?
        .create(&resource)
        .await?;
    let location = format!("/v1/{}/{}", R::KIND.plural(), resource.name());
    Ok(written_response(
        StatusCode::CREATED,
        written,
        Some(location),
        resource,
    ))
}

#[tracing::instrument(name = "admin.replace", skip_all, fields(kind = R::KIND.plural(), name = %name))]
async fn replace<R: Resource>(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource: R = owned_by_caller(parse(&body, Some(&name))?, &caller)?;
    let written = writer(&state, &headers, Source::Api, &caller)?
        .upsert_if(&resource, if_match(&headers)?)
        .await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(written_response(status, written, None, resource))
}

#[tracing::instrument(name = "admin.delete", skip_all, fields(kind = R::KIND.plural(), name = %name))]
async fn delete<R: Resource>(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !R::is_valid_name(&name) {
        return Err(ApiError::NotFound {
            kind: R::KIND,
            name,
        });
    }
    let version = writer(&state, &headers, Source::Api, &caller)?
        .delete_if(R::KIND, &name, if_match(&headers)?)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(VERSION_HEADER, version_header(version))],
    )
        .into_response())
}

/// A resource written by a caller scoped to an owner belongs to that owner:
/// without `owner` it is given it; naming another is refused.
fn owned_by_caller<R: Resource>(mut resource: R, caller: &MaybeCaller) -> Result<R, ApiError> {
    let Some(scope) = scope_of(caller) else {
        return Ok(resource);
    };
    match resource.owner() {
        None => resource.set_owner(Some(scope.to_owned())),
        Some(owner) if owner == scope => {}
        Some(other) => {
            return Err(ApiError::Forbidden(format!(
                "a token for {scope} cannot write resources of owner {other}"
            )));
        }
    }
    Ok(resource)
}

fn version_header(version: u64) -> HeaderValue {
    HeaderValue::from(version)
}

fn written_response<R: Resource>(
    status: StatusCode,
    written: crate::store::Written,
    location: Option<String>,
    resource: R,
) -> Response {
    let mut response = (
        status,
        [
            (VERSION_HEADER, version_header(written.version)),
            (header::ETAG, etag(written.resource_version)),
        ],
        Json(resource),
    )
        .into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Parses and validates a request body. With `path_name` (PUT), the body's
/// `name` may be omitted but must not differ from the path.
pub fn parse<R: Resource>(body: &[u8], path_name: Option<&str>) -> Result<R, ApiError> {
    let mut value: Value = decode_json(body)?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "the body must be a JSON object",
        )]));
    };
    if let Some(path_name) = path_name {
        if !R::is_valid_name(path_name) {
            return Err(ApiError::Validation(vec![FieldError::new(
                "name",
                format!("{path_name:?} is not a valid {} name", R::KIND.as_str()),
            )]));
        }
        match object.get("name") {
            None => {
                object.insert("name".into(), Value::String(path_name.to_owned()));
            }
            Some(Value::String(name)) if name == path_name => {}
            Some(_) => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "name",
                    format!("must match the name in the path ({path_name:?})"),
                )]));
            }
        }
    }
    let resource: R = from_value(value)?;
    let errors = resource.check();
    if errors.is_empty() {
        Ok(resource)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Decodes JSON, naming the offending field on failure.
fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::Validation(vec![FieldError::new("", format!("malformed JSON: {e}"))])
    })?;
    from_value(value)
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        ApiError::Validation(vec![deserialize_error(&path, inner)])
    })
}

/// Names the offending field: for a missing field serde reports the
/// enclosing object, so the field name is appended.
fn deserialize_error(path: &str, message: String) -> FieldError {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    // serde_path_to_error already ends the path with an unknown field's name.
    let child = quoted("missing field `");
    let field = match (path, child) {
        (".", Some(child)) | ("", Some(child)) => child,
        (path, Some(child)) => format!("{path}.{child}"),
        (".", None) => String::new(),
        (path, None) => path.to_owned(),
    };
    FieldError::new(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let err = parse::<Route>(
            br#"{"name":"r","match":{"path_prefix":"/","colour":1},"destination":{"service":"s"}}"#,
            None,
        )
        .unwrap_err();
        let ApiError::Validation(errors) = err else {
            panic!("validation")
        };
        assert_eq!(errors[0].field, "match.colour");

        let err = parse::<Service>(br#"{"endpoints":[{"host":"a"}]}"#, Some("svc")).unwrap_err();
        let ApiError::Validation(errors) = err else {
            panic!("validation")
        };
        assert_eq!(errors[0].field, "endpoints[0].port");

        let err = parse::<Service>(br#"{"name":"other"}"#, Some("svc")).unwrap_err();
        let ApiError::Validation(errors) = err else {
            panic!("validation")
        };
        assert_eq!(errors[0].field, "name");

        assert!(matches!(
            parse::<Service>(b"{not json", None),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            parse::<Service>(
                br#"{"name":"ok","endpoints":[{"host":"10.0.0.1","port":70000}]}"#,
                None
            ),
            Err(ApiError::Validation(_))
        ));
    }
}
