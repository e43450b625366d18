//! The split shared by several ratelimit-service instances through Redis.
//! Each instance writes, per bucket, the demand its own Envoys report (one
//! hash field per instance, with when it was written) and reads the
//! others': it takes the part of the limit its demand is of the fleet's
//! (with the same floor as between Envoys) and splits that part among its
//! own Envoys. Redis is asked only when a report comes (every few seconds
//! per Envoy and bucket), never per request. While Redis cannot be reached
//! an instance keeps the last part it knew for the bucket (the whole limit
//! if it never knew one).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{BucketKey, FLOOR};

/// Another instance's demand older than this no longer counts.
const STALE_MS: i64 = 15_000;
/// A bucket's hash outlives its last write by this much.
const KEEP_MS: i64 = 60_000;
const TIMEOUT: Duration = Duration::from_millis(250);

pub struct Fleet {
    connection: ConnectionManager,
    /// This instance's field in each bucket's hash.
    instance: String,
    /// The part last computed per bucket, for when Redis cannot be reached.
    last: Mutex<HashMap<BucketKey, f64>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The bucket's Redis key: its entries in order (the same on every
/// instance).
fn redis_key(key: &BucketKey) -> String {
    let mut out = String::from("gh:quota:");
    for (k, v) in key {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\u{1f}');
    }
    out
}

/// This instance's part of `limit`: its demand `local` against the others'
/// (`(demand, written at)` per other instance), each with the floor.
pub(super) fn part(local: f64, others: &[(f64, i64)], limit: f64, now: i64) -> f64 {
    let live: Vec<f64> = others
        .iter()
        .filter(|(_, at)| now - at < STALE_MS)
        .map(|(d, _)| *d)
        .collect();
    let n = (live.len() + 1) as f64;
    let total = local + live.iter().sum::<f64>();
    let floor = (total * FLOOR / n).max(1e-3);
    limit * (local + floor) / (total + n * floor)
}

impl Fleet {
    /// Prepares the connection (made on first use). `instance` must be
    /// unique among the instances sharing the Redis.
    pub fn new(url: &str, instance: String) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.category().to_owned())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| e.category().to_owned())?;
        Ok(Self {
            connection,
            instance,
            last: Mutex::default(),
        })
    }

    /// Records this instance's demand for the bucket and returns its part
    /// of `limit`.
    pub async fn part(&self, key: &BucketKey, local: f64, limit: f64) -> f64 {
        let now = now_ms();
        let hash = redis_key(key);
        let mut connection = self.connection.clone();
        let written: redis::RedisResult<HashMap<String, String>> = redis::pipe()
            .hset(&hash, &self.instance, format!("{local}:{now}"))
            .ignore()
            .pexpire(&hash, KEEP_MS)
            .ignore()
            .hgetall(&hash)
            .query_async::<(HashMap<String, String>,)>(&mut connection)
            .await
            .map(|(all,)| all);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match written {
            Ok(all) => {
                let others: Vec<(f64, i64)> = all
                    .iter()
                    .filter(|(field, _)| **field != self.instance)
                    .filter_map(|(_, value)| {
                        let (demand, at) = value.split_once(':')?;
                        Some((demand.parse().ok()?, at.parse().ok()?))
                    })
                    .collect();
                let mine = part(local, &others, limit, now);
                last.insert(key.clone(), mine);
                mine
            }
            Err(e) => {
                tracing::debug!(error = %e.category(), "quota ledger in Redis unavailable");
                last.get(key).copied().unwrap_or(limit)
            }
        }
    }

    /// Forgets the last parts of buckets no Envoy here reports any more.
    pub fn retain(&self, live: impl Fn(&BucketKey) -> bool) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| live(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_take_the_part_their_demand_is_of_the_fleets() {
        let now = 100_000;
        assert!((part(50.0, &[], 100.0, now) - 100.0).abs() < 1e-6, "alone");
        let even = part(50.0, &[(50.0, now)], 100.0, now);
        assert!((even - 50.0).abs() < 1e-6, "{even}");
        let big = part(90.0, &[(10.0, now)], 100.0, now);
        let small = part(10.0, &[(90.0, now)], 100.0, now);
        assert!((big + small - 100.0).abs() < 1e-6, "{big} {small}");
        assert!(small > 10.0 && big > small, "the floor: {big} {small}");
        let stale = part(50.0, &[(50.0, now - STALE_MS)], 100.0, now);
        assert!((stale - 100.0).abs() < 1e-6, "a silent instance: {stale}");
    }
}
