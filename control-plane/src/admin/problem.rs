//! The admin API's one error type, rendered as RFC 7807 `application/problem+json`.
//! Store faults become 503/500 with a generic message: details go to the log only.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    model::{FieldError, Kind},
    store::{AdmissionError, StoreError},
};

#[derive(Debug)]
pub enum ApiError {
    /// The request body or path is invalid; nothing was changed.
    Validation(Vec<FieldError>),
    NotFound {
        kind: Kind,
        name: String,
    },
    /// The write conflicts with the current configuration.
    Conflict(String),
    NoSuchPath,
    /// Something other than a resource is missing (a version, say).
    Missing(String),
    /// No valid admin token was presented.
    Unauthenticated(&'static str),
    /// The token's role does not allow this.
    Forbidden(String),
    /// An `If-Match` / `if_version` precondition did not hold.
    PreconditionFailed(String),
    /// The store cannot be reached.
    Unavailable,
    /// The control plane is still starting (the store is being prepared).
    Starting,
    /// Too many writes wait for their turn.
    Busy,
    /// The pre-commit check could not run, so nothing was committed.
    CheckUnavailable(String),
    Internal,
    /// An error the HTTP framework answered (a body over the limit, a path
    /// segment that does not decode, a method the path does not take).
    Http {
        status: StatusCode,
        detail: String,
    },
}

/// Marks a response that found the store unreachable, so the API can find
/// out at once whether the store is down (see `store/health.rs`).
#[derive(Debug, Clone, Copy)]
pub struct StoreUnreachable;

/// The largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Makes the framework's own error answers under `/v1/` RFC 7807 problems
/// like every other error, keeping their status and headers (`Allow` on a
/// 405). The probes (`/healthz`, `/readyz`) keep their plain answers.
pub async fn framework_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = request.uri().path().starts_with("/v1/");
    let response = next.run(request).await;
    if !api {
        return response;
    }
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes")
        }
        StatusCode::METHOD_NOT_ALLOWED => "this path does not take that method".to_owned(),
        _ => String::from_utf8_lossy(&text).trim().to_owned(),
    };
    let mut problem = ApiError::Http { status, detail }.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::Validation(vec![FieldError::new("query", e.body_text())])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { .. }
            | StoreError::InUse { .. }
            | StoreError::HistoryUnavailable(_)
            | StoreError::TokenExists(_)
            | StoreError::KeyNotActive(_)
            | StoreError::OwnedByOther { .. }
            | StoreError::OwnerHasTokens { .. }
            | StoreError::NothingHeld => ApiError::Conflict(e.to_string()),
            StoreError::Forbidden(message) => ApiError::Forbidden(message),
            StoreError::UnknownOwner(_) => {
                ApiError::Validation(vec![FieldError::new("owner", e.to_string())])
            }
            StoreError::NoSuchVersion(_) => ApiError::Missing(e.to_string()),
            StoreError::VersionMismatch { .. } | StoreError::ResourceChanged { .. } => {
                ApiError::PreconditionFailed(e.to_string())
            }
            StoreError::NotFound { kind, name } => ApiError::NotFound { kind, name },
            StoreError::MissingReference { field, kind, name } => {
                ApiError::Validation(vec![FieldError::new(
                    field,
                    format!("{} {name:?} does not exist", kind.as_str()),
                )])
            }
            StoreError::PrivateKey { field, message } => {
                ApiError::Validation(vec![FieldError::new(field, message)])
            }
            StoreError::Admission(AdmissionError::Refused(errors)) => ApiError::Validation(errors),
            StoreError::Admission(AdmissionError::Unavailable(reason)) => {
                tracing::error!(reason, "cannot check the change; nothing committed");
                ApiError::CheckUnavailable(reason)
            }
            StoreError::Busy => ApiError::Busy,
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %e, kind = e.kind(), "store failure");
                ApiError::Internal
            }
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found", "Resource not found"),
            ApiError::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with the current configuration",
            ),
            ApiError::NoSuchPath => (StatusCode::NOT_FOUND, "no-such-path", "No such API path"),
            ApiError::Missing(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            ApiError::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "The configuration changed since it was read",
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Configuration store unavailable",
            ),
            ApiError::Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "The control plane is starting",
            ),
            ApiError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "The control plane is busy",
            ),
            ApiError::CheckUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "check-unavailable",
                "The configuration could not be checked",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
            ApiError::Http { status, .. } => match *status {
                StatusCode::BAD_REQUEST => (*status, "bad-request", "Malformed request"),
                StatusCode::METHOD_NOT_ALLOWED => {
                    (*status, "method-not-allowed", "Method not allowed")
                }
                StatusCode::PAYLOAD_TOO_LARGE => {
                    (*status, "payload-too-large", "Request body too large")
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                    (*status, "unsupported-media-type", "Unsupported media type")
                }
                s if s.is_server_error() => (*status, "internal", "Internal error"),
                _ => (*status, "http-error", "Request refused"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let detail = match &self {
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| {
                    if e.field.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{}: {}", e.field, e.message)
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::NotFound { kind, name } => {
                format!("{} {name:?} does not exist", kind.as_str())
            }
            ApiError::Conflict(message)
            | ApiError::Missing(message)
            | ApiError::PreconditionFailed(message)
            | ApiError::Forbidden(message) => message.clone(),
            ApiError::Unauthenticated(message) => (*message).to_owned(),
            ApiError::NoSuchPath => "see the admin API reference for the paths it serves".into(),
            ApiError::Unavailable => {
                "the configuration store cannot be reached; nothing was changed".into()
            }
            ApiError::Busy => format!(
                "more than {} writes are waiting for their turn; retry shortly; nothing was changed",
                crate::store::MAX_QUEUED
            ),
            ApiError::Starting => {
                "the configuration store is still being prepared; retry shortly (see /readyz); nothing was changed".into()
            }
            ApiError::CheckUnavailable(reason) => {
                format!("{reason}; nothing was changed")
            }
            ApiError::Internal => "the request failed; see the control plane log".into(),
            ApiError::Http { status, .. } if status.is_server_error() => {
                "the request failed; see the control plane log".into()
            }
            ApiError::Http { detail, .. } => detail.clone(),
        };
        let mut body = json!({
            "type": format!("urn:gatehouse:problem:{code}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let ApiError::Validation(errors) = &self {
            body["errors"] = json!(errors);
        }
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unavailable) {
            response.extensions_mut().insert(StoreUnreachable);
        }
        if matches!(
            self,
            ApiError::Starting | ApiError::Unavailable | ApiError::Busy
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if let ApiError::Unauthenticated(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
            );
        }
        response
    }
}
