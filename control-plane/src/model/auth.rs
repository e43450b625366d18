//! Who may call the APIs behind the gateway: consumers, their API keys, JWT
//! issuers, OAuth2 introspection providers, and the per-route policy.
//!
//! Secrets never enter this model: API keys are stored as SHA-256 hashes, and
//! the HMAC and client secrets are references (`{env: NAME}` / `{file: PATH}`)
//! that ext-authz resolves from its own environment.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Kind, NAME_PATTERN, Resource, check_name, is_header_name};

/// Consumer names: user or application identifiers (emails, ids), safe in a URL path.
pub const CONSUMER_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$";
/// Plans, roles and scopes: single tokens (they travel space-separated).
const TOKEN_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$";
const MAX_LIST: usize = 64;
const MAX_METADATA: usize = 32;

/// Someone who calls the APIs: the identity behind a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[schemars(regex(pattern = CONSUMER_NAME_PATTERN))]
    pub name: String,
    /// Free-text tier (free, pro, enterprise...) used by rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOKEN_PATTERN))]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Resource for Consumer {
    const KIND: Kind = Kind::Consumer;

    fn name(&self) -> &str {
        &self.name
    }

    fn is_valid_name(name: &str) -> bool {
        is_consumer_name(name)
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_consumer_name(&self.name) {
            errors.push(FieldError::new(
                "name",
                "must be 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            ));
        }
        if let Some(plan) = &self.plan
            && !is_token(plan)
        {
            errors.push(FieldError::new("plan", token_message()));
        }
        check_tokens("roles", &self.roles, &mut errors);
        if self.metadata.len() > MAX_METADATA {
            errors.push(FieldError::new(
                "metadata",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        for (key, value) in &self.metadata {
            if key.is_empty() || key.len() > 64 || value.len() > 1024 {
                errors.push(FieldError::new(
                    format!("metadata.{key}"),
                    "keys must be 1-64 bytes and values at most 1024 bytes",
                ));
            }
        }
        errors
    }
}

pub fn is_consumer_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'))
}

fn token_message() -> String {
    "must be a single token: letters, digits, '.', '_', ':', '/', '-' (at most 128)".into()
}

fn check_tokens(field: &str, tokens: &[String], errors: &mut Vec<FieldError>) {
    if tokens.len() > MAX_LIST {
        errors.push(FieldError::new(
            field,
            format!("at most {MAX_LIST} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        if !is_token(token) {
            errors.push(FieldError::new(format!("{field}[{i}]"), token_message()));
        } else if !seen.insert(token) {
            errors.push(FieldError::new(format!("{field}[{i}]"), "listed twice"));
        }
    }
}

/// Where a secret lives. ext-authz reads it from its own environment or
/// filesystem, so secret values never reach the store, the API or the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable of the ext-authz process.
    Env(String),
    /// A file readable by the ext-authz process (e.g. a mounted secret).
    File(String),
}

impl SecretRef {
    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        match self {
            SecretRef::Env(name) => {
                let valid = !name.is_empty()
                    && name.len() <= 128
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push(FieldError::new(
                        format!("{field}.env"),
                        "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    ));
                }
            }
            SecretRef::File(path) => {
                if !path.starts_with('/') || path.len() > 1024 || path.contains('\0') {
                    errors.push(FieldError::new(
                        format!("{field}.file"),
                        "must be an absolute path",
                    ));
                }
            }
        }
    }
}

/// JWT signature algorithms ext-authz accepts. `none` is not one of them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

fn default_leeway_seconds() -> u32 {
    30
}
fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_jwks_min_refresh_seconds() -> u32 {
    30
}
fn default_jwks_refresh_seconds() -> u32 {
    300
}

/// A trusted JWT issuer and how its tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The exact `iss` claim of this issuer's tokens.
    pub issuer: String,
    /// Where the issuer publishes its keys (fetched, cached, refreshed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The keys inline, as a JWKS document (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// The shared secret for HS256/384/512, by reference. Required for them,
    /// refused with any other algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<SecretRef>,
    pub algorithms: Vec<JwtAlgorithm>,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    #[serde(default = "default_leeway_seconds")]
    #[schemars(range(max = 300))]
    pub leeway_seconds: u32,
    /// The claim that names the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claims forwarded upstream: claim name -> request header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
    /// Floor between JWKS fetches caused by tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refresh_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub jwks_min_refresh_seconds: u32,
    /// Periodic JWKS refresh (also drops keys the issuer removed).
    #[serde(default = "default_jwks_refresh_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub jwks_refresh_seconds: u32,
}

/// Request headers a forwarded claim may not overwrite.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-api-key",
    "x-forwarded-for",
    "x-request-id",
    "x-envoy-original-path",
    "x-gatehouse-consumer",
    "x-gatehouse-plan",
];

impl Resource for JwtIssuer {
    const KIND: Kind = Kind::JwtIssuer;

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if self.issuer.is_empty() || self.issuer.len() > 512 {
            errors.push(FieldError::new("issuer", "must be 1-512 characters"));
        }
        self.validate_keys(&mut errors);
        if self.audiences.is_empty() {
            errors.push(FieldError::new(
                "audiences",
                "at least one audience is required: tokens without a matching aud are refused",
            ));
        }
        for (i, audience) in self.audiences.iter().enumerate() {
            if audience.is_empty() || audience.len() > 512 {
                errors.push(FieldError::new(
                    format!("audiences[{i}]"),
                    "must be 1-512 characters",
                ));
            }
        }
        if self.leeway_seconds > 300 {
            errors.push(FieldError::new("leeway_seconds", "must be at most 300"));
        }
        if self.consumer_claim.is_empty() || self.consumer_claim.len() > 128 {
            errors.push(FieldError::new(
                "consumer_claim",
                "must be 1-128 characters",
            ));
        }
        if self.forward_claims.len() > 16 {
            errors.push(FieldError::new("forward_claims", "at most 16 claims"));
        }
        for (claim, header) in &self.forward_claims {
            let field = format!("forward_claims.{claim}");
            if claim.is_empty() || claim.len() > 128 {
                errors.push(FieldError::new(
                    &field,
                    "claim names must be 1-128 characters",
                ));
            }
            if !is_header_name(header) || header.to_ascii_lowercase() != *header {
                errors.push(FieldError::new(&field, "must be a lowercase header name"));
            } else if RESERVED_HEADERS.contains(&header.as_str()) || header.starts_with(':') {
                errors.push(FieldError::new(
                    &field,
                    format!("{header} is reserved and cannot carry a claim"),
                ));
            }
        }
        if !(1..=3600).contains(&self.jwks_min_refresh_seconds) {
            errors.push(FieldError::new(
                "jwks_min_refresh_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(10..=86_400).contains(&self.jwks_refresh_seconds) {
            errors.push(FieldError::new(
                "jwks_refresh_seconds",
                "must be between 10 and 86400",
            ));
        }
        errors
    }
}

impl JwtIssuer {
    fn validate_keys(&self, errors: &mut Vec<FieldError>) {
        if self.algorithms.is_empty() {
            errors.push(FieldError::new(
                "algorithms",
                "at least one algorithm is required",
            ));
        }
        let hmac = self.algorithms.iter().any(|a| a.is_hmac());
        let asymmetric = self.algorithms.iter().any(|a| !a.is_hmac());
        if hmac && asymmetric {
            errors.push(FieldError::new(
                "algorithms",
                "HMAC (HS*) and public-key algorithms cannot be mixed in one issuer",
            ));
        }
        let sources = [
            self.jwks_uri.is_some(),
            self.jwks.is_some(),
            self.hmac_secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            errors.push(FieldError::new(
                "jwks_uri",
                "exactly one of jwks_uri, jwks and hmac_secret is required",
            ));
        }
        if hmac && self.hmac_secret.is_none() {
            errors.push(FieldError::new(
                "hmac_secret",
                "HS* algorithms need an explicitly configured secret",
            ));
        }
        if asymmetric && self.hmac_secret.is_some() {
            errors.push(FieldError::new(
                "hmac_secret",
                "only for HS* algorithms; public-key algorithms use jwks_uri or jwks",
            ));
        }
        if let Some(secret) = &self.hmac_secret {
            secret.validate("hmac_secret", errors);
        }
        if let Some(uri) = &self.jwks_uri
            && let Err(e) = check_http_url(uri)
        {
            errors.push(FieldError::new("jwks_uri", e));
        }
        if let Some(jwks) = &self.jwks
            && let Err(e) = check_jwks(jwks)
        {
            errors.push(FieldError::new("jwks", e));
        }
    }
}

/// A JWKS document: `keys` holds public keys of a type the algorithms use.
fn check_jwks(jwks: &serde_json::Value) -> Result<(), String> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("must be an object with a \"keys\" array")?;
    if keys.is_empty() || keys.len() > 64 {
        return Err("must hold 1-64 keys".into());
    }
    for (i, key) in keys.iter().enumerate() {
        let kty = key.get("kty").and_then(|k| k.as_str());
        if !matches!(kty, Some("RSA" | "EC" | "OKP")) {
            return Err(format!(
                "keys[{i}].kty must be RSA, EC or OKP (symmetric keys are configured as hmac_secret)"
            ));
        }
        if key.get("d").is_some() {
            return Err(format!(
                "keys[{i}] is a private key: publish only public keys"
            ));
        }
        if keys.len() > 1 && key.get("kid").and_then(|k| k.as_str()).is_none() {
            return Err(format!(
                "keys[{i}] needs a kid when the set holds several keys"
            ));
        }
    }
    if serde_json::to_string(jwks).map_or(0, |s| s.len()) > 256 * 1024 {
        return Err("must be at most 256 KiB".into());
    }
    Ok(())
}

pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty()
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be an absolute URL with a host".into());
    }
    Ok(())
}

