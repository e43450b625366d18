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
mod tests {
    use super::*;
    use crate::algorithm::Rule;

    fn item(key: &str, algorithm: Algorithm, hits: u64) -> Item {
        Item {
            key: key.into(),
            rule: Rule {
                algorithm,
                requests: 1000,
                period_ms: 60_000,
                burst: 0,
            },
            hits,
            shadow: false,
        }
    }

    fn granted(remaining: u64, reset_ms: u64) -> Outcome {
        Outcome {
            allowed: true,
            limit: 1000,
            remaining,
            reset_ms,
            next: Counter::NONE,
        }
    }

    /// Makes `item`'s counter as busy at `at` as it takes for the next ask
    /// to be for the maximum (`asks_follow_the_counters_demand` shows
    /// how it gets there).
    fn warm(leases: &Leases, item: &Item, at: u64) {
        let asked = leases.ask(item, at);
        leases.settle(item, asked, None, at);
        let mut held = leases.held.lock().expect("not poisoned");
        if let Some(lease) = held.get_mut(&item.key) {
            (lease.size, lease.seen_ms, lease.ran_out) = (leases.max, at, true);
        }
    }

    /// Asks for a lease at `at` (on a busy counter) and settles it with
    /// `leased` hits.
    fn lease(leases: &Leases, item: &Item, leased: u64, remaining: u64, reset_ms: u64, at: u64) {
        warm(leases, item, at);
        let asked = leases.ask(item, at);
        assert!(asked >= leased);
        leases.settle(
            item,
            asked,
            Some((leased, &granted(remaining, reset_ms))),
            at,
        );
    }

    #[test]
    fn off_asks_for_nothing_and_holds_nothing() {
        let leases = Leases::new(0);
        let a = item("a", Algorithm::FixedWindow, 1);
        assert_eq!(leases.ask(&a, 1_000), 0);
        leases.settle(&a, 0, Some((10, &granted(900, 5_000))), 1_000);
        assert_eq!(leases.spend(&[a], 1_000).0, vec![None]);
    }

