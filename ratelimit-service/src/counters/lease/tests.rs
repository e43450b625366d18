//! The lease book's unit tests: demand, loans, renewals, give-backs.

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
