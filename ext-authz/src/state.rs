//! The in-memory authentication state: everything a decision needs, built
//! from the control plane's `AuthConfig` and swapped atomically on update.
//!
//! Issuers and introspection providers whose configuration did not change
//! carry over from the previous state with their fetched keys and caches,
//! so revoking a key does not refetch every JWKS.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::AtomicI64},
};

use gatehouse_proto::auth;
use tracing::warn;

use crate::{introspect::Provider, jwt::Issuer, metrics::Metrics};

const MAX_CACHED_TOKENS: usize = 100_000;

/// A consumer as decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub plan: String,
    pub roles: Vec<String>,
}

/// A usable API key: its hash, owner, scopes and expiry (unix s, 0 = never).
pub struct KeyEntry {
    pub sha256: [u8; 32],
    pub consumer: Arc<Consumer>,
    pub scopes: Vec<String>,
    pub expires_at: i64,
    /// Unix ms of the last accepted use (0: none yet), reported to the
    /// control plane; carried over when the state is rebuilt.
    pub last_used_ms: AtomicI64,
}

/// The consumer a client certificate identity maps to, and its scopes.
pub struct CertificateEntry {
    pub consumer: Arc<Consumer>,
    pub scopes: Vec<String>,
}

/// A verified JWT, reusable until it expires or its issuer's keys change.
#[derive(Clone)]
pub struct CachedJwt {
    pub claims: crate::jwt::Claims,
    pub issuer: Arc<Issuer>,
    pub generation: u64,
}

pub struct AuthState {
    /// The control plane's config version this state came from.
    pub version: String,
    pub keys: HashMap<String, KeyEntry>,
    /// Client certificate identities (`spki:`, `uri:`, `dns:`) to consumers.
    pub certificates: HashMap<String, CertificateEntry>,
    pub consumers: HashMap<String, Arc<Consumer>>,
    /// Issuers by their `iss`.
    pub issuers: HashMap<String, Vec<Arc<Issuer>>>,
    pub providers: Vec<Arc<Provider>>,
    /// Every header a forwarded claim may set (removed when not set).
    pub claim_headers: Vec<String>,
    jwt_cache: Mutex<HashMap<[u8; 32], CachedJwt>>,
}

impl AuthState {
    /// Builds the state for `version`, reusing unchanged issuers and providers.
    pub fn build(
        version: &str,
        config: auth::AuthConfig,
        previous: Option<&AuthState>,
        http: &reqwest::Client,
        metrics: &Metrics,
    ) -> AuthState {
        let mut consumers = HashMap::new();
        let mut keys = HashMap::new();
        let mut certificates = HashMap::new();
        for c in config.consumers {
            let consumer = Arc::new(Consumer {
                name: c.name.clone(),
                plan: c.plan,
                roles: c.roles,
            });
            for key in c.api_keys {
                let Ok(sha256) = <[u8; 32]>::try_from(key.sha256.as_slice()) else {
                    warn!(key = %key.id, "API key without a SHA-256; ignored");
                    continue;
                };
                let last_used = previous.and_then(|p| p.keys.get(&key.id)).map_or(0, |k| {
                    k.last_used_ms.load(std::sync::atomic::Ordering::Relaxed)
                });
                keys.insert(
                    key.id,
                    KeyEntry {
                        sha256,
                        consumer: consumer.clone(),
                        scopes: key.scopes,
                        expires_at: key.expires_at,
                        last_used_ms: AtomicI64::new(last_used),
                    },
                );
            }
            for identity in c.certificates {
                let key = if !identity.spki_sha256.is_empty() {
                    format!("spki:{}", identity.spki_sha256)
                } else if !identity.uri.is_empty() {
                    format!("uri:{}", identity.uri)
                } else if !identity.dns.is_empty() {
                    format!("dns:{}", identity.dns)
                } else {
                    continue;
                };
                certificates.insert(
                    key,
                    CertificateEntry {
                        consumer: consumer.clone(),
                        scopes: identity.scopes,
                    },
                );
            }
            consumers.insert(c.name, consumer);
        }
        let old_issuers: Vec<&Arc<Issuer>> = previous
            .map(|p| p.issuers.values().flatten().collect())
            .unwrap_or_default();
        let mut issuers: HashMap<String, Vec<Arc<Issuer>>> = HashMap::new();
        let mut claim_headers = Vec::new();
        for issuer in config.jwt_issuers {
            claim_headers.extend(issuer.forward_claims.values().cloned());
            let built = match old_issuers.iter().find(|old| old.config == issuer) {
                Some(old) => Arc::clone(old),
                None => Issuer::new(issuer, http.clone(), metrics.clone()),
            };
            issuers
                .entry(built.config.issuer.clone())
                .or_default()
                .push(built);
        }
        claim_headers.sort();
        claim_headers.dedup();
        let old_providers: &[Arc<Provider>] = previous.map_or(&[], |p| &p.providers);
        let providers = config
            .introspection_providers
            .into_iter()
            .map(|p| match old_providers.iter().find(|old| old.config == p) {
                Some(old) => Arc::clone(old),
                None => Arc::new(Provider::new(p, http.clone(), metrics.clone())),
            })
            .collect();
        AuthState {
            version: version.to_owned(),
            keys,
            certificates,
            consumers,
            issuers,
            providers,
            claim_headers,
            jwt_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn cached_jwt(&self, token_hash: &[u8; 32], now_s: i64) -> Option<CachedJwt> {
        let cache = self.jwt_cache.lock().ok()?;
        let hit = cache.get(token_hash)?;
        (hit.claims.expires_at > now_s && hit.issuer.generation() == hit.generation)
            .then(|| hit.clone())
    }

    pub fn cache_jwt(&self, token_hash: [u8; 32], entry: CachedJwt) {
        if let Ok(mut cache) = self.jwt_cache.lock() {
            if cache.len() >= MAX_CACHED_TOKENS {
                let now_s = crate::jwt::now_ms() / 1000;
                cache.retain(|_, v| v.claims.expires_at > now_s);
                if cache.len() >= MAX_CACHED_TOKENS {
                    cache.clear();
                }
            }
            cache.insert(token_hash, entry);
        }
    }
}
