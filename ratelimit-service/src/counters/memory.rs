//! The in-memory backend: the embedded default for a single instance, and
//! the local safety net ("grace mode") when Redis is unreachable.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use super::{Item, admits};
use crate::algorithm::{Counter, Outcome};

#[derive(Default)]
pub struct MemoryStore {
    counters: Mutex<HashMap<String, (Counter, u64)>>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MemoryStore {
    pub fn check(&self, items: &[Item]) -> Vec<Outcome> {
        self.check_at(items, now_ms())
    }

    pub fn check_at(&self, items: &[Item], now: u64) -> Vec<Outcome> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let outcomes: Vec<Outcome> = items
            .iter()
            .map(|item| {
                let stored = counters
                    .get(&item.key)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(counter, _)| *counter);
                item.rule.evaluate(stored, now, item.hits)
            })
            .collect();
        if admits(items, &outcomes) {
            for (item, outcome) in items.iter().zip(&outcomes) {
                counters.insert(item.key.clone(), (outcome.next, now + item.rule.ttl_ms()));
            }
        }
        outcomes
    }

    /// Drops expired counters; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = now_ms();
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.retain(|_, (_, expires)| *expires > now);
        counters.len()
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::ratelimit::Algorithm;

    use super::*;
    use crate::algorithm::Rule;

    fn item(key: &str, requests: u64, shadow: bool) -> Item {
        Item {
            key: key.into(),
            rule: Rule {
                algorithm: Algorithm::FixedWindow,
                requests,
                period_ms: 60_000,
                burst: requests,
            },
            hits: 1,
            shadow,
        }
    }

    #[test]
    fn a_refused_request_increments_nothing() {
        let store = MemoryStore::default();
        let tight = item("tight", 1, false);
        let loose = item("loose", 100, false);
        assert!(admits(
            &[tight.clone(), loose.clone()],
            &store.check_at(&[tight.clone(), loose.clone()], 0)
        ));
        for _ in 0..5 {
            let outcomes = store.check_at(&[tight.clone(), loose.clone()], 1);
            assert!(!admits(&[tight.clone(), loose.clone()], &outcomes));
        }
        let alone = store.check_at(std::slice::from_ref(&loose), 2);
        assert_eq!(alone[0].remaining, 98, "only the admitted request counted");
    }

    #[test]
    fn shadow_items_count_but_never_block() {
        let store = MemoryStore::default();
        let shadow = item("shadow", 2, true);
        for _ in 0..5 {
            assert!(admits(
                std::slice::from_ref(&shadow),
                &store.check_at(std::slice::from_ref(&shadow), 0)
            ));
        }
        let outcome = store.check_at(std::slice::from_ref(&shadow), 0);
        assert!(!outcome[0].allowed, "reported as over its limit");
    }

    #[test]
    fn expired_counters_read_as_fresh_and_are_swept() {
        let store = MemoryStore::default();
        let one = item("k", 1, false);
        store.check_at(std::slice::from_ref(&one), 0);
        assert!(store.check_at(std::slice::from_ref(&one), 60_000)[0].allowed);
        assert_eq!(
            store.sweep(),
            0,
            "every counter written in the past has expired"
        );
    }
}
