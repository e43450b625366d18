//! JWT verification against configured issuers, with their JWKS.
//!
//! The token is screened before any cryptography: size, shape, `alg`
//! (`none` in any case is refused), `crit` (no extension is understood, so
//! any entry is refused). `jku`, `x5u` and embedded `jwk` headers are never
//! used: keys come only from the issuer's configuration. `exp`, `iss` and
//! `aud` are required, `nbf` is checked, all with the issuer's leeway.
//!
//! A JWKS fetched from `jwks_uri` is refreshed periodically and when a token
//! names an unknown `kid`, at most once per `jwks_min_refresh_seconds`; a
//! failed fetch keeps the keys already held.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use base64::Engine;
use gatehouse_proto::auth;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{metrics::Metrics, secret};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was refused (logged at debug level; clients see only
/// `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("not a compact JWS")]
    Malformed,
    #[error("alg {0:?} is not accepted")]
    Algorithm(String),
    #[error("critical header extensions are not supported")]
    Critical,
    #[error("no configured issuer {0:?}")]
    UnknownIssuer(String),
    #[error("no key {0:?} for this issuer")]
    UnknownKey(String),
    #[error("issuer unusable: {0}")]
    IssuerUnusable(String),
    #[error("verification failed: {0}")]
    Invalid(String),
    #[error("claim {0:?} naming the consumer is missing")]
    NoConsumer(String),
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    pub scopes: Vec<String>,
    /// Forwarded claims as (header, value).
    pub headers: Vec<(String, String)>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A verification key with what it may verify.
struct Key {
    key: DecodingKey,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`: usable by tokens without one.
    unnamed: Vec<Arc<Key>>,
}

/// One configured issuer and the keys it currently holds.
pub struct Issuer {
    pub config: auth::JwtIssuer,
    /// One validation per accepted algorithm: a key verifies one family only.
    validations: Vec<(Algorithm, Validation)>,
    keys: ArcSwap<KeySet>,
    /// Bumped whenever keys change, so cached verifications can be dropped.
    generation: AtomicU64,
    /// Unix ms of the last fetch attempt (for the refresh floor).
    last_fetch_ms: AtomicI64,
    fetch_lock: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    metrics: Metrics,
    /// Stops the periodic refresh when the issuer is replaced.
    refresh: CancellationToken,
    /// Why the issuer cannot verify anything (bad inline keys, missing secret).
    unusable: Option<String>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.refresh.cancel();
    }
}

impl Issuer {
    /// Builds an issuer; a `jwks_uri` issuer starts fetching in the background.
    pub fn new(config: auth::JwtIssuer, http: reqwest::Client, metrics: Metrics) -> Arc<Self> {
        let mut unusable = None;
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .collect();
        if algorithms.is_empty() {
            unusable = Some("no supported algorithm".to_owned());
        }
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut validation = Validation::new(*alg);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.set_issuer(&[&config.issuer]);
                validation.set_audience(&config.audiences);
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.leeway = u64::from(config.leeway_seconds);
                (*alg, validation)
            })
            .collect();
        let mut keys = KeySet::default();
        if let Some(secret_ref) = &config.hmac_secret {
            match secret::resolve(secret_ref) {
                Ok(secret) => keys.unnamed.push(Arc::new(Key {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    alg: None,
                })),
                Err(e) => unusable = Some(format!("HMAC secret: {e}")),
            }
        } else if !config.jwks_json.is_empty() {
            match parse_jwks(config.jwks_json.as_bytes()) {
                Ok(set) => keys = set,
                Err(e) => unusable = Some(format!("inline JWKS: {e}")),
            }
        }
        if let Some(reason) = &unusable {
            warn!(issuer = %config.name, reason = %reason, "JWT issuer cannot verify tokens");
        }
        let issuer = Arc::new(Issuer {
            validations,
            keys: ArcSwap::from_pointee(keys),
            generation: AtomicU64::new(0),
            last_fetch_ms: AtomicI64::new(i64::MIN / 2),
            fetch_lock: tokio::sync::Mutex::new(()),
            http,
            metrics,
            refresh: CancellationToken::new(),
            unusable,
            config,
        });
        if !issuer.config.jwks_uri.is_empty() {
            tokio::spawn(periodic_refresh(
                Arc::downgrade(&issuer),
                issuer.refresh.clone(),
            ));
        }
        issuer
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Verifies a screened token; `header` is its decoded protected header.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<Claims, TokenError> {
        if let Some(reason) = &self.unusable {
            return Err(TokenError::IssuerUnusable(reason.clone()));
        }
        let (alg, validation) = Algorithm::from_str(&header.alg)
            .ok()
            .and_then(|alg| self.validations.iter().find(|(a, _)| *a == alg))
            .map(|(alg, validation)| (*alg, validation))
            .ok_or_else(|| TokenError::Algorithm(header.alg.clone()))?;
        let key = match self.find_key(header.kid.as_deref(), alg) {
            Some(key) => key,
            None => {
                self.refresh_for_unknown_kid().await;
                self.find_key(header.kid.as_deref(), alg)
                    .ok_or_else(|| TokenError::UnknownKey(header.kid.clone().unwrap_or_default()))?
            }
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        self.claims(&data.claims)
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let keys = self.keys.load();
        let usable =
            |k: &Arc<Key>| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg.family();
        match kid {
            Some(kid) => keys.by_kid.get(kid).filter(|k| usable(k)).cloned(),
            None => {
                let mut candidates = keys.unnamed.iter().filter(|k| usable(k));
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Some(key.clone()),
                    _ => None,
                }
            }
        }
    }

    fn claims(&self, claims: &Map<String, Value>) -> Result<Claims, TokenError> {
        let subject = claims
            .get(&self.config.consumer_claim)
            .and_then(scalar)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TokenError::NoConsumer(self.config.consumer_claim.clone()))?;
        let mut scopes = Vec::new();
        for claim in ["scope", "scp"] {
            match claims.get(claim) {
                Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
                Some(Value::Array(items)) => {
                    scopes.extend(items.iter().filter_map(|v| v.as_str()).map(str::to_owned))
                }
                _ => {}
            }
        }
        let headers = self
            .config
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let value = claims.get(claim)?;
                let text = scalar(value).unwrap_or_else(|| value.to_string());
                // Header values cannot carry control characters.
                (!text.chars().any(char::is_control) && text.len() <= 4096)
                    .then(|| (header.clone(), text))
            })
            .collect();
        let expires_at = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(Claims {
            subject,
            scopes,
            headers,
            expires_at,
        })
    }

    /// An unknown `kid` may mean the issuer rotated keys: refetch, but at
    /// most once per floor period, however many such tokens arrive.
    async fn refresh_for_unknown_kid(&self) {
        if self.config.jwks_uri.is_empty() {
            return;
        }
        let floor_ms = i64::from(self.config.jwks_min_refresh_seconds.max(1)) * 1000;
        if now_ms() - self.last_fetch_ms.load(Ordering::Acquire) < floor_ms {
            return;
        }
        let _guard = self.fetch_lock.lock().await;
        // Someone else may have fetched while we waited.
        if now_ms() - self.last_fetch_ms.load(Ordering::Acquire) < floor_ms {
            return;
        }
        self.fetch().await;
    }

    async fn fetch(&self) {
        self.last_fetch_ms.store(now_ms(), Ordering::Release);
        let result = fetch_jwks(&self.http, &self.config.jwks_uri).await;
        let outcome = match result {
            Ok(set) => {
                let count = set.by_kid.len() + set.unnamed.len();
                self.keys.store(Arc::new(set));
                self.generation.fetch_add(1, Ordering::AcqRel);
                info!(issuer = %self.config.name, keys = count, "JWKS loaded");
                "ok"
            }
            Err(e) => {
                warn!(issuer = %self.config.name, error = %e, "JWKS fetch failed; keeping the keys held");
                "error"
            }
        };
        self.metrics.jwks_fetch(&self.config.name, outcome);
    }
}

async fn periodic_refresh(issuer: std::sync::Weak<Issuer>, stop: CancellationToken) {
    loop {
        let Some(strong) = issuer.upgrade() else {
            return;
        };
        {
            let _guard = strong.fetch_lock.lock().await;
            strong.fetch().await;
        }
        let period = Duration::from_secs(u64::from(strong.config.jwks_refresh_seconds.max(10)));
        drop(strong);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Why a JWKS gives no keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error(transparent)]
    Fetch(#[from] crate::FetchError),
    #[error("not a JWKS: {0}")]
    NotJwks(serde_json::Error),
    #[error("no usable public signature key")]
    NoUsableKey,
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<KeySet, JwksError> {
    let body =
        crate::fetch_bounded(http.get(uri).timeout(JWKS_FETCH_TIMEOUT), MAX_JWKS_BYTES).await?;
    parse_jwks(&body)
}

/// Parses a JWKS, keeping the public signature keys it can use.
fn parse_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(JwksError::NotJwks)?;
    let mut keys = KeySet::default();
    for jwk in &set.keys {
        if let Some(key) = key_from_jwk(jwk) {
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.unnamed.push(key),
            }
        }
    }
    if keys.by_kid.is_empty() && keys.unnamed.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

fn key_from_jwk(jwk: &Jwk) -> Option<Arc<Key>> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    // Symmetric keys never come from a JWKS: HMAC needs a configured secret.
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match &jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::from_str(&a.to_string()).ok()?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Arc::new(Key { key, alg }))
}

/// The parts of a token's protected header we look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

/// Screens a token before any key is touched: returns its header and `iss`.
pub fn screen(token: &str) -> Result<(Header, String), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header: Map<String, Value> = decode_segment(header)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?;
    if alg.eq_ignore_ascii_case("none") || Algorithm::from_str(alg).is_err() {
        return Err(TokenError::Algorithm(alg.to_owned()));
    }
    if header.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= 256 => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    let claims: Map<String, Value> = decode_segment(payload)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Invalid("missing iss".into()))?
        .to_owned();
    Ok((
        Header {
            alg: alg.to_owned(),
            kid,
        },
        issuer,
    ))
}

fn decode_segment(segment: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
