//! Leases: hits of a counter (a window's count or a bucket's tokens) an
//! instance took from Redis ahead of use and spends itself, so most
//! requests of a busy counter need no Redis round trip
//! (`--redis-lease-max`, 0 turns leasing off).
//!
//! When Redis admits a request it may hand out more hits of each counter
//! the request touched, never more than an eighth of what the window (or
//! bucket) has left (`decide.lua`), so the last hits of a window are still
//! decided one by one in Redis. How many an instance asks for follows the
//! counter's demand there, like TCP's slow start: nothing for a counter it
//! has not seen within the last loan period (a client IP seen once never
//! holds hits), then 1, 2, 4, … up to `max` while the counter stays busy,
//! halved whenever a loan falls due with hits unspent. A lease is renewed
//! before it runs out: the request that leaves a quarter of it asks Redis
//! for more (its own answer comes from the lease; `redis.rs` sends the ask
//! without waiting for it), and the hits left serve the requests that
//! arrive meanwhile. Leased hits are counted in Redis when they
//! are handed out, so all instances together never admit more than the
//! limit. A lease is a loan of at most a second: hits still unspent then go
//! back to Redis (`refund.lua`: a window's only while it lasts, a bucket's
//! capped at its capacity), so an instance whose traffic moved elsewhere
//! does not keep them from the others; a stopping instance gives back all it
//! holds ([`Leases::take_all`]). A window's lease also ends with its
//! window, as measured from before the Redis call, so it never outlives the
//! window it was counted in; a bucket's tokens, once taken, stay valid until
//! spent or given back. What a lease costs: for up to a second, hits one
//! instance holds are not available to the others (at most `max` per
//! instance and counter; lost if the instance is killed), and the
//! `RateLimit-Remaining` an instance reports counts its own lease as left.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use gatehouse_proto::ratelimit::Algorithm;

use super::Item;
use crate::algorithm::{Counter, Outcome, Rule};

/// Bound on the counters an instance holds leases for.
const MAX_LEASES: usize = 100_000;
/// An ask not settled this long after it was made belongs to a request
/// that was abandoned (Envoy gave up on it): it no longer counts. Far above
/// any Redis timeout.
const STALE_ASK_MS: u64 = 1_000;
/// How long leased hits may stay unspent before they go back to Redis.
pub const LOAN_MS: u64 = 1_000;
/// A lease is renewed once no more than this fraction of its size is left
/// (a quarter): enough for the requests that arrive during the round trip.
const RENEW_AT_FRACTION: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Lease {
    hits: u64,
    /// Hits asked for in calls still in flight: held and asked together
    /// stay within the maximum.
    asking: u64,
    /// When the latest ask was made (local unix ms).
    asked_ms: u64,
    /// Local unix ms at which the hits stop being valid: the window's end
    /// (or earlier); never for a bucket's tokens.
    expires_ms: u64,
    /// Local unix ms at which the counter resets, for `RateLimit-Reset`:
    /// the window's end, or when the bucket would be full.
    resets_ms: u64,
    /// Local unix ms at which unspent hits go back to Redis.
    due_ms: u64,
    /// The counter's rule, to give hits back.
    rule: Rule,
    limit: u64,
    /// What Redis had left when the lease was handed out.
    remaining_elsewhere: u64,
    /// How many hits to hold: follows the counter's demand (slow start).
    size: u64,
    /// When this instance last decided a request of the counter (local
    /// unix ms), from a lease or in Redis.
    seen_ms: u64,
    /// The lease was spent before its loan fell due: demand for more.
    ran_out: bool,
}

/// The leases one instance holds.
pub struct Leases {
    max: u64,
    held: Mutex<HashMap<String, Lease>>,
}

/// Hits taken from leases for one request, so they can be given back, and
/// the leases it found due for renewal.
#[derive(Debug, Default)]
pub struct Spent {
    taken: Vec<(usize, u64)>,
    renew: Vec<usize>,
}

impl Spent {
    /// The items decided from a lease that is now nearly spent: the caller
    /// asks Redis for more hits along with them ([`Leases::ask`]).
    pub fn renewals(&self) -> &[usize] {
        &self.renew
    }
}

