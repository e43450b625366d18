//! One authorization decision: the route's policy (from the context
//! extensions Envoy forwards), the request's credential, and the answer.
//!
//! A route accepts API keys, bearer JWTs, opaque bearer tokens
//! (introspection), or any of them; where each may come from is in
//! [`credential`](crate::credential). Denials carry a stable error code and
//! nothing about why a credential failed beyond it.

use std::{collections::HashMap, sync::Arc};

use gatehouse_proto::auth::context;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::debug;

pub use crate::credential::{API_KEY_HEADER, API_KEY_QUERY};
use crate::{
    credential::{self, Credential, Source},
    jwt::{self, now_ms},
    state::{AuthState, CachedJwt, Consumer},
};

pub const CONSUMER_HEADER: &str = "x-gatehouse-consumer";
pub const PLAN_HEADER: &str = "x-gatehouse-plan";
/// The credential's scopes, space-separated (for upstreams such as the
/// broker that decide per request).
pub const SCOPES_HEADER: &str = "x-gatehouse-scopes";
/// The consumer's roles, space-separated.
pub const ROLES_HEADER: &str = "x-gatehouse-roles";
const API_KEY_PREFIX: &str = "gk_";
const API_KEY_ID_LEN: usize = 12;

/// How a request was authenticated (the discriminant indexes metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ApiKey = 0,
    Jwt = 1,
    Introspection = 2,
    Mtls = 3,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ApiKey => "api_key",
            Method::Jwt => "jwt",
            Method::Introspection => "introspection",
            Method::Mtls => "mtls",
        }
    }
}

/// What ext-authz needs from a request.
pub struct RequestView<'a> {
    /// Lower-case header names, as Envoy sends them.
    pub headers: &'a HashMap<String, String>,
    /// Path with query string.
    pub path: &'a str,
    pub context: &'a HashMap<String, String>,
    /// The client certificate Envoy verified, URL-encoded PEM ("" if none).
    pub peer_certificate: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub method: Method,
    pub consumer: String,
    pub plan: String,
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    pub remove_query: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub status: u16,
    /// Stable, documented error code.
    pub code: &'static str,
    pub message: &'static str,
    pub challenge: String,
    pub method: Option<Method>,
    /// The consumer refused (403: authenticated, not allowed), so Envoy's
    /// usage log can count the refusal for them.
    pub consumer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

/// The route's policy, as the control plane put it in the context.
struct Policy<'a> {
    api_key: bool,
    jwt: bool,
    introspection: bool,
    mtls: bool,
    scopes: Vec<&'a str>,
    roles: Vec<&'a str>,
    strip: bool,
    websocket: bool,
}

impl<'a> Policy<'a> {
    fn from_context(context: &'a HashMap<String, String>) -> Option<Self> {
        // One pass over the few entries: cheaper than a hashed lookup per key
        // (this runs on every check).
        let mut policy = Policy {
            api_key: false,
            jwt: false,
            introspection: false,
            mtls: false,
            scopes: Vec::new(),
            roles: Vec::new(),
            strip: false,
            websocket: false,
        };
        for (key, value) in context {
            match key.as_str() {
                context::METHODS => {
                    for method in value.split(',') {
                        match method {
                            "api_key" => policy.api_key = true,
                            "jwt" => policy.jwt = true,
                            "introspection" => policy.introspection = true,
                            "mtls" => policy.mtls = true,
                            _ => {}
                        }
                    }
                }
                context::SCOPES => policy.scopes = value.split_whitespace().collect(),
                context::ROLES => policy.roles = value.split_whitespace().collect(),
                context::STRIP_CREDENTIALS => policy.strip = value == "1",
                context::WEBSOCKET => policy.websocket = value == "1",
                _ => {}
            }
        }
        (policy.api_key || policy.jwt || policy.introspection || policy.mtls).then_some(policy)
    }

    fn bearer(&self) -> bool {
        self.jwt || self.introspection
    }