fn default_max_cache_seconds() -> u32 {
    60
}
fn default_introspection_timeout_ms() -> u32 {
    200
}

/// An RFC 7662 token introspection endpoint for opaque OAuth2 tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionProvider {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    pub endpoint: String,
    pub client_id: String,
    /// The client secret, by reference.
    pub client_secret: SecretRef,
    /// How long an active answer is reused (never past the token's exp).
    #[serde(default = "default_max_cache_seconds")]
    #[schemars(range(max = 3600))]
    pub max_cache_seconds: u32,
    /// Per-call timeout; keep it below the gateway's ext_authz timeout.
    #[serde(default = "default_introspection_timeout_ms")]
    #[schemars(range(min = 1, max = 5000))]
    pub timeout_ms: u32,
    /// The response field that names the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
}

impl Resource for IntrospectionProvider {
    const KIND: Kind = Kind::IntrospectionProvider;

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if let Err(e) = check_http_url(&self.endpoint) {
            errors.push(FieldError::new("endpoint", e));
        }
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            errors.push(FieldError::new("client_id", "must be 1-256 characters"));
        }
        self.client_secret.validate("client_secret", &mut errors);
        if self.max_cache_seconds > 3600 {
            errors.push(FieldError::new("max_cache_seconds", "must be at most 3600"));
        }
        if !(1..=5000).contains(&self.timeout_ms) {
            errors.push(FieldError::new("timeout_ms", "must be between 1 and 5000"));
        }
        if self.consumer_claim.is_empty() || self.consumer_claim.len() > 128 {
            errors.push(FieldError::new(
                "consumer_claim",
                "must be 1-128 characters",
            ));
        }
        errors
    }
}

