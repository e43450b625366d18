//! The Redis backend: counters shared by every gateway instance.
//!
//! A Lua script decides all of a request's counters atomically with Redis's
//! own clock (`TIME`); requests that arrive together share one script call
//! (`batch.rs`), each still decided on its own. `EVALSHA` falls back to
//! `EVAL` when the script cache was flushed or Redis restarted
//! (`NOSCRIPT`). Each call is
//! bounded by a short timeout; after a failure Redis is left alone for a
//! moment (the caller decides in degraded mode) while the connection
//! manager reconnects in the background.
//!
//! Counters known to be over their limit are remembered locally until they
//! reset, so a client hammering a spent limit is refused without a Redis
//! round trip. With leasing on, window hits taken from Redis ahead of use
//! decide most requests of a busy counter locally (`lease.rs`).
//!
//! On Redis Cluster a script may only touch keys of one slot. Every counter
//! key carries a hash tag (its policy or plan and descriptor values), so a
//! request's counters are decided per tag: each group atomically, the groups
//! in parallel, and when one group refuses, the groups that counted give
//! their hits back (`refund.lua`). So a refused request still spends no
//! quota, though for a moment (one round trip) its hits are visible.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use super::{CounterError, Item, RedisCounters, batch::Batcher, lease::Leases, memory::now_ms};
use crate::algorithm::{Counter, Outcome};

mod cluster;
mod leasing;

use cluster::hash_tag;

/// How long Redis is skipped after a failure before it is tried again.
const BACKOFF_MS: u64 = 500;
/// Bound on the local over-limit cache.
const MAX_KNOWN_OVER: usize = 100_000;
/// Integers the script answers per counter.
pub(super) const REPLY_WIDTH: usize = 5;

enum Connection {
    Single(ConnectionManager),
    /// Connected in the background; decisions are degraded until then.
    Cluster {
        client: Box<ClusterClient>,
        connection: Arc<Mutex<Option<ClusterConnection>>>,
        connecting: Arc<AtomicBool>,
    },
}

pub struct RedisStore {
    connection: Connection,
    script: redis::Script,
    refund: redis::Script,
    timeout: Duration,
    /// Unix ms until which Redis is not tried (after a failure).
    skip_until_ms: Arc<AtomicU64>,
    /// Counter keys over their limit, until (unix ms) they reset.
    known_over: Mutex<HashMap<String, u64>>,
    leases: Arc<Leases>,
    /// Sends the decisions of many requests as one call (single Redis);
    /// started on first use, on the runtime that serves.
    batcher: OnceLock<Batcher>,
    counters: RedisCounters,
}

/// One counter as sent to a script.
#[derive(Clone, Copy)]
struct Call<'a> {
    item: &'a Item,
    hits: u64,
    /// Extra hits asked for as a lease.
    lease: u64,
}

impl Call<'_> {
    /// The script's first seven arguments for this counter (see `decide.lua`).
    fn args(&self) -> [u64; 7] {
        let rule = &self.item.rule;
        [
            rule.algorithm as u64,
            rule.requests,
            rule.period_ms,
            rule.burst,
            self.hits,
            u64::from(self.item.shadow),
            self.lease,
        ]
    }
}

impl RedisStore {
    /// Prepares the client; the connection is made on first use, so the
    /// service starts (and serves degraded decisions) while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CounterError> {
        let client = redis::Client::open(url).map_err(|e| {
            CounterError::Unavailable(format!("invalid Redis URL: {}", e.category()))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| CounterError::Unavailable(e.category().to_owned()))?;
        Ok(Self::with(Connection::Single(connection), timeout))
    }

    /// A Redis Cluster client from seed node URLs; it connects in the
    /// background (call from within a Tokio runtime).
    pub fn cluster(urls: &[&str], timeout: Duration) -> Result<Self, CounterError> {
        let client = ClusterClient::builder(urls.iter().copied())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(timeout.max(Duration::from_millis(50)))
            .retries(1)
            .build()
            .map_err(|e| {
                CounterError::Unavailable(format!("invalid Redis Cluster URLs: {}", e.category()))
            })?;
        let store = Self::with(
            Connection::Cluster {
                client: Box::new(client),
                connection: Arc::default(),
                connecting: Arc::default(),
            },
            timeout,
        );
        store.cluster_connection();
        Ok(store)
    }

    fn with(connection: Connection, timeout: Duration) -> Self {
        Self {
            connection,
            script: redis::Script::new(include_str!("decide.lua")),
            refund: redis::Script::new(include_str!("refund.lua")),
            timeout,
            skip_until_ms: Arc::default(),
            known_over: Mutex::new(HashMap::new()),
            leases: Arc::new(Leases::new(0)),
            batcher: OnceLock::new(),
            counters: RedisCounters::default(),
        }
    }

