//! The Redis backend: counters shared by every gateway instance.
//!
//! One Lua script per request decides all of its counters atomically with
//! Redis's own clock (`TIME`); `EVALSHA` falls back to `EVAL` when the
//! script cache was flushed or Redis restarted (`NOSCRIPT`). Each call is
//! bounded by a short timeout; after a failure Redis is left alone for a
//! moment (the caller decides in degraded mode) while the connection
//! manager reconnects in the background.
//!
//! Counters known to be over their limit are remembered locally until they
//! reset, so a client hammering a spent limit is refused without a Redis
//! round trip.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Item, StoreError, memory::now_ms};
use crate::algorithm::{Counter, Outcome};

/// How long Redis is skipped after a failure before it is tried again.
const BACKOFF_MS: u64 = 500;
/// Bound on the local over-limit cache.
const MAX_KNOWN_OVER: usize = 100_000;

pub struct RedisStore {
    connection: ConnectionManager,
    script: redis::Script,
    timeout: Duration,
    /// Unix ms until which Redis is not tried (after a failure).
    skip_until_ms: AtomicU64,
    /// Counter keys over their limit, until (unix ms) they reset.
    known_over: Mutex<HashMap<String, u64>>,
}

impl RedisStore {
    /// Prepares the client; the connection is made on first use, so the
    /// service starts (and serves degraded decisions) while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {}", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.category().to_owned()))?;
        Ok(Self {
            connection,
            script: redis::Script::new(include_str!("decide.lua")),
            timeout,
            skip_until_ms: AtomicU64::new(0),
            known_over: Mutex::new(HashMap::new()),
        })
    }

    pub async fn check(&self, items: &[Item]) -> Result<Vec<Outcome>, StoreError> {
        let now = now_ms();
        if let Some(outcomes) = self.known_refusal(items, now) {
            return Ok(outcomes);
        }
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                "backing off after a failure".into(),
            ));
        }
        let mut invocation = self.script.prepare_invoke();
        for item in items {
            invocation
                .key(&item.key)
                .arg(item.rule.algorithm as i32)
                .arg(item.rule.requests)
                .arg(item.rule.period_ms)
                .arg(item.rule.burst)
                .arg(item.hits)
                .arg(if item.shadow { "1" } else { "0" });
        }
        let mut connection = self.connection.clone();
        let result: Result<Vec<i64>, StoreError> = match tokio::time::timeout(
            self.timeout,
            invocation.invoke_async(&mut connection),
        )
        .await
        {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.category().to_owned())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        };
        let values = result.inspect_err(|_| {
            self.skip_until_ms
                .store(now_ms() + BACKOFF_MS, Ordering::Relaxed);
        })?;
        if values.len() != items.len() * 4 {
            return Err(StoreError::Unavailable("unexpected script reply".into()));
        }
        let outcomes: Vec<Outcome> = values
            .chunks(4)
            .map(|v| Outcome {
                allowed: v[0] == 1,
                remaining: v[1].max(0) as u64,
                reset_ms: v[2].max(0) as u64,
                limit: v[3].max(0) as u64,
                // The state lives in Redis.
                next: NO_STATE,
            })
            .collect();
        self.remember_refusals(items, &outcomes, now);
        Ok(outcomes)
    }

    /// Refuses at once if a blocking counter is known to be spent.
    fn known_refusal(&self, items: &[Item], now: u64) -> Option<Vec<Outcome>> {
        let known = self
            .known_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.is_empty() {
            return None;
        }
        let spent = items
            .iter()
            .any(|item| !item.shadow && known.get(&item.key).is_some_and(|until| *until > now));
        spent.then(|| {
            items
                .iter()
                .map(|item| {
                    let until = known.get(&item.key).copied().unwrap_or(0);
                    let over = !item.shadow && until > now;
                    Outcome {
                        allowed: !over,
                        limit: item.rule.requests,
                        remaining: if over { 0 } else { item.rule.requests },
                        reset_ms: until.saturating_sub(now),
                        next: NO_STATE,
                    }
                })
                .collect()
        })
    }

    fn remember_refusals(&self, items: &[Item], outcomes: &[Outcome], now: u64) {
        let over: Vec<(String, u64)> = items
            .iter()
            .zip(outcomes)
            .filter(|(item, outcome)| !item.shadow && !outcome.allowed && outcome.reset_ms > 0)
            .map(|(item, outcome)| (item.key.clone(), now + outcome.reset_ms))
            .collect();
        if over.is_empty() {
            return;
        }
        let mut known = self
            .known_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN_OVER {
            known.retain(|_, until| *until > now);
        }
        if known.len() < MAX_KNOWN_OVER {
            known.extend(over);
        }
    }

    /// Drops expired entries of the local over-limit cache.
    pub fn sweep(&self) {
        let now = now_ms();
        self.known_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }
}

/// Redis holds the state; outcomes carry none.
const NO_STATE: Counter = Counter::Window {
    window: 0,
    current: 0,
    previous: 0,
};
