//! Leases on Redis: renewing a nearly spent lease (in the background on a
//! single Redis), and giving unspent hits back when a loan falls due or the
//! service stops.

use std::{sync::atomic::Ordering, time::Duration};

use tracing::warn;

use super::{BACKOFF_MS, Call, Connection, REPLY_WIDTH, RedisStore, reply};
use crate::counters::{Item, lease::Leases, memory::now_ms};

impl RedisStore {
    /// Tops up nearly spent leases for a request already answered from
    /// them: on a single Redis in the background, so the request does not
    /// wait for it; on a cluster before returning. A renewal that fails or
    /// is refused hands out nothing.
    pub(super) async fn renew(&self, renewals: &[Call<'_>], now: u64) {
        if renewals.is_empty() {
            return;
        }
        let asked: Vec<(Item, u64)> = renewals.iter().map(|c| (c.item.clone(), c.lease)).collect();
        let Connection::Single(connection) = &self.connection else {
            let values = self.decide(renewals, now).await.ok();
            settle_renewals(&self.leases, &asked, values.as_deref(), now);
            return;
        };
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            settle_renewals(&self.leases, &asked, None, now);
            return;
        }
        let answer = self.batcher(connection).submit(
            renewals
                .iter()
                .map(|c| (c.item.key.clone(), c.args()))
                .collect(),
        );
        let (leases, skip_until_ms, in_flight) = (
            self.leases.clone(),
            self.skip_until_ms.clone(),
            self.counters.renewals_in_flight.clone(),
        );
        in_flight.inc();
        tokio::spawn(async move {
            let values = answer
                .await
                .ok()
                .filter(|v| v.len() == asked.len() * REPLY_WIDTH);
            if values.is_none() {
                skip_until_ms.store(now_ms() + BACKOFF_MS, Ordering::Relaxed);
            }
            settle_renewals(&leases, &asked, values.as_deref(), now);
            in_flight.dec();
        });
    }

    /// Whether leases are on (`with_leases` above 0).
    pub fn leasing(&self) -> bool {
        self.leases.max() > 0
    }

    /// Gives the unspent hits of leases past their loan back to Redis (see
    /// `lease.rs`). A failure only leaves them unavailable until their
    /// window ends.
    pub async fn return_due_leases(&self) {
        self.give_back_to_redis(self.leases.take_due(now_ms()))
            .await;
    }

    /// Gives every unspent leased hit back to Redis, due or not: for a
    /// stopping instance, once the renewals in flight (bounded by the Redis
    /// timeout) have landed, so a restart strands none.
    pub async fn return_all_leases(&self) {
        let deadline = tokio::time::Instant::now() + self.timeout + Duration::from_millis(50);
        while self.counters.renewals_in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.give_back_to_redis(self.leases.take_all(now_ms()))
            .await;
    }

    pub(super) async fn give_back_to_redis(&self, unspent: Vec<Item>) {
        if unspent.is_empty() {
            return;
        }
        let calls: Vec<Call> = unspent
            .iter()
            .map(|item| Call {
                item,
                hits: item.hits,
                lease: 0,
            })
            .collect();
        let groups: Vec<&[Call]> = match self.connection {
            Connection::Single(_) => vec![&calls[..]],
            // A script touches one slot: one call per counter.
            Connection::Cluster { .. } => calls.chunks(1).collect(),
        };
        for group in groups {
            if let Err(e) = self.invoke(&self.refund, group).await {
                warn!(error = %e, "could not give unspent leased hits back to Redis");
            }
        }
    }
}

/// Settles renewals (item, hits asked) with the script's reply for them, or
/// `None` if the call failed: a refused renewal hands out nothing.
pub(super) fn settle_renewals(
    leases: &Leases,
    asked: &[(Item, u64)],
    values: Option<&[i64]>,
    now: u64,
) {
    for (n, (item, lease)) in asked.iter().enumerate() {
        let granted = values
            .map(|v| reply(&v[n * REPLY_WIDTH..(n + 1) * REPLY_WIDTH]))
            .filter(|(decided, _)| decided.allowed);
        let granted = granted.as_ref().map(|(decided, hits)| (*hits, decided));
        leases.settle(item, *lease, granted, now);
    }
}