    /// Takes up to `max` window hits per busy counter from Redis ahead of
    /// use and spends them locally (see `lease.rs`); 0, the default here
    /// (the binary's is 100), decides every request in Redis.
    pub fn with_leases(mut self, max: u64) -> Self {
        self.leases = Arc::new(Leases::new(max));
        self
    }

    /// Connects and loads the scripts before the first decision, so that
    /// decision is not the one paying for it (and timing out into degraded
    /// mode). Bounded by `deadline`; Redis being down is not an error here:
    /// the service starts anyway and decides degraded until it is back.
    pub async fn warm_up(&self, deadline: Duration) -> Result<(), CounterError> {
        let Connection::Single(connection) = &self.connection else {
            return Ok(());
        };
        // Each command is bound by the short response timeout: retry until
        // both loads are answered in time (a timed-out load still lands).
        let load = async {
            loop {
                let mut c = connection.clone();
                let loaded = async {
                    self.script.load_async(&mut c).await?;
                    self.refund.load_async(&mut c).await
                };
                match loaded.await {
                    Ok(_) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        tokio::time::timeout(deadline, load)
            .await
            .map_err(|_| CounterError::Unavailable(format!("not ready within {deadline:?}")))
    }

    /// Whether a connection is up (a cluster connects in the background).
    pub fn connected(&self) -> bool {
        match &self.connection {
            Connection::Single(_) => true,
            Connection::Cluster { connection, .. } => connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some(),
        }
    }

    /// Runs `script` on `calls` (all of one slot on a cluster).
    async fn invoke(
        &self,
        script: &redis::Script,
        calls: &[Call<'_>],
    ) -> Result<Vec<i64>, CounterError> {
        self.counters.script_calls.inc();
        let mut invocation = script.prepare_invoke();
        for call in calls {
            invocation.key(&call.item.key).arg(&call.args()[..]).arg(0);
        }
        let call = async {
            let reply: redis::RedisResult<Vec<i64>> = match &self.connection {
                Connection::Single(c) => invocation.invoke_async(&mut c.clone()).await,
                Connection::Cluster { .. } => match self.cluster_connection() {
                    Some(mut c) => invocation.invoke_async(&mut c).await,
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "connecting to the cluster",
                    ))),
                },
            };
            reply
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => Err(CounterError::Unavailable(e.category().to_owned())),
            Err(_) => Err(CounterError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Decides a request's counters: those a lease covers here, the rest in
    /// Redis (with a lease asked for), all or nothing; a counter known to be
    /// spent refuses at once. A lease this request leaves nearly spent is
    /// topped up by a call of no hits, asking only: in the same call if the
    /// request goes to Redis anyway, otherwise without waiting for it.
    pub async fn check(&self, items: &[Item]) -> Result<Vec<Outcome>, CounterError> {
        let now = now_ms();
        let (mut leased, spent) = self.leases.spend(items, now);
        if let Some(outcomes) = self.known_refusal(items, &leased, now) {
            self.leases.give_back(items, spent);
            return Ok(outcomes);
        }
        let asked: Vec<usize> = (0..items.len()).filter(|i| leased[*i].is_none()).collect();
        let mut calls: Vec<Call> = asked
            .iter()
            .map(|i| Call {
                item: &items[*i],
                hits: items[*i].hits,
                lease: self.leases.ask(&items[*i], now),
            })
            .collect();
        let renewals: Vec<Call> = spent
            .renewals()
            .iter()
            .map(|i| Call {
                item: &items[*i],
                hits: 0,
                lease: self.leases.ask(&items[*i], now),
            })
            .filter(|call| call.lease > 0)
            .collect();
        if calls.is_empty() {
            self.counters.lease_requests.inc();
            self.renew(&renewals, now).await;
            return Ok(leased.into_iter().flatten().collect());
        }
        calls.extend(renewals);
        let values = match self.decide(&calls, now).await {
            Ok(values) => {
                self.counters.redis_requests.inc();
                values
            }
            Err(e) => {
                for call in &calls {
                    self.leases.settle(call.item, call.lease, None, now);
                }
                self.leases.give_back(items, spent);
                return Err(e);
            }
        };
        let mut granted = Vec::new();
        for (n, (call, v)) in calls.iter().zip(values.chunks(REPLY_WIDTH)).enumerate() {
            let (decided, lease) = reply(v);
            granted.push((call, lease, decided));
            // A renewal's request was decided by its lease already.
            if let Some(i) = asked.get(n) {
                // This instance's own lease is left to it too.
                leased[*i] = Some(Outcome {
                    remaining: decided.remaining + lease,
                    ..decided
                });
            }
        }
        let outcomes: Vec<Outcome> = leased.into_iter().flatten().collect();
        let admitted = super::admits(items, &outcomes);
        for (call, lease, decided) in granted {
            // A refused request was handed no lease.
            let granted = admitted.then_some((lease, &decided));
            self.leases.settle(call.item, call.lease, granted, now);
        }
        if !admitted {
            self.leases.give_back(items, spent);
        }
        self.remember_refusals(items, &outcomes, now);
        Ok(outcomes)
    }

    /// The single Redis's batcher, started on first use on the runtime
    /// that serves.
    fn batcher(&self, connection: &ConnectionManager) -> &Batcher {
        self.batcher.get_or_init(|| {
            Batcher::start(
                connection.clone(),
                self.script.clone(),
                self.timeout,
                self.counters.script_calls.clone(),
            )
        })
    }

    /// Asks Redis (the script's reply, `REPLY_WIDTH` values per call);
    /// leaves Redis alone for a moment after a failure.
    async fn decide(&self, calls: &[Call<'_>], now: u64) -> Result<Vec<i64>, CounterError> {
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(CounterError::Unavailable(
                "backing off after a failure".into(),
            ));
        }
        let result = match &self.connection {
            Connection::Single(connection) => {
                let counters = calls
                    .iter()
                    .map(|call| (call.item.key.clone(), call.args()))
                    .collect();
                self.batcher(connection).decide(counters).await
            }
            Connection::Cluster { .. } => {
                let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (i, call) in calls.iter().enumerate() {
                    groups.entry(hash_tag(&call.item.key)).or_default().push(i);
                }
                let groups: Vec<Vec<usize>> = groups.into_values().collect();
                let grouped: Vec<Vec<Call>> = groups
                    .iter()
                    .map(|g| g.iter().map(|i| calls[*i]).collect())
                    .collect();
                self.check_across_slots(grouped).await.map(|answers| {
                    let mut values = vec![0; calls.len() * REPLY_WIDTH];
                    for (group, answer) in groups.iter().zip(answers) {
                        for (i, chunk) in group.iter().zip(answer.chunks(REPLY_WIDTH)) {
                            values[i * REPLY_WIDTH..(i + 1) * REPLY_WIDTH].copy_from_slice(chunk);
                        }
                    }
                    values
                })
            }
        };
        result
            .and_then(|values| {
                if values.len() == calls.len() * REPLY_WIDTH {
                    Ok(values)
                } else {
                    Err(CounterError::Unavailable("unexpected script reply".into()))
                }
            })
            .inspect_err(|_| {
                self.skip_until_ms
                    .store(now_ms() + BACKOFF_MS, Ordering::Relaxed);
            })
    }

    /// Refuses at once if a blocking counter is known to be spent (here:
    /// Redis refused it, and this instance holds no lease that covers it).
    fn known_refusal(
        &self,
        items: &[Item],
        leased: &[Option<Outcome>],
        now: u64,
    ) -> Option<Vec<Outcome>> {
        let known = self
            .known_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.is_empty() {
            return None;
        }
        let over = |item: &Item, lease: &Option<Outcome>| {
            !item.shadow
                && lease.is_none()
                && known.get(&item.key).is_some_and(|until| *until > now)
        };
        let spent = items
            .iter()
            .zip(leased)
            .any(|(item, lease)| over(item, lease));
        spent.then(|| {
            items
                .iter()
                .zip(leased)
                .map(|(item, lease)| {
                    if let Some(outcome) = lease {
                        return *outcome;
                    }
                    let until = known.get(&item.key).copied().unwrap_or(0);
                    let over = over(item, lease);
                    Outcome {
                        allowed: !over,
                        limit: item.rule.requests,
                        remaining: if over { 0 } else { item.rule.requests },
                        reset_ms: until.saturating_sub(now),
                        next: Counter::NONE,
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

    /// How decisions were reached, for `/metrics`.
    pub fn counters(&self) -> RedisCounters {
        self.counters.clone()
    }

    /// Drops expired entries of the local over-limit cache and leases.
    pub fn sweep(&self) {
        self.leases.sweep();
        let now = now_ms();
        self.known_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }
}

/// An outcome as the script answered it (`REPLY_WIDTH` values), and the
/// hits it leased.
fn reply(v: &[i64]) -> (Outcome, u64) {
    let decided = Outcome {
        allowed: v[0] == 1,
        remaining: v[1].max(0) as u64,
        reset_ms: v[2].max(0) as u64,
        limit: v[3].max(0) as u64,
        // The state lives in Redis.
        next: Counter::NONE,
    };
    (decided, v[4].max(0) as u64)
}