    fn challenge(&self, error: Option<&str>) -> String {
        let mut challenges = Vec::new();
        if self.api_key {
            challenges.push("ApiKey realm=\"gatehouse\"".to_owned());
        }
        if self.bearer() {
            challenges.push(match error {
                Some(error) => format!("Bearer realm=\"gatehouse\", error=\"{error}\""),
                None => "Bearer realm=\"gatehouse\"".to_owned(),
            });
        }
        challenges.join(", ")
    }
}

/// Who the credential belongs to and what it grants.
struct Identity {
    method: Method,
    consumer: Arc<Consumer>,
    scopes: Vec<String>,
    headers: Vec<(String, String)>,
}

/// Decides one request against the current state.
pub async fn decide(state: &AuthState, request: &RequestView<'_>) -> Decision {
    let Some(policy) = Policy::from_context(request.context) else {
        return deny(
            403,
            "no_policy",
            "this route has no authentication policy",
            String::new(),
            None,
        );
    };
    if policy.mtls {
        return match certificate_identity(state, request.peer_certificate) {
            Ok(identity) => authorize(state, &policy, request, identity, Source::Certificate),
            Err(deny) => Decision::Deny(deny),
        };
    }
    let accepted = credential::Accepted {
        api_key: policy.api_key,
        bearer: policy.bearer(),
        websocket: policy.websocket,
    };
    let credential = match credential::find(&accepted, request.headers, request.path) {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            return deny(
                401,
                "missing_credentials",
                "credentials are required",
                policy.challenge(None),
                None,
            );
        }
        Err(credential::Ambiguous) => {
            return deny(
                401,
                "ambiguous_credentials",
                "send exactly one credential",
                policy.challenge(Some("invalid_request")),
                None,
            );
        }
    };
    let source = credential.source();
    let identity = match credential {
        Credential::ApiKey(key, _) => match verify_api_key(state, &key) {
            Some(identity) => identity,
            None => {
                return deny(
                    401,
                    "invalid_credentials",
                    "the API key is not valid",
                    policy.challenge(None),
                    Some(Method::ApiKey),
                );
            }
        },
        Credential::Bearer(token, _) => match verify_bearer(state, &policy, &token).await {
            Ok(identity) => identity,
            Err(method) => {
                return deny(
                    401,
                    "invalid_token",
                    "the token is not valid",
                    policy.challenge(Some("invalid_token")),
                    Some(method),
                );
            }
        },
    };
    authorize(state, &policy, request, identity, source)
}

/// The consumer a verified client certificate is mapped to.
fn certificate_identity(state: &AuthState, certificate: &str) -> Result<Identity, Deny> {
    let refuse = |status, code, message| Deny {
        status,
        code,
        message,
        challenge: String::new(),
        method: Some(Method::Mtls),
        consumer: None,
    };
    let Some(identities) = crate::peer::identities(certificate) else {
        return Err(refuse(
            401,
            "client_certificate_required",
            "a client certificate is required",
        ));
    };
    let entry = identities
        .iter()
        .find_map(|id| state.certificates.get(id))
        .ok_or_else(|| {
            refuse(
                403,
                "unknown_client_certificate",
                "the client certificate is not mapped to a consumer",
            )
        })?;
    Ok(Identity {
        method: Method::Mtls,
        consumer: entry.consumer.clone(),
        scopes: entry.scopes.clone(),
        headers: Vec::new(),
    })
}

/// Scopes and roles, then the answer.
fn authorize(
    state: &AuthState,
    policy: &Policy<'_>,
    request: &RequestView<'_>,
    identity: Identity,
    source: Source,
) -> Decision {
    if !policy
        .scopes
        .iter()
        .all(|s| identity.scopes.iter().any(|g| g == s))
    {
        let challenge = if policy.bearer() {
            format!(
                "Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"{}\"",
                policy.scopes.join(" ")
            )
        } else {
            policy.challenge(None)
        };
        return forbid(
            "insufficient_scope",
            "the credential lacks a required scope",
            challenge,
            &identity,
        );
    }
    if !policy
        .roles
        .iter()
        .all(|r| identity.consumer.roles.iter().any(|g| g == r))
    {
        return forbid(
            "insufficient_role",
            "the consumer lacks a required role",
            String::new(),
            &identity,
        );
    }
    Decision::Allow(allow(state, policy, request, identity, source))
}