impl Leases {
    /// Leases of up to `max` hits per counter; 0 turns leasing off.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The most hits held per counter (0: leasing is off).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// How many extra hits to ask Redis for along with `item`: what this
    /// instance holds, and asks for in calls in flight, stays within the
    /// maximum. Every ask is settled with [`Leases::settle`].
    pub fn ask(&self, item: &Item, now: u64) -> u64 {
        if self.max == 0 {
            return 0;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= MAX_LEASES && !held.contains_key(&item.key) {
            return 0;
        }
        let lease = held.entry(item.key.clone()).or_insert(Lease {
            hits: 0,
            asking: 0,
            asked_ms: 0,
            expires_ms: 0,
            resets_ms: 0,
            due_ms: 0,
            rule: item.rule,
            limit: 0,
            remaining_elsewhere: 0,
            size: 0,
            seen_ms: 0,
            ran_out: false,
        });
        if now >= lease.asked_ms + STALE_ASK_MS {
            lease.asking = 0;
        }
        // Idle for a loan period (or never seen): hold nothing. Busy again:
        // start at 1 and double each time a lease was spent in time.
        lease.size = if now >= lease.seen_ms + LOAN_MS {
            0
        } else if lease.size == 0 {
            1
        } else if lease.ran_out {
            (lease.size * 2).min(self.max)
        } else {
            lease.size
        };
        lease.ran_out = false;
        lease.seen_ms = now;
        let holding = if lease.expires_ms > now {
            lease.hits
        } else {
            0
        };
        let wanted = lease.size.saturating_sub(holding + lease.asking);
        if wanted > 0 {
            lease.asking += wanted;
            lease.asked_ms = now;
        }
        wanted
    }

    /// Decides each item a held lease covers, spending its hits; `None`
    /// for the items Redis must decide.
    pub fn spend(&self, items: &[Item], now: u64) -> (Vec<Option<Outcome>>, Spent) {
        let mut outcomes = vec![None; items.len()];
        let mut spent = Spent::default();
        if self.max == 0 {
            return (outcomes, spent);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_empty() {
            return (outcomes, spent);
        }
        for (i, item) in items.iter().enumerate() {
            let Some(lease) = held.get_mut(&item.key) else {
                continue;
            };
            if lease.expires_ms.min(lease.due_ms) <= now {
                continue;
            }
            if lease.hits < item.hits {
                lease.ran_out = true;
                continue;
            }
            lease.hits -= item.hits;
            lease.ran_out = lease.hits == 0;
            lease.seen_ms = now;
            spent.taken.push((i, item.hits));
            // Nearly spent and no ask in flight: renewed now, so the hits
            // left serve the requests that come during the round trip.
            let asking = lease.asking > 0 && now < lease.asked_ms + STALE_ASK_MS;
            if lease.hits * RENEW_AT_FRACTION <= lease.size && !asking {
                // Spent in time: the next ask doubles the size.
                lease.ran_out = true;
                spent.renew.push(i);
            }
            outcomes[i] = Some(Outcome {
                allowed: true,
                limit: lease.limit,
                remaining: lease.remaining_elsewhere + lease.hits,
                reset_ms: lease.resets_ms.saturating_sub(now),
                next: Counter::NONE,
            });
        }
        (outcomes, spent)
    }

    /// Returns the hits of a request that was refused after all.
    pub fn give_back(&self, items: &[Item], spent: Spent) {
        if spent.taken.is_empty() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, hits) in spent.taken {
            if let Some(lease) = held.get_mut(&items[i].key) {
                lease.hits += hits;
            }
        }
    }

    /// Settles an ask of `asked` hits made at local time `asked_at`: keeps
    /// the hits Redis handed out with the outcome in `granted` (`None` if
    /// the call failed or the request was refused).
    pub fn settle(&self, item: &Item, asked: u64, granted: Option<(u64, &Outcome)>, asked_at: u64) {
        if asked == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(old) = held.get_mut(&item.key) else {
            return;
        };
        old.asking = old.asking.saturating_sub(asked);
        let Some((leased, outcome)) = granted.filter(|(n, o)| *n > 0 && o.reset_ms > 0) else {
            return;
        };
        let new = Lease {
            hits: leased,
            asking: old.asking,
            asked_ms: old.asked_ms,
            expires_ms: if item.rule.algorithm == Algorithm::TokenBucket {
                u64::MAX
            } else {
                asked_at + outcome.reset_ms
            },
            resets_ms: asked_at + outcome.reset_ms,
            // Renewed while this instance keeps asking.
            due_ms: asked_at + LOAN_MS,
            rule: item.rule,
            limit: outcome.limit,
            remaining_elsewhere: outcome.remaining,
            size: old.size,
            seen_ms: old.seen_ms,
            ran_out: false,
        };
        *old = merged(*old, new, item.rule.period_ms, asked_at);
    }

    /// Takes the unspent hits of loans that are due, as items to give back
    /// to Redis (those of ended windows are simply dropped: their counter
    /// has reset).
    pub fn take_due(&self, now: u64) -> Vec<Item> {
        self.take(now, false)
    }

    /// Takes every unspent hit, due or not (the instance is stopping: what
    /// it holds goes back so that no instance is kept from it).
    pub fn take_all(&self, now: u64) -> Vec<Item> {
        self.take(now, true)
    }

    fn take(&self, now: u64, all: bool) -> Vec<Item> {
        if self.max == 0 {
            return Vec::new();
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        for (key, lease) in held.iter_mut() {
            if lease.hits == 0 || (lease.due_ms > now && !all) {
                continue;
            }
            // Asked for more than was used: ask for less.
            lease.size /= 2;
            if lease.expires_ms > now {
                due.push(Item {
                    key: key.clone(),
                    rule: lease.rule,
                    hits: lease.hits,
                    shadow: false,
                });
            }
            lease.hits = 0;
        }
        due
    }

    /// Drops leases that hold nothing valid and whose counter is idle.
    pub fn sweep(&self) {
        let now = super::memory::now_ms();
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, lease| {
                (lease.hits > 0 && lease.expires_ms > now)
                    || now < lease.seen_ms + LOAN_MS
                    || (lease.asking > 0 && now < lease.asked_ms + STALE_ASK_MS)
            });
    }
}

/// A new lease, plus what is left of the old one if both are of the same
/// window (their ends less than half a period apart; a bucket's tokens
/// always add up).
fn merged(old: Lease, new: Lease, period_ms: u64, now: u64) -> Lease {
    let same_window =
        old.expires_ms > now && old.expires_ms.abs_diff(new.expires_ms) < period_ms / 2;
    if !same_window {
        return new;
    }
    Lease {
        hits: old.hits + new.hits,
        expires_ms: old.expires_ms.min(new.expires_ms),
        ..new
    }
}

#[cfg(test)]
mod tests;
