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
use crate::{model::FieldError, store::NewAdminToken};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: auth::Role,
    /// Scoped to one owner: writes only its resources.
    #[serde(default)]
    owner: Option<String>,
    /// What a scoped token reads: `all` (default) or `own` (its owner's and
    /// shared resources).
    #[serde(default)]
    read: ReadScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReadScope {
    #[default]
    All,
    Own,
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
    if let Some(owner) = &request.owner {
        crate::model::check_name(owner, "owner", &mut errors);
        if request.role == auth::Role::Admin {
            errors.push(FieldError::new(
                "owner",
                "an admin token cannot be scoped to an owner (use viewer or editor)",
            ));
        }
    } else if request.read == ReadScope::Own {
        errors.push(FieldError::new("read", "`own` needs an `owner`"));
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
        .create_admin_token(NewAdminToken {
            name: &request.name,
            role: request.role.as_str(),
            token_hash: &issued.hash,
            prefix: &issued.prefix,
            owner: request.owner.as_deref(),
            read_own_only: request.read == ReadScope::Own,
        })
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
