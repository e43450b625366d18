//! Admin API authentication: bearer tokens with roles.
//!
//! Tokens are 256-bit random secrets with a recognisable prefix; only their
//! SHA-256 hash is stored. The bootstrap token (from the environment or a
//! file) is held in memory and compared in constant time. Authentication is
//! enforced once a bootstrap token is configured or any token exists; a
//! loopback-only control plane with neither is open, for local development.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{ACTOR_HEADER, AdminState, ApiError};
pub use crate::secret::{
    IssuedToken, MIN_BOOTSTRAP_LEN, Secret, TOKEN_PREFIX, hash, issue_admin_token as issue,
};

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who a request authenticated as; handlers find it in the request's
/// extensions when authentication is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// A token scoped to one owner writes only its resources.
    pub owner: Option<String>,
    /// …and, with this, reads only them (and shared ones).
    pub read_own_only: bool,
}

impl Caller {
    /// The owner this caller is confined to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Whether this caller may read a resource of `owner` (`shared`: one
    /// the operators share).
    pub fn may_read(&self, owner: Option<&str>, shared: bool) -> bool {
        !self.read_own_only || shared || owner == self.scope()
    }
}

/// The caller of a request, if authentication is enforced.
pub type MaybeCaller = Option<axum::Extension<Caller>>;

/// The owner a request's caller is confined to, if any.
pub fn scope_of(caller: &MaybeCaller) -> Option<&str> {
    caller.as_ref().and_then(|c| c.scope())
}

/// Whether a request's caller may read a resource of `owner`.
pub fn may_read(caller: &MaybeCaller, owner: Option<&str>, shared: bool) -> bool {
    caller.as_ref().is_none_or(|c| c.may_read(owner, shared))
}

/// The role a request needs.
fn required_role(method: &Method, path: &str) -> Option<Role> {
    if !path.starts_with("/v1/") {
        return None; // health, readiness, metrics
    }
    if path.starts_with("/v1/admin-tokens")
        || path.starts_with("/v1/xds-tokens")
        || path == "/v1/status/release"
        || path == "/v1/status/confirm"
    {
        return Some(Role::Admin);
    }
    Some(if matches!(*method, Method::GET | Method::HEAD) {
        Role::Viewer
    } else {
        Role::Editor
    })
}

/// Checks the bearer token against the role the request needs; on success
/// the token's name replaces any `x-gatehouse-actor` the client sent.
pub async fn authenticate(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(required) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    // Without a bootstrap token, whether tokens exist is in the store; if it
    // cannot be read, callers cannot be authenticated: fail closed.
    let enforced = match &state.bootstrap_token {
        Some(_) => true,
        None => match state.store.has_admin_tokens().await {
            Ok(exist) => exist,
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    if !enforced {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(presented) = presented else {
        return ApiError::Unauthenticated("an admin token is required (Authorization: Bearer …)")
            .into_response();
    };
    let caller = match lookup(&state, presented).await {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            return ApiError::Unauthenticated("the admin token is not valid").into_response();
        }
        Err(e) => return e.into_response(),
    };
    if caller.role < required {
        return ApiError::Forbidden(format!(
            "token {:?} has role {}; this needs {}",
            caller.name,
            caller.role.as_str(),
            required.as_str()
        ))
        .into_response();
    }
    if caller.scope().is_some() && scoped_callers_refused(request.method(), request.uri().path()) {
        return ApiError::Forbidden(format!(
            "token {:?} is scoped to an owner; this needs an unscoped token",
            caller.name
        ))
        .into_response();
    }
    if let Ok(actor) = HeaderValue::from_str(&caller.name) {
        request.headers_mut().insert(ACTOR_HEADER, actor);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// What a token scoped to one owner may never do, whatever its role: write
/// owners, restore a version of the whole configuration, or steer a canary
/// of the whole fleet.
fn scoped_callers_refused(method: &Method, path: &str) -> bool {
    let writes = !matches!(*method, Method::GET | Method::HEAD);
    writes
        && (path == "/v1/config/rollback"
            || path.starts_with("/v1/owners")
            || path.starts_with("/v1/rollout"))
}

async fn lookup(state: &AdminState, presented: &str) -> Result<Option<Caller>, ApiError> {
    if let Some(bootstrap) = &state.bootstrap_token
        && bool::from(presented.as_bytes().ct_eq(bootstrap.expose().as_bytes()))
    {
        return Ok(Some(Caller {
            name: "bootstrap".into(),
            role: Role::Admin,
            owner: None,
            read_own_only: false,
        }));
    }
    let found = state.store.find_admin_token(&hash(presented)).await?;
    Ok(found.and_then(|token| {
        Some(Caller {
            name: token.name,
            role: Role::parse(&token.role)?,
            owner: token.owner,
            read_own_only: token.read_own_only,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_random_prefixed_and_hashed() {
        let a = issue().expect("random");
        let b = issue().expect("random");
        assert!(a.secret.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.secret.expose().len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash(a.secret.expose()));
        assert!(!format!("{:?}", a.secret).contains(TOKEN_PREFIX));
    }

    #[test]
    fn roles_by_method_and_path() {
        assert_eq!(required_role(&Method::GET, "/metrics"), None);
        assert_eq!(
            required_role(&Method::GET, "/v1/routes"),
            Some(Role::Viewer)
        );
        assert_eq!(
            required_role(&Method::PUT, "/v1/config"),
            Some(Role::Editor)
        );
        assert_eq!(
            required_role(&Method::GET, "/v1/admin-tokens"),
            Some(Role::Admin)
        );
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
    }

    #[test]
    fn scoped_callers_cannot_roll_back_or_manage_owners() {
        assert!(scoped_callers_refused(&Method::POST, "/v1/config/rollback"));
        assert!(scoped_callers_refused(&Method::PUT, "/v1/owners/team-a"));
        assert!(!scoped_callers_refused(&Method::GET, "/v1/owners"));
        assert!(!scoped_callers_refused(&Method::PUT, "/v1/config"));
        let caller = Caller {
            name: "ci-a".into(),
            role: Role::Editor,
            owner: Some("team-a".into()),
            read_own_only: true,
        };
        assert!(caller.may_read(Some("team-a"), false));
        assert!(caller.may_read(None, true));
        assert!(!caller.may_read(Some("team-b"), false));
        assert!(!caller.may_read(None, false));
    }
}
