//! The Redis backend: counters shared by every gateway instance.
//!
//! One Lua script per request decides all of its counters atomically with
//! Redis's own clock (`TIME`); `EVALSHA` falls back to `EVAL` when the
//! script cache was flushed or Redis restarted (`NOSCRIPT`). Each call is
//! bounded by a short timeout; after a failure Redis is left alone for a
//! moment (the caller decides in degraded mode) while the connection
//! manager reconnects in the background.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Item, StoreError, memory::now_ms};
use crate::algorithm::{Counter, Outcome};

/// How long Redis is skipped after a failure before it is tried again.
const BACKOFF_MS: u64 = 500;

pub struct RedisStore {
    connection: ConnectionManager,
    script: redis::Script,
    timeout: Duration,
    /// Unix ms until which Redis is not tried (after a failure).
    skip_until_ms: AtomicU64,
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
        })
    }

    pub async fn check(&self, items: &[Item]) -> Result<Vec<Outcome>, StoreError> {
        if now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
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
        Ok(values
            .chunks(4)
            .map(|v| Outcome {
                allowed: v[0] == 1,
                remaining: v[1].max(0) as u64,
                reset_ms: v[2].max(0) as u64,
                limit: v[3].max(0) as u64,
                // The state lives in Redis.
                next: Counter::Window {
                    window: 0,
                    current: 0,
                    previous: 0,
                },
            })
            .collect())
    }
}
