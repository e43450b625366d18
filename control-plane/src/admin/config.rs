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

use super::{AdminState, ApiError, VERSION_HEADER, decode_json, if_match, version_header, writer};
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
}

/// Applies a whole document atomically (see [`Store::apply`]).
pub(super) async fn apply_config(
    State(state): State<AdminState>,
    query: Result<Query<ApplyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let if_match = if_match(&headers)?;
    let document: ConfigDocument = decode_json(&body)?;
    let errors = document.validate();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let options = ApplyOptions {
        prune: query.prune,
        dry_run: query.dry_run,
        if_version: query.if_version.or(if_match),
    };
    let applied = writer(&state, &headers, Source::Apply)?
        .apply(&document, options)
        .await?;
    Ok((
        [(VERSION_HEADER, version_header(applied.version))],
        Json(applied),
    )
        .into_response())
}

/// The whole configuration in the format `PUT /v1/config` takes.
pub(super) async fn export_config(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let (version, document) = state.store.export().await?;
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
}

fn default_history_limit() -> u32 {
    50
}

pub(super) async fn versions(
    State(state): State<AdminState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let history = state
        .store
        .history(query.limit.clamp(1, 1000), query.before)
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RollbackRequest = decode_json(&body)?;
    let applied = writer(&state, &headers, Source::Rollback)?
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