/// How a route's callers prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Public: Envoy does not call ext-authz at all.
    #[default]
    None,
    /// An API key in `x-api-key` (or the `api_key` query parameter).
    ApiKey,
    /// A JWT bearer token from a configured issuer.
    Jwt,
    /// An opaque bearer token checked by an introspection provider.
    Introspection,
    /// Any configured method.
    Any,
}

impl AuthMethod {
    /// The methods ext-authz accepts, as carried in the route's context.
    pub fn accepted(self) -> &'static str {
        match self {
            AuthMethod::None => "",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Introspection => "introspection",
            AuthMethod::Any => "api_key,jwt,introspection",
        }
    }
}

/// What happens when ext-authz cannot be reached or fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse the request with the configured error status (the default).
    #[default]
    Closed,
    /// Let the request through, marked with `x-envoy-auth-failure-mode-allowed`.
    Open,
}

/// Where a JWT route's tokens are verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyIn {
    /// ext-authz: every method, consumer records (plan, roles), refetch on an unknown `kid`.
    #[default]
    ExtAuthz,
    /// Envoy's own `jwt_authn` filter, in process: no ext-authz call. `jwt`
    /// routes only, without roles; issuers with an HMAC secret are not
    /// accepted there, and no `x-gatehouse-plan` is set.
    Envoy,
}

fn default_true() -> bool {
    true
}