    #[test]
    fn a_buckets_tokens_stay_valid_past_its_reset_and_go_back_when_due() {
        let leases = Leases::new(50);
        let bucket = item("a", Algorithm::TokenBucket, 1);
        warm(&leases, &bucket, 1_000);
        assert_eq!(leases.ask(&bucket, 1_000), 50);
        // Redis took 5 tokens more; the bucket would be full again in 600 ms.
        leases.settle(&bucket, 50, Some((5, &granted(20, 600))), 1_000);
        let (first, _) = leases.spend(std::slice::from_ref(&bucket), 1_100);
        assert_eq!(first[0].map(|o| o.reset_ms), Some(500));
        // Taken tokens do not expire with the refill.
        let (late, _) = leases.spend(std::slice::from_ref(&bucket), 1_700);
        assert_eq!(late[0].map(|o| o.reset_ms), Some(0));
        let due = leases.take_due(2_000);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].hits, due[0].rule.algorithm),
            (3, Algorithm::TokenBucket)
        );
    }

    #[test]
    fn asks_follow_the_counters_demand() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        // Seen for the first time (a client IP passing by): nothing.
        assert_eq!(leases.ask(&a, 1_000), 0);
        leases.settle(&a, 0, None, 1_000);
        // Busy: 1, then twice as much each time a lease is spent in time,
        // renewed when a quarter is left (an ask tops up what is held).
        let mut now = 1_010;
        let mut asks = Vec::new();
        while asks.len() < 8 {
            let asked = leases.ask(&a, now);
            asks.push(asked);
            leases.settle(&a, asked, Some((asked, &granted(900, 50_000))), now);
            now += 10;
            loop {
                let (outcomes, spent) = leases.spend(std::slice::from_ref(&a), now);
                assert!(outcomes[0].is_some(), "covered until renewed, at {now}");
                if !spent.renewals().is_empty() {
                    break;
                }
            }
        }
        assert_eq!(asks, [1, 2, 4, 7, 14, 28, 42, 38]);
        // Idle for longer than a loan: nothing again.
        assert_eq!(leases.ask(&a, now + LOAN_MS), 0);
    }

    #[test]
    fn hits_unspent_when_the_loan_falls_due_halve_the_next_ask() {
        let leases = Leases::new(64);
        let a = item("a", Algorithm::FixedWindow, 1);
        lease(&leases, &a, 64, 900, 50_000, 1_000);
        assert!(leases.spend(std::slice::from_ref(&a), 1_900).0[0].is_some());
        assert_eq!(leases.take_due(2_000)[0].hits, 63);
        // Still busy (seen at 1,900), but 64 hits were too many.
        assert_eq!(leases.ask(&a, 2_000), 32);
    }

    #[test]
    fn held_and_asked_for_hits_stay_within_the_maximum() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        warm(&leases, &a, 1_000);
        // Two calls in flight at once: the second asks for nothing.
        assert_eq!(leases.ask(&a, 1_000), 50);
        assert_eq!(leases.ask(&a, 1_000), 0);
        leases.settle(&a, 50, Some((30, &granted(900, 5_000))), 1_000);
        leases.settle(&a, 0, None, 1_000);
        assert_eq!(leases.ask(&a, 1_001), 20, "30 held");
        leases.settle(&a, 20, None, 1_001);
        // Once the window is over, what was held counts for nothing.
        warm(&leases, &a, 6_000);
        assert_eq!(leases.ask(&a, 6_000), 50);
    }

    #[test]
    fn a_nearly_spent_lease_is_renewed_while_its_last_hits_serve() {
        let leases = Leases::new(8);
        let a = item("a", Algorithm::FixedWindow, 1);
        let spend = |now| leases.spend(std::slice::from_ref(&a), now);
        warm(&leases, &a, 1_000);
        let asked = leases.ask(&a, 1_000);
        leases.settle(&a, asked, Some((8, &granted(900, 50_000))), 1_000);
        for _ in 0..5 {
            let (outcomes, spent) = spend(1_001);
            assert!(outcomes[0].is_some() && spent.renewals().is_empty());
        }
        // The request that leaves a quarter is decided here and renews it...
        let (outcomes, spent) = spend(1_001);
        assert!(outcomes[0].is_some());
        assert_eq!(spent.renewals(), [0]);
        let renewal = leases.ask(&a, 1_001);
        assert_eq!(renewal, 6, "topped up to the size, 2 still held");
        // ...and while its ask is in flight the two left are spent, once.
        for _ in 0..2 {
            let (outcomes, spent) = spend(1_002);
            assert!(outcomes[0].is_some() && spent.renewals().is_empty());
        }
        assert_eq!(spend(1_002).0, vec![None]);
        // Spent out before the renewal landed: asks for the rest of the size.
        assert_eq!(leases.ask(&a, 1_002), 2, "6 asked for in flight");
        leases.settle(&a, 2, None, 1_002);
        leases.settle(&a, renewal, Some((6, &granted(890, 49_000))), 1_001);
        assert!(spend(1_003).0[0].is_some());
    }

    #[test]
    fn an_ask_never_settled_stops_counting_after_a_while() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        warm(&leases, &a, 1_000);
        // The request that asked was dropped before its answer.
        assert_eq!(leases.ask(&a, 1_000), 50);
        assert_eq!(leases.ask(&a, 1_999), 0);
        assert_eq!(leases.ask(&a, 2_000), 50);
    }

    #[test]
    fn a_lease_covers_requests_until_it_is_spent() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 2);
        lease(&leases, &a, 5, 900, 5_000, 1_000);
        let (first, _) = leases.spend(std::slice::from_ref(&a), 1_100);
        let first = first[0].expect("covered");
        assert!(first.allowed);
        assert_eq!((first.remaining, first.reset_ms), (903, 4_900));
        assert!(leases.spend(std::slice::from_ref(&a), 1_100).0[0].is_some());
        // One hit left, two asked: Redis decides.
        assert_eq!(leases.spend(&[a], 1_100).0, vec![None]);
    }

    #[test]
    fn a_lease_ends_with_its_window() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        lease(&leases, &a, 5, 900, 500, 1_000);
        assert!(leases.spend(std::slice::from_ref(&a), 1_499).0[0].is_some());
        assert_eq!(leases.spend(std::slice::from_ref(&a), 1_500).0, vec![None]);
        // Its counter has reset: nothing to give back.
        assert!(leases.take_due(2_000).is_empty());
    }

    #[test]
    fn unspent_hits_fall_due_after_a_second_and_go_back_once() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        lease(&leases, &a, 5, 900, 50_000, 1_000);
        assert!(leases.spend(std::slice::from_ref(&a), 1_999).0[0].is_some());
        assert!(leases.take_due(1_999).is_empty(), "not due yet");
        assert_eq!(leases.spend(std::slice::from_ref(&a), 2_000).0, vec![None]);
        let due = leases.take_due(2_000);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].key.as_str(), due[0].hits), ("a", 4));
        assert_eq!(due[0].rule, a.rule);
        assert!(leases.take_due(2_500).is_empty(), "given back once");
    }

    #[test]
    fn stopping_takes_every_unspent_hit_due_or_not() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        let b = item("b", Algorithm::TokenBucket, 1);
        lease(&leases, &a, 5, 900, 50_000, 1_000);
        lease(&leases, &b, 3, 20, 600, 1_000);
        assert!(leases.spend(std::slice::from_ref(&a), 1_100).0[0].is_some());
        assert!(leases.take_due(1_100).is_empty(), "not due yet");
        let mut all: Vec<(String, u64)> = leases
            .take_all(1_100)
            .into_iter()
            .map(|item| (item.key, item.hits))
            .collect();
        all.sort();
        assert_eq!(all, [("a".to_owned(), 4), ("b".to_owned(), 3)]);
        assert!(leases.take_all(1_100).is_empty(), "given back once");
    }

    #[test]
    fn hits_of_a_refused_request_go_back_to_the_lease() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 1);
        let b = item("b", Algorithm::FixedWindow, 1);
        lease(&leases, &a, 1, 900, 5_000, 1_000);
        let items = [a.clone(), b];
        let (outcomes, spent) = leases.spend(&items, 1_000);
        assert!(outcomes[0].is_some() && outcomes[1].is_none());
        leases.give_back(&items, spent);
        assert!(leases.spend(&[a], 1_000).0[0].is_some());
    }

    #[test]
    fn leases_of_one_window_add_up_and_a_new_window_replaces_the_old() {
        let leases = Leases::new(50);
        let a = item("a", Algorithm::FixedWindow, 3);
        lease(&leases, &a, 2, 900, 5_000, 1_000);
        lease(&leases, &a, 1, 890, 4_990, 1_010);
        assert!(leases.spend(std::slice::from_ref(&a), 1_020).0[0].is_some());

        lease(&leases, &a, 2, 900, 5_000, 1_000);
        // The next window's lease: the old window's hits are not carried over.
        lease(&leases, &a, 2, 990, 59_000, 6_000);
        assert_eq!(leases.spend(&[a], 6_000).0, vec![None]);
    }
}
