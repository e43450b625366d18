//! API keys under `/v1/consumers/{name}/keys`: create (the key is shown once),
//! list, revoke, and rotate with a grace period the caller chooses.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    AdminState, ApiError, VERSION_HEADER,
    auth::{MaybeCaller, may_read, scope_of},
    decode_json, version_header, writer,
};
use crate::{
    model::{
        Consumer, FieldError, Kind, Resource,
        auth::{ApiKeyStatus, StoredApiKey, is_consumer_name, mint_api_key},
    },
    store::Source,
};

/// Longest lifetime and grace period a caller may ask for: ten years.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/consumers/{name}/keys", get(list).post(create))
        .route("/v1/consumers/{name}/keys/{id}/revoke", post(revoke))
        .route("/v1/consumers/{name}/keys/{id}/rotate", post(rotate))
}

/// A new key's scopes and lifetime (`ttl_seconds` or `expires_at_ms`, not both).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// Rotation: the old key keeps working for `grace_seconds`, then only the new
/// one does. The new key takes the old one's scopes unless given.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub grace_seconds: u64,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// A key as the API shows it: never the key, never its hash.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyView {
    pub id: String,
    /// The key's public start (`gk_<id>`), to recognise it.
    pub prefix: String,
    pub consumer: String,
    pub scopes: Vec<String>,
    pub status: ApiKeyStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    /// The key itself: only in the response that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl KeyView {
    fn new(stored: &StoredApiKey, last_used_at_ms: Option<i64>, now: i64) -> Self {
        Self {
            id: stored.id.clone(),
            prefix: stored.prefix(),
            consumer: stored.consumer.clone(),
            scopes: stored.scopes.clone(),
            status: stored.status(now),
            created_at_ms: stored.created_at_ms,
            expires_at_ms: stored.expires_at_ms,
            revoked_at_ms: stored.revoked_at_ms,
            last_used_at_ms,
            key: None,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn consumer_path(name: String) -> Result<String, ApiError> {
    if is_consumer_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::NotFound {
            kind: Kind::Consumer,
            name,
        })
    }
}

fn key_path(id: String) -> Result<String, ApiError> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(ApiError::NotFound {
            kind: Kind::ApiKey,
            name: id,
        })
    }
}

/// When a key asked for with `ttl_seconds` or `expires_at_ms` expires.
fn expiry(
    ttl_seconds: Option<u64>,
    expires_at_ms: Option<i64>,
    now: i64,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match (ttl_seconds, expires_at_ms) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "ttl_seconds",
                "give ttl_seconds or expires_at_ms, not both",
            ));
            None
        }
        (Some(ttl), None) if ttl == 0 || ttl > MAX_SECONDS => {
            errors.push(FieldError::new(
                "ttl_seconds",
                format!("must be between 1 and {MAX_SECONDS}"),
            ));
            None
        }
        (Some(ttl), None) => Some(now + (ttl as i64) * 1000),
        (None, Some(at)) if at <= now || at > now + (MAX_SECONDS as i64) * 1000 => {
            errors.push(FieldError::new(
                "expires_at_ms",
                "must be in the future, within ten years",
            ));
            None
        }
        (None, at) => at,
    }
}

fn mint(
    consumer: &str,
    scopes: Vec<String>,
    expires_at_ms: Option<i64>,
    now: i64,
) -> Result<(StoredApiKey, String), ApiError> {
    let minted = mint_api_key().map_err(|e| {
        tracing::error!(error = %e, "no randomness for an API key");
        ApiError::Internal
    })?;
    let stored = StoredApiKey {
        id: minted.id,
        consumer: consumer.to_owned(),
        sha256: minted.sha256,
        scopes,
        created_at_ms: now,
        expires_at_ms,
        revoked_at_ms: None,
    };
    Ok((stored, minted.key))
}

