//! Each algorithm's decisions, the same on every backend.

use gatehouse_e2e::redis::{RedisCluster, RedisServer};
use gatehouse_proto::{
    ratelimit as rl,
    ratelimit_service::{RateLimitResponse, rate_limit_response::Code},
};
use gatehouse_ratelimit_service::counters::{Counters, memory::MemoryStore};

use crate::support::*;

both_backends! {
    fixed_window_allows_exactly_the_limit(store) {
        let rules = rules(vec![policy("p", 5, 3600, rl::Algorithm::FixedWindow)]);
        let mut allowed = 0;
        for _ in 0..8 {
            if ok(&ask(&rules, &store, &[("p", "alice")]).await) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
        assert!(ok(&ask(&rules, &store, &[("p", "bob")]).await), "bob has his own counter");
    }

    token_bucket_allows_the_burst(store) {
        let rules = rules(vec![policy("b", 3, 3600, rl::Algorithm::TokenBucket)]);
        let results: Vec<bool> = {
            let mut v = Vec::new();
            for _ in 0..5 {
                v.push(ok(&ask(&rules, &store, &[("b", "alice")]).await));
            }
            v
        };
        assert_eq!(results, [true, true, true, false, false]);
    }

    a_refused_request_spends_no_quota(store) {
        let rules = rules(vec![
            policy("tight", 1, 3600, rl::Algorithm::FixedWindow),
            policy("loose", 10, 3600, rl::Algorithm::SlidingWindow),
        ]);
        assert!(ok(&ask(&rules, &store, &[("tight", "a"), ("loose", "a")]).await));
        for _ in 0..4 {
            assert!(!ok(&ask(&rules, &store, &[("tight", "a"), ("loose", "a")]).await));
        }
        let loose = ask(&rules, &store, &[("loose", "a")]).await;
        assert_eq!(loose.statuses[0].limit_remaining, 8, "only the admitted request counted");
    }

    over_limit_answers_carry_ratelimit_headers(store) {
        let rules = rules(vec![policy("h", 1, 60, rl::Algorithm::FixedWindow)]);
        let first = ask(&rules, &store, &[("h", "a")]).await;
        let header = |r: &RateLimitResponse, k: &str| r.response_headers_to_add.iter().find(|h| h.key == k).map(|h| h.value.clone());
        assert_eq!(header(&first, "ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(header(&first, "retry-after"), None);
        let second = ask(&rules, &store, &[("h", "a")]).await;
        assert_eq!(second.overall_code, Code::OverLimit as i32);
        assert!(header(&second, "retry-after").is_some());
        assert_eq!(header(&second, "ratelimit-limit").as_deref(), Some("1"));
    }
}
