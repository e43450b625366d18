//! The split shared by several ratelimit-service instances through Redis
//! (a single server or a Cluster). Each instance writes, per bucket, the
//! demand its own Envoys report (one hash field per instance, with when it
//! was written) and reads the others': it takes the part of the limit its
//! demand is of the fleet's (with the same floor as between Envoys) and
//! splits that part among its own Envoys. Redis is asked only when a report
//! comes (every few seconds per Envoy), never per request, and all of a
//! report's buckets at once (pipelined on one connection). An instance
//! whose last Envoy on a bucket leaves removes its field at once. While
//! Redis cannot be reached an instance keeps the last part it knew for the
//! bucket (the whole limit if it never knew one).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{
    RedisResult,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use super::{BucketKey, FLOOR};

/// Another instance's demand older than this no longer counts.
const STALE_MS: i64 = 15_000;
/// A bucket's hash outlives its last write by this much.
const KEEP_MS: i64 = 60_000;
const TIMEOUT: Duration = Duration::from_millis(250);

enum Connection {
    Single(ConnectionManager),
    /// Connected on first use (and again after a failed attempt).
    Cluster(Box<Cluster>),
}

struct Cluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

pub struct Fleet {
    connection: Connection,
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
    /// Prepares the connection (made on first use): `url` is one Redis URL,
    /// or with `cluster` the Cluster's seed URLs separated by commas.
    /// `instance` must be unique among the instances sharing the Redis.
    pub fn new(url: &str, cluster: bool, instance: String) -> Result<Self, String> {
        let connection = if cluster {
            let client = ClusterClient::builder(url.split(',').map(str::trim))
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(TIMEOUT)
                .retries(1)
                .build()
                .map_err(|e| e.category().to_owned())?;
            Connection::Cluster(Box::new(Cluster {
                client,
                connection: OnceCell::new(),
            }))
        } else {
            let client = redis::Client::open(url).map_err(|e| e.category().to_owned())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(1);
            Connection::Single(
                ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| e.category().to_owned())?,
            )
        };
        Ok(Self {
            connection,
            instance,
            last: Mutex::default(),
        })
    }

    /// Runs one bucket's pipeline (its commands share one key, so one slot
    /// on a Cluster).
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> RedisResult<T> {
        match &self.connection {
            Connection::Single(connection) => pipe.query_async(&mut connection.clone()).await,
            Connection::Cluster(cluster) => {
                let mut connection = cluster
                    .connection
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?
                    .clone();
                pipe.query_async(&mut connection).await
            }
        }
    }

    /// Records this instance's demand for each bucket of a report
    /// (`(bucket, local demand, limit)`) and returns its part of each limit,
    /// in order. The buckets are asked for together: concurrent requests on
    /// one multiplexed connection are pipelined.
    pub async fn parts(&self, asks: &[(BucketKey, f64, f64)]) -> Vec<f64> {
        futures_util::future::join_all(
            asks.iter()
                .map(|(key, local, limit)| self.part(key, *local, *limit)),
        )
        .await
    }

    /// Removes this instance's demand for buckets none of its Envoys reports
    /// any more, so the other instances take the whole limit with their
    /// next reports instead of after [`STALE_MS`].
    pub async fn withdraw(&self, keys: &[BucketKey]) {
        let each = keys.iter().map(|key| async move {
            let mut pipe = redis::pipe();
            pipe.hdel(redis_key(key), &self.instance).ignore();
            self.query::<()>(&pipe).await
        });
        let done: RedisResult<()> = futures_util::future::join_all(each)
            .await
            .into_iter()
            .collect();
        if let Err(e) = done {
            tracing::debug!(error = %e.category(), "quota ledger: withdrawal not written");
        }
        self.retain(|k| !keys.contains(k));
    }

    /// Records this instance's demand for the bucket and returns its part
    /// of `limit`.
    async fn part(&self, key: &BucketKey, local: f64, limit: f64) -> f64 {
        let now = now_ms();
        let hash = redis_key(key);
        let mut pipe = redis::pipe();
        pipe.hset(&hash, &self.instance, format!("{local}:{now}"))
            .ignore()
            .pexpire(&hash, KEEP_MS)
            .ignore()
            .hgetall(&hash);
        let written = self
            .query::<(HashMap<String, String>,)>(&pipe)
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
