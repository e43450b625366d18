//! RFC 7662 token introspection for opaque OAuth2 bearer tokens.
//!
//! Only an answer with `"active": true` (a JSON boolean) admits a token;
//! `active: false`, a missing `active`, an error status, a timeout or an
//! unreadable body all refuse it. Active answers are cached by a hash of the
//! token until the sooner of the token's `exp` and `max_cache_seconds`.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use gatehouse_proto::auth;
use serde_json::{Map, Value};
use tracing::warn;

use crate::{jwt::now_ms, metrics::Metrics, secret};

const MAX_CACHED: usize = 100_000;
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What an active token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspected {
    pub subject: String,
    pub scopes: Vec<String>,
    /// Unix ms until which this answer may be reused.
    pub cache_until_ms: i64,
}

/// Why an introspection call gave no answer (the token is then refused).
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("client secret: {0}")]
    Secret(#[from] secret::SecretError),
    #[error(transparent)]
    Fetch(#[from] crate::FetchError),
    #[error("response is not a JSON object")]
    NotJson,
}

pub struct Provider {
    pub config: auth::IntrospectionProvider,
    secret: Result<secret::Secret, secret::SecretError>,
    http: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], Introspected>>,
    metrics: Metrics,
}

impl Provider {
    pub fn new(
        config: auth::IntrospectionProvider,
        http: reqwest::Client,
        metrics: Metrics,
    ) -> Self {
        let secret = config
            .client_secret
            .as_ref()
            .ok_or(secret::SecretError::NotConfigured)
            .and_then(secret::resolve);
        if let Err(e) = &secret {
            warn!(provider = %config.name, error = %e, "introspection provider cannot authenticate");
        }
        Self {
            config,
            secret,
            http,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether the token is active, and for whom. `None` refuses it.
    pub async fn introspect(&self, token: &str, token_hash: &[u8; 32]) -> Option<Introspected> {
        let now = now_ms();
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(token_hash)
            && hit.cache_until_ms > now
        {
            return Some(hit.clone());
        }
        let outcome = self.call(token, now).await;
        let label = match &outcome {
            Ok(Some(_)) => "active",
            Ok(None) => "inactive",
            Err(_) => "error",
        };
        self.metrics.introspection(&self.config.name, label);
        let answer = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                warn!(provider = %self.config.name, error = %e, "introspection failed; refusing the token");
                None
            }
        }?;
        if answer.cache_until_ms > now
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, v| v.cache_until_ms > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(*token_hash, answer.clone());
        }
        Some(answer)
    }

    async fn call(&self, token: &str, now: i64) -> Result<Option<Introspected>, IntrospectError> {
        let secret = self.secret.as_ref().map_err(Clone::clone)?;
        let request = self
            .http
            .post(&self.config.endpoint)
            .basic_auth(&self.config.client_id, Some(secret.expose()))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .timeout(Duration::from_millis(u64::from(
                self.config.timeout_ms.max(1),
            )));
        let body = crate::fetch_bounded(request, MAX_RESPONSE_BYTES).await?;
        let fields: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|_| IntrospectError::NotJson)?;
        Ok(self.interpret(&fields, now))
    }

    fn interpret(&self, fields: &Map<String, Value>, now: i64) -> Option<Introspected> {
        if fields.get("active") != Some(&Value::Bool(true)) {
            return None;
        }
        let exp_ms = match fields.get("exp") {
            None => None,
            Some(exp) => Some(exp.as_i64()?.saturating_mul(1000)),
        };
        if exp_ms.is_some_and(|exp| exp <= now) {
            return None;
        }
        let subject = fields
            .get(&self.config.consumer_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?
            .to_owned();
        let scopes = fields
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let max_cache = now + i64::from(self.config.max_cache_seconds) * 1000;
        Some(Introspected {
            subject,
            scopes,
            cache_until_ms: exp_ms.map_or(max_cache, |exp| exp.min(max_cache)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> Provider {
        Provider::new(
            auth::IntrospectionProvider {
                name: "oauth".into(),
                endpoint: "http://127.0.0.1:9/introspect".into(),
                client_id: "gatehouse".into(),
                client_secret: None,
                max_cache_seconds: 60,
                timeout_ms: 100,
                consumer_claim: "sub".into(),
            },
            reqwest::Client::new(),
            Metrics::default(),
        )
    }

    fn interpret(value: Value) -> Option<Introspected> {
        provider().interpret(value.as_object().unwrap(), 1_000_000)
    }

    #[test]
    fn only_a_boolean_true_active_admits() {
        assert!(interpret(json!({"active": true, "sub": "alice"})).is_some());
        assert!(interpret(json!({"active": false, "sub": "alice"})).is_none());
        assert!(interpret(json!({"sub": "alice"})).is_none());
        assert!(interpret(json!({"active": "true", "sub": "alice"})).is_none());
        assert!(interpret(json!({"active": 1, "sub": "alice"})).is_none());
    }

    #[test]
    fn expired_or_anonymous_tokens_are_refused_and_cache_is_bounded_by_exp() {
        assert!(interpret(json!({"active": true, "sub": "a", "exp": 999})).is_none());
        assert!(interpret(json!({"active": true})).is_none());
        let answer =
            interpret(json!({"active": true, "sub": "a", "exp": 1_010, "scope": "read write"}))
                .unwrap();
        assert_eq!(answer.cache_until_ms, 1_010_000);
        assert_eq!(answer.scopes, vec!["read", "write"]);
        let capped = interpret(json!({"active": true, "sub": "a", "exp": 9_999_999})).unwrap();
        assert_eq!(capped.cache_until_ms, 1_000_000 + 60_000);
    }
}
