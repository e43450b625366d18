//! The declarative configuration: apply and export a whole document, the
//! version history, rollback, and the current version.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    AdminState, ApiError, VERSION_HEADER,
    auth::{MaybeCaller, scope_of},
    decode_json, if_match, version_header, writer,
};
use crate::{
    model::{ConfigDocument, FieldError},
    store::{ApplyOptions, Source},
};

pub(super) async fn config_version(
    State(state): State<AdminState>,
) -> Result<Json<Value>, ApiError> {
    let version = state.store.version().await?;
    let served = state.rollout.status().served_version;
    Ok(Json(
        json!({ "version": version, "served_version": served }),
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    prune: bool,
    /// Apply only if the configuration is still at this version.
    if_version: Option<u64>,
    /// The owner the document belongs to (as its `owner` field).
    owner: Option<String>,
}

/// The owner a document is applied or exported for: the query's, the
/// document's and the token's must agree.
fn document_owner(
    requested: [Option<&str>; 2],
    caller: &MaybeCaller,
) -> Result<Option<String>, ApiError> {
    let mut owner: Option<&str> = None;
    for o in requested.into_iter().flatten() {
        match owner {
            Some(seen) if seen != o => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "owner",
                    format!("the document is for {seen:?} and for {o:?}: a document has one owner"),
                )]));
            }
            _ => owner = Some(o),
        }
    }
    match (scope_of(caller), owner) {
        (Some(scope), Some(o)) if scope != o => Err(ApiError::Forbidden(format!(
            "a token for {scope} cannot change resources of owner {o}"
        ))),
        (Some(scope), _) => Ok(Some(scope.to_owned())),
        (None, o) => Ok(o.map(str::to_owned)),
    }
}

/// Applies a whole document atomically (see [`Store::apply`]).
pub(super) async fn apply_config(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    query: Result<Query<ApplyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let if_match = if_match(&headers)?;
    let mut document: ConfigDocument = decode_json(&body)?;
    document.owner = document_owner([query.owner.as_deref(), document.owner.as_deref()], &caller)?;
    let mut errors = document.validate();
    if errors.is_empty() {
        errors = document.assign_owner();
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let options = ApplyOptions {
        prune: query.prune,
        dry_run: query.dry_run,
        if_version: query.if_version.or(if_match),
        whole: false,
    };
    let applied = writer(&state, &headers, Source::Apply, &caller)?
        .apply(&document, options)
        .await?;
    Ok((
        [(VERSION_HEADER, version_header(applied.version))],
        Json(applied),
    )
        .into_response())
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    /// Only this owner's resources, as a document with `owner` at the top.
    owner: Option<String>,
}

/// The whole configuration in the format `PUT /v1/config` takes; with an
/// owner (or for a token that reads only its own), that owner's document.
pub(super) async fn export_config(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let own_only = caller.as_ref().is_some_and(|c| c.read_own_only);
    let owner = match (query.owner, own_only) {
        (Some(owner), true) if Some(owner.as_str()) != scope_of(&caller) => {
            return Err(ApiError::Forbidden(format!(
                "this token reads only its own owner's resources, not {owner}'s"
            )));
        }
        (owner, true) => owner.or(scope_of(&caller).map(str::to_owned)),
        (owner, false) => owner,
    };
    let (version, mut document) = state.store.export().await?;
    if let Some(owner) = owner {
        document = document.of_owner(&owner);
    }
    let etag = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or(HeaderValue::from_static("\"0\""));
    Ok((
        [
            (VERSION_HEADER, version_header(version)),
            (header::ETAG, etag),
        ],
        Json(document),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    #[serde(default = "default_history_limit")]
    limit: u32,
    /// Only versions older than this (for paging).
    before: Option<u64>,
    /// Only versions that touched this owner's resources.
    owner: Option<String>,
}

fn default_history_limit() -> u32 {
    50
}

pub(super) async fn versions(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let own_only = caller.as_ref().is_some_and(|c| c.read_own_only);
    let owner = if own_only {
        scope_of(&caller).map(str::to_owned)
    } else {
        query.owner
    };
    let history = state
        .store
        .history(query.limit.clamp(1, 1000), query.before, owner.as_deref())
        .await?;
    Ok(Json(history).into_response())
}

pub(super) async fn version_record(
    State(state): State<AdminState>,
    Path(version): Path<u64>,
) -> Result<Response, ApiError> {
    Ok(Json(state.store.version_record(version).await?).into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to: u64,
}

/// Restores an earlier version's configuration as a new version.
pub(super) async fn rollback(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RollbackRequest = decode_json(&body)?;
    let applied = writer(&state, &headers, Source::Rollback, &caller)?
        .rollback(request.to)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NoSuchVersion(_) => {
                ApiError::Validation(vec![FieldError::new("to", e.to_string())])
            }
            e => e.into(),
        })?;
    Ok((
        [(VERSION_HEADER, version_header(applied.version))],
        Json(applied),
    )
        .into_response())
}
