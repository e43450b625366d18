//! Admin tokens over the API: create (the secret shown once), list, revoke.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use serde_json::Value;

use super::{AdminState, ApiError, auth, decode_json};
use crate::model::FieldError;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: auth::Role,
}

pub(super) async fn create_token(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: NewToken = decode_json(&body)?;
    let mut errors = Vec::new();
    crate::model::check_name(&request.name, "name", &mut errors);
    if request.name == "bootstrap" {
        errors.push(FieldError::new("name", "\"bootstrap\" is reserved"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let issued = auth::issue().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a token");
        ApiError::Internal
    })?;
    let record = state
        .store
        .create_admin_token(
            &request.name,
            request.role.as_str(),
            &issued.hash,
            &issued.prefix,
        )
        .await?;
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    // The only time the secret is ever shown.
    body["token"] = Value::String(issued.secret.expose().to_owned());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn list_tokens(State(state): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(state.store.list_admin_tokens().await?).into_response())
}

pub(super) async fn revoke_token(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !crate::model::is_dns_label(&name) {
        return Err(ApiError::Missing(format!(
            "admin token {name:?} does not exist"
        )));
    }
    if state.store.delete_admin_token(&name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::Missing(format!(
            "admin token {name:?} does not exist"
        )))
    }
}
