//! Node and fleet xDS tokens over the API (admin role): create (the token
//! shown once), list, revoke. A revoked token's streams are closed.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::{AdminState, ApiError, decode_json};
use crate::model::node_token::StoredNodeToken;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNodeToken {
    name: String,
    #[serde(default)]
    fleet: Option<String>,
    #[serde(default)]
    node: Option<String>,
}

pub(super) async fn create(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: NewNodeToken = decode_json(&body)?;
    let errors = StoredNodeToken::validate(
        &request.name,
        request.fleet.as_deref(),
        request.node.as_deref(),
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let issued = crate::secret::issue_node_token().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a token");
        ApiError::Internal
    })?;
    let mut record = StoredNodeToken {
        name: request.name,
        sha256: issued.hash,
        prefix: issued.prefix,
        fleet: request.fleet,
        node: request.node,
        created_at_ms: crate::clock::now_ms(),
    };
    let version = state.store.create_node_token(&record).await?;
    record.sha256.clear();
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    // The only time the token is ever shown.
    body["token"] = Value::String(issued.secret.expose().to_owned());
    body["version"] = Value::from(version);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn list(State(state): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(state.store.list_node_tokens().await?).into_response())
}

pub(super) async fn revoke(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::Missing(format!("xDS token {name:?} does not exist"));
    if !crate::model::is_dns_label(&name) {
        return Err(missing());
    }
    match state.store.revoke_node_token(&name).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(missing()),
    }
}