/// A route's authentication policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    pub method: AuthMethod,
    /// Every one of these must be granted (key scopes, or the JWT's `scope`/`scp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The consumer must hold every one of these roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Remove the credential (header or query parameter) before the request goes upstream.
    #[serde(default = "default_true")]
    pub strip_credentials: bool,
    /// Where tokens are verified (`envoy`: in process, for JWT-only routes).
    #[serde(default, skip_serializing_if = "VerifyIn::is_ext_authz")]
    pub verify_in: VerifyIn,
}

impl VerifyIn {
    fn is_ext_authz(&self) -> bool {
        *self == VerifyIn::ExtAuthz
    }
}

impl RouteAuth {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        check_tokens("auth.scopes", &self.scopes, errors);
        check_tokens("auth.roles", &self.roles, errors);
        if self.method == AuthMethod::None && (!self.scopes.is_empty() || !self.roles.is_empty()) {
            errors.push(FieldError::new(
                "auth.method",
                "scopes and roles need an authenticating method (api_key, jwt, introspection or any)",
            ));
        }
        if self.verify_in == VerifyIn::Envoy {
            if self.method != AuthMethod::Jwt {
                errors.push(FieldError::new(
                    "auth.verify_in",
                    "envoy verifies JWTs only: use it with method jwt",
                ));
            }
            if !self.roles.is_empty() {
                errors.push(FieldError::new(
                    "auth.roles",
                    "roles come from consumer records, which only ext-authz holds: use verify_in ext_authz",
                ));
            }
            if self.failure_mode != FailureMode::Closed {
                errors.push(FieldError::new(
                    "auth.failure_mode",
                    "a token verified in Envoy has no external call that could fail: remove failure_mode",
                ));
            }
        }
    }

    /// Tokens are verified by Envoy's `jwt_authn`, not ext-authz.
    pub fn verified_in_envoy(&self) -> bool {
        self.verify_in == VerifyIn::Envoy
    }

    pub fn is_protected(&self) -> bool {
        self.method != AuthMethod::None
    }
}

/// An API key as stored: only the SHA-256 of the key, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApiKey {
    pub id: String,
    pub consumer: String,
    /// SHA-256 of the whole key, hex.
    pub sha256: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

/// The state of a key at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyStatus {
    Active,
    Expired,
    Revoked,
}

impl StoredApiKey {
    pub fn status(&self, now_ms: i64) -> ApiKeyStatus {
        if self.revoked_at_ms.is_some() {
            ApiKeyStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            ApiKeyStatus::Expired
        } else {
            ApiKeyStatus::Active
        }
    }

    /// The public part shown in listings: `gk_<id>`.
    pub fn prefix(&self) -> String {
        format!("{API_KEY_PREFIX}{}", self.id)
    }

    /// Validates requested scopes for a new key.
    pub fn check_scopes(scopes: &[String]) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_tokens("scopes", scopes, &mut errors);
        errors
    }
}

/// Every Gatehouse API key starts with this, so leaked keys are recognisable
/// (secret scanners) and never confused with JWTs.
pub const API_KEY_PREFIX: &str = "gk_";

/// A freshly minted key: `gk_<12 hex id>_<64 hex secret>` (256 bits of
/// randomness in the secret), and the SHA-256 that is stored instead of it.
pub struct MintedKey {
    pub id: String,
    pub key: String,
    pub sha256: String,
}