fn deny(
    status: u16,
    code: &'static str,
    message: &'static str,
    challenge: String,
    method: Option<Method>,
) -> Decision {
    Decision::Deny(Deny {
        status,
        code,
        message,
        challenge,
        method,
        consumer: None,
    })
}

/// A 403 for an authenticated consumer: the refusal names them.
fn forbid(
    code: &'static str,
    message: &'static str,
    challenge: String,
    identity: &Identity,
) -> Decision {
    Decision::Deny(Deny {
        status: 403,
        code,
        message,
        challenge,
        method: Some(identity.method),
        consumer: Some(identity.consumer.name.clone()),
    })
}

/// `gk_<12 hex id>_<secret>`: found by id, compared by hash in constant time.
fn verify_api_key(state: &AuthState, key: &str) -> Option<Identity> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let id = rest.get(..API_KEY_ID_LEN)?;
    if rest.as_bytes().get(API_KEY_ID_LEN) != Some(&b'_') {
        return None;
    }
    let entry = state.keys.get(id)?;
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if !bool::from(digest.ct_eq(&entry.sha256)) {
        return None;
    }
    let now = now_ms();
    if entry.expires_at != 0 && now / 1000 >= entry.expires_at {
        return None;
    }
    entry
        .last_used_ms
        .store(now, std::sync::atomic::Ordering::Relaxed);
    Some(Identity {
        method: Method::ApiKey,
        consumer: entry.consumer.clone(),
        scopes: entry.scopes.clone(),
        headers: Vec::new(),
    })
}

async fn verify_bearer(
    state: &AuthState,
    policy: &Policy<'_>,
    token: &str,
) -> Result<Identity, Method> {
    let looks_like_jwt = token.bytes().filter(|b| *b == b'.').count() == 2;
    if policy.jwt && (looks_like_jwt || !policy.introspection) {
        return verify_jwt(state, token).await.ok_or(Method::Jwt);
    }
    if policy.introspection {
        return verify_introspection(state, token)
            .await
            .ok_or(Method::Introspection);
    }
    Err(Method::Jwt)
}

async fn verify_jwt(state: &AuthState, token: &str) -> Option<Identity> {
    if token.len() > jwt::MAX_TOKEN_BYTES {
        return None;
    }
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let now_s = now_ms() / 1000;
    let cached = state.cached_jwt(&token_hash, now_s);
    let claims = match cached {
        Some(hit) => hit.claims,
        None => {
            let (header, iss) = jwt::screen(token)
                .inspect_err(|e| debug!(error = %e, "token refused"))
                .ok()?;
            let candidates = state.issuers.get(&iss)?;
            let mut verified = None;
            for issuer in candidates {
                let generation = issuer.generation();
                match issuer.verify(token, &header).await {
                    Ok(claims) => {
                        state.cache_jwt(
                            token_hash,
                            CachedJwt {
                                claims: claims.clone(),
                                issuer: issuer.clone(),
                                generation,
                            },
                        );
                        verified = Some(claims);
                        break;
                    }
                    Err(e) => debug!(issuer = %issuer.config.name, error = %e, "token refused"),
                }
            }
            verified?
        }
    };
    Some(Identity {
        method: Method::Jwt,
        consumer: consumer_for(state, &claims.subject),
        scopes: claims.scopes,
        headers: claims.headers,
    })
}

async fn verify_introspection(state: &AuthState, token: &str) -> Option<Identity> {
    if token.is_empty() || token.len() > jwt::MAX_TOKEN_BYTES {
        return None;
    }
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    for provider in &state.providers {
        if let Some(answer) = provider.introspect(token, &token_hash).await {
            return Some(Identity {
                method: Method::Introspection,
                consumer: consumer_for(state, &answer.subject),
                scopes: answer.scopes,
                headers: Vec::new(),
            });
        }
    }
    None
}

