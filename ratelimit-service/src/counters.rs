//! Counter storage. Every backend decides a request's counters atomically:
//! all of them are evaluated, and only if none that may block is over its
//! limit are they all incremented, so a refused request costs no quota.

mod batch;
pub mod lease;
pub mod memory;
pub mod redis;

use crate::algorithm::{Outcome, Rule};

/// One counter a request touches.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub rule: Rule,
    pub hits: u64,
    /// Counted and reported, never blocks.
    pub shadow: bool,
}

/// How the Redis backend reached its decisions, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RedisCounters {
    /// Requests whose counters went to Redis.
    pub redis_requests: prometheus_client::metrics::counter::Counter,
    /// Script calls sent (one may carry several requests).
    pub script_calls: prometheus_client::metrics::counter::Counter,
    /// Requests decided from leased hits alone, without Redis.
    pub lease_requests: prometheus_client::metrics::counter::Counter,
    /// Lease renewals sent and not answered yet.
    pub renewals_in_flight: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CounterError {
    #[error("counter store unavailable: {0}")]
    Unavailable(String),
}

/// Whether the request may go ahead, given each item's outcome.
pub fn admits(items: &[Item], outcomes: &[Outcome]) -> bool {
    items
        .iter()
        .zip(outcomes)
        .all(|(item, outcome)| item.shadow || outcome.allowed)
}

/// The configured backend.
pub enum Counters {
    Memory(memory::MemoryStore),
    /// Shared counters in Redis, with an in-memory safety net for
    /// fail-open limits while Redis is unreachable ("grace mode").
    Redis {
        redis: Box<redis::RedisStore>,
        grace: memory::MemoryStore,
    },
}

impl Counters {
    /// Counters in `redis`, with a fresh local safety net.
    pub fn redis(redis: redis::RedisStore) -> Self {
        Counters::Redis {
            redis: Box::new(redis),
            grace: memory::MemoryStore::default(),
        }
    }

    pub async fn check(&self, items: &[Item]) -> Result<Vec<Outcome>, CounterError> {
        match self {
            Counters::Memory(store) => Ok(store.check(items)),
            Counters::Redis { redis, .. } => redis.check(items).await,
        }
    }

    /// Decides with the local safety net only (degraded mode).
    pub fn grace(&self, items: &[Item]) -> Vec<Outcome> {
        match self {
            Counters::Memory(store) | Counters::Redis { grace: store, .. } => store.check(items),
        }
    }

    /// Drops expired in-memory counters.
    pub fn sweep(&self) {
        match self {
            Counters::Memory(store) => {
                store.sweep();
            }
            Counters::Redis { redis, grace } => {
                redis.sweep();
                grace.sweep();
            }
        }
    }

    /// Gives leased hits that were not spent in time back to Redis.
    pub async fn return_due_leases(&self) {
        if let Counters::Redis { redis, .. } = self {
            redis.return_due_leases().await;
        }
    }

    /// Gives every unspent leased hit back to Redis (the service is
    /// stopping).
    pub async fn return_all_leases(&self) {
        if let Counters::Redis { redis, .. } = self {
            redis.return_all_leases().await;
        }
    }

    /// Whether the Redis backend leases hits (see `store/lease.rs`).
    pub fn leasing(&self) -> bool {
        matches!(self, Counters::Redis { redis, .. } if redis.leasing())
    }

    /// The Redis backend's counters (`None` in memory).
    pub fn redis_counters(&self) -> Option<RedisCounters> {
        match self {
            Counters::Memory(_) => None,
            Counters::Redis { redis, .. } => Some(redis.counters()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Counters::Memory(_) => "memory",
            Counters::Redis { .. } => "redis",
        }
    }
}