pub fn mint_api_key() -> Result<MintedKey, getrandom::Error> {
    use sha2::Digest;
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)?;
    getrandom::getrandom(&mut secret)?;
    let id = hex::encode(id);
    let key = format!("{API_KEY_PREFIX}{id}_{}", hex::encode(secret));
    let sha256 = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    Ok(MintedKey { id, key, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> JwtIssuer {
        serde_json::from_value(serde_json::json!({
            "name": "idp",
            "issuer": "https://idp.example.com/",
            "jwks_uri": "https://idp.example.com/.well-known/jwks.json",
            "algorithms": ["RS256", "ES256"],
            "audiences": ["api"],
        }))
        .unwrap()
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn issuer_defaults_are_safe() {
        let issuer = issuer();
        assert!(issuer.validate().is_empty());
        assert_eq!(issuer.consumer_claim, "sub");
        assert_eq!(issuer.leeway_seconds, 30);
        assert_eq!(issuer.jwks_min_refresh_seconds, 30);
    }

    #[test]
    fn alg_none_is_not_an_algorithm() {
        for alg in ["none", "None", "NONE"] {
            let result: Result<JwtIssuer, _> = serde_json::from_value(serde_json::json!({
                "name": "idp", "issuer": "x", "jwks_uri": "https://x/", "algorithms": [alg], "audiences": ["a"],
            }));
            assert!(result.is_err(), "{alg} accepted");
        }
    }

    #[test]
    fn hmac_needs_an_explicit_secret_and_cannot_mix() {
        let mut hs = issuer();
        hs.algorithms = vec![JwtAlgorithm::HS256];
        assert!(fields(hs.validate()).contains(&"hmac_secret".to_string()));
        hs.jwks_uri = None;
        hs.hmac_secret = Some(SecretRef::Env("JWT_SECRET".into()));
        assert!(hs.validate().is_empty());
        hs.algorithms.push(JwtAlgorithm::RS256);
        assert!(fields(hs.validate()).contains(&"algorithms".to_string()));
    }

    #[test]
    fn issuer_needs_exactly_one_key_source_and_an_audience() {
        let mut both = issuer();
        both.jwks = Some(serde_json::json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}));
        assert!(fields(both.validate()).contains(&"jwks_uri".to_string()));
        let mut no_aud = issuer();
        no_aud.audiences.clear();
        assert!(fields(no_aud.validate()).contains(&"audiences".to_string()));
    }

    #[test]
    fn inline_jwks_must_hold_public_keys() {
        let mut inline = issuer();
        inline.jwks_uri = None;
        inline.jwks = Some(serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
        assert!(fields(inline.validate()).contains(&"jwks".to_string()));
        inline.jwks =
            Some(serde_json::json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "y"}]}));
        assert!(fields(inline.validate()).contains(&"jwks".to_string()));
    }

    #[test]
    fn forwarded_claims_cannot_overwrite_reserved_headers() {
        let mut issuer = issuer();
        issuer
            .forward_claims
            .insert("sub".into(), "x-gatehouse-consumer".into());
        issuer
            .forward_claims
            .insert("email".into(), "Authorization".into());
        assert_eq!(
            fields(issuer.validate()),
            vec!["forward_claims.email", "forward_claims.sub"]
        );
    }

    #[test]
    fn consumer_names_and_tokens() {
        let consumer = Consumer {
            name: "alice@example.com".into(),
            plan: Some("pro".into()),
            roles: vec!["admin".into(), "admin".into(), "has space".into()],
            metadata: BTreeMap::new(),
        };
        assert_eq!(fields(consumer.validate()), vec!["roles[1]", "roles[2]"]);
        assert!(!is_consumer_name("../etc"));
        assert!(!is_consumer_name(""));
    }

    #[test]
    fn minted_keys_are_prefixed_random_and_hashed() {
        let a = mint_api_key().unwrap();
        let b = mint_api_key().unwrap();
        assert!(a.key.starts_with(&format!("gk_{}_", a.id)));
        assert_eq!(a.key.len(), 3 + 12 + 1 + 64);
        assert_ne!(a.key, b.key);
        assert_ne!(a.sha256, b.sha256);
        assert!(!a.sha256.contains(&a.key[16..]));
    }

    #[test]
    fn public_routes_cannot_require_scopes() {
        let auth = RouteAuth {
            scopes: vec!["read".into()],
            ..RouteAuth::default()
        };
        let mut errors = Vec::new();
        auth.validate(&mut errors);
        assert_eq!(fields(errors), vec!["auth.method"]);
    }

    #[test]
    fn envoy_verifies_jwt_routes_without_roles_only() {
        let ok = RouteAuth {
            method: AuthMethod::Jwt,
            scopes: vec!["orders:read".into()],
            verify_in: VerifyIn::Envoy,
            ..RouteAuth::default()
        };
        let mut errors = Vec::new();
        ok.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let bad = RouteAuth {
            method: AuthMethod::Any,
            roles: vec!["admin".into()],
            failure_mode: FailureMode::Open,
            verify_in: VerifyIn::Envoy,
            ..RouteAuth::default()
        };
        bad.validate(&mut errors);
        assert_eq!(
            fields(errors),
            vec!["auth.verify_in", "auth.roles", "auth.failure_mode"]
        );
    }
}