/// A registered consumer, or an unregistered one named by the token.
fn consumer_for(state: &AuthState, subject: &str) -> Arc<Consumer> {
    state.consumers.get(subject).cloned().unwrap_or_else(|| {
        Arc::new(Consumer {
            name: subject.to_owned(),
            plan: String::new(),
            roles: Vec::new(),
        })
    })
}

fn allow(
    state: &AuthState,
    policy: &Policy<'_>,
    request: &RequestView<'_>,
    identity: Identity,
    source: Source,
) -> Allow {
    let consumer = identity.consumer;
    let mut set_headers = Vec::with_capacity(4 + identity.headers.len());
    set_headers.push((CONSUMER_HEADER.to_owned(), consumer.name.clone()));
    if !consumer.plan.is_empty() {
        set_headers.push((PLAN_HEADER.to_owned(), consumer.plan.clone()));
    }
    if !identity.scopes.is_empty() {
        set_headers.push((SCOPES_HEADER.to_owned(), identity.scopes.join(" ")));
    }
    if !consumer.roles.is_empty() {
        set_headers.push((ROLES_HEADER.to_owned(), consumer.roles.join(" ")));
    }
    set_headers.extend(identity.headers);
    let mut remove_headers = Vec::new();
    let mut remove_query = Vec::new();
    // The credential leaves the request: always from where only WebSocket
    // routes read it, elsewhere when the route strips credentials.
    match source {
        Source::Header if policy.strip => remove_headers.push(
            match identity.method {
                Method::ApiKey => credential::API_KEY_HEADER,
                Method::Jwt | Method::Introspection | Method::Mtls => "authorization",
            }
            .to_owned(),
        ),
        Source::Query(name) if policy.strip || policy.websocket => {
            remove_query.push(name.to_owned());
        }
        Source::Protocol => match credential::protocols_without_credentials(request.headers) {
            Some(rest) => set_headers.push((credential::PROTOCOL_HEADER.to_owned(), rest)),
            None => remove_headers.push(credential::PROTOCOL_HEADER.to_owned()),
        },
        Source::Header | Source::Query(_) | Source::Certificate => {}
    }
    let is_set = |name: &str| set_headers.iter().any(|(h, _)| h == name);
    // Identity headers the client sent that we are not overwriting.
    remove_headers.extend(
        request
            .headers
            .keys()
            .filter(|h| h.starts_with("x-gatehouse-") || state.claim_headers.contains(h))
            .filter(|h| !is_set(h))
            .cloned(),
    );
    remove_headers.sort();
    remove_headers.dedup();
    Allow {
        method: identity.method,
        consumer: consumer.name.clone(),
        plan: consumer.plan.clone(),
        set_headers,
        remove_headers,
        remove_query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_read_from_the_context() {
        let extensions = |entries: &[(&str, &str)]| -> HashMap<String, String> {
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let full = extensions(&[
            (context::ROUTE, "orders"),
            (context::METHODS, "api_key,jwt"),
            (context::SCOPES, "orders:read  orders:write"),
            (context::ROLES, "buyer"),
            (context::STRIP_CREDENTIALS, "1"),
        ]);
        let policy = Policy::from_context(&full).expect("a policy");
        assert!(policy.api_key && policy.jwt && !policy.introspection && policy.strip);
        assert_eq!(policy.scopes, ["orders:read", "orders:write"]);
        assert_eq!(policy.roles, ["buyer"]);

        let minimal = extensions(&[(context::METHODS, "introspection")]);
        let policy = Policy::from_context(&minimal).expect("a policy");
        assert!(policy.introspection && !policy.api_key && !policy.strip);
        assert!(policy.scopes.is_empty() && policy.roles.is_empty());

        for no_policy in [
            extensions(&[]),
            extensions(&[(context::ROUTE, "orders")]),
            extensions(&[(context::METHODS, "basic,none")]),
        ] {
            assert!(Policy::from_context(&no_policy).is_none());
        }
    }
}