fn created(stored: &StoredApiKey, key: String, version: u64, now: i64) -> Response {
    let mut view = KeyView::new(stored, None, now);
    view.key = Some(key);
    (
        StatusCode::CREATED,
        [(VERSION_HEADER, version_header(version))],
        Json(view),
    )
        .into_response()
}

/// A caller scoped to an owner manages only its own consumers' keys.
async fn may_change_keys(
    state: &AdminState,
    caller: &MaybeCaller,
    consumer: &str,
) -> Result<(), ApiError> {
    let Some(scope) = scope_of(caller) else {
        return Ok(());
    };
    let owner = state
        .store
        .get::<Consumer>(consumer)
        .await?
        .and_then(|c| c.owner);
    if owner.as_deref() == Some(scope) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "consumer {consumer:?} belongs to {}; a token for {scope} manages only its own consumers' keys",
        crate::model::ownership::describe(owner.as_deref())
    )))
}

async fn create(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let consumer = consumer_path(name)?;
    may_change_keys(&state, &caller, &consumer).await?;
    let request: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        decode_json(&body)?
    };
    let now = now_ms();
    let mut errors = StoredApiKey::check_scopes(&request.scopes);
    let expires_at_ms = expiry(request.ttl_seconds, request.expires_at_ms, now, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (stored, key) = mint(&consumer, request.scopes, expires_at_ms, now)?;
    let version = writer(&state, &headers, Source::Api, &caller)?
        .create_api_key(&stored)
        .await?;
    Ok(created(&stored, key, version, now))
}

async fn list(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path(name): Path<String>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let consumer = consumer_path(name)?;
    if caller.as_ref().is_some_and(|c| c.read_own_only) {
        let visible = state
            .store
            .get::<Consumer>(&consumer)
            .await?
            .is_some_and(|c| may_read(&caller, c.owner(), c.shared()));
        if !visible {
            return Err(ApiError::NotFound {
                kind: Kind::Consumer,
                name: consumer,
            });
        }
    }
    let now = now_ms();
    let keys = state.store.list_api_keys(&consumer).await?;
    Ok(Json(
        keys.iter()
            .map(|(stored, last_used)| KeyView::new(stored, *last_used, now))
            .collect(),
    ))
}

async fn revoke(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consumer = consumer_path(name)?;
    may_change_keys(&state, &caller, &consumer).await?;
    let id = key_path(id)?;
    let version = writer(&state, &headers, Source::Api, &caller)?
        .revoke_api_key(&consumer, &id)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(VERSION_HEADER, version_header(version))],
    )
        .into_response())
}

async fn rotate(
    State(state): State<AdminState>,
    caller: MaybeCaller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let consumer = consumer_path(name)?;
    may_change_keys(&state, &caller, &consumer).await?;
    let id = key_path(id)?;
    let request: Rotation = decode_json(&body)?;
    let now = now_ms();
    let mut errors = Vec::new();
    if request.grace_seconds > MAX_SECONDS {
        errors.push(FieldError::new(
            "grace_seconds",
            format!("must be at most {MAX_SECONDS}"),
        ));
    }
    if let Some(scopes) = &request.scopes {
        errors.extend(StoredApiKey::check_scopes(scopes));
    }
    let expires_at_ms = expiry(request.ttl_seconds, request.expires_at_ms, now, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let scopes = match request.scopes {
        Some(scopes) => scopes,
        None => state
            .store
            .list_api_keys(&consumer)
            .await?
            .into_iter()
            .find(|(k, _)| k.id == id)
            .map(|(k, _)| k.scopes)
            .ok_or(ApiError::NotFound {
                kind: Kind::ApiKey,
                name: id.clone(),
            })?,
    };
    let (stored, key) = mint(&consumer, scopes, expires_at_ms, now)?;
    let grace_until = now + (request.grace_seconds as i64) * 1000;
    let version = writer(&state, &headers, Source::Api, &caller)?
        .rotate_api_key(&id, grace_until, &stored)
        .await?;
    Ok(created(&stored, key, version, now))
}
