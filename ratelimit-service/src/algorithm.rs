//! The three counting algorithms as pure functions of (state, now, hits),
//! so every storage backend applies exactly the same arithmetic.
//!
//! Times are unix milliseconds from the storage's clock (Redis `TIME` for the
//! Redis backend), never the gateway's.

use gatehouse_proto::ratelimit::Algorithm;

/// A limit as the service applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub algorithm: Algorithm,
    pub requests: u64,
    pub period_ms: u64,
    /// Token bucket capacity.
    pub burst: u64,
}

/// The stored state of one counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counter {
    /// Fixed and sliding windows: hits in the window starting at `window`
    /// and in the one before it.
    Window {
        window: u64,
        current: u64,
        previous: u64,
    },
    Bucket {
        tokens: f64,
        at_ms: u64,
    },
}

impl Counter {
    /// For outcomes of stores that keep the state elsewhere (Redis).
    pub const NONE: Counter = Counter::Window {
        window: 0,
        current: 0,
        previous: 0,
    };
}

/// The verdict for one counter, and its state if the request goes ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Until the counter resets (windows) or, when refused, until a request
    /// fits again (token bucket).
    pub reset_ms: u64,
    pub next: Counter,
}

impl Rule {
    /// How long a counter must be kept: after this it can only read as fresh.
    pub fn ttl_ms(&self) -> u64 {
        match self.algorithm {
            Algorithm::FixedWindow => self.period_ms,
            Algorithm::SlidingWindow => 2 * self.period_ms,
            Algorithm::TokenBucket => {
                self.period_ms.saturating_mul(self.burst.max(1)) / self.requests.max(1) + 1000
            }
        }
    }

    pub fn evaluate(&self, stored: Option<Counter>, now_ms: u64, hits: u64) -> Outcome {
        match self.algorithm {
            Algorithm::FixedWindow => self.fixed(stored, now_ms, hits),
            Algorithm::SlidingWindow => self.sliding(stored, now_ms, hits),
            Algorithm::TokenBucket => self.bucket(stored, now_ms, hits),
        }
    }

    fn window_of(&self, now_ms: u64) -> u64 {
        now_ms - now_ms % self.period_ms.max(1)
    }

    /// Hits in the current and the previous window, as of `window`.
    fn counts(&self, stored: Option<Counter>, window: u64) -> (u64, u64) {
        match stored {
            Some(Counter::Window {
                window: w,
                current,
                previous,
            }) => {
                if w == window {
                    (current, previous)
                } else if w + self.period_ms == window {
                    (0, current)
                } else {
                    (0, 0)
                }
            }
            _ => (0, 0),
        }
    }

    fn fixed(&self, stored: Option<Counter>, now_ms: u64, hits: u64) -> Outcome {
        let window = self.window_of(now_ms);
        let (current, previous) = self.counts(stored, window);
        let allowed = current + hits <= self.requests;
        let used = if allowed { current + hits } else { current };
        Outcome {
            allowed,
            limit: self.requests,
            remaining: self.requests.saturating_sub(used),
            reset_ms: window + self.period_ms - now_ms,
            next: Counter::Window {
                window,
                current: current + hits,
                previous,
            },
        }
    }

    /// The previous window counts in proportion to how much of it still
    /// overlaps the sliding window ending now.
    fn sliding(&self, stored: Option<Counter>, now_ms: u64, hits: u64) -> Outcome {
        let window = self.window_of(now_ms);
        let (current, previous) = self.counts(stored, window);
        let elapsed = now_ms - window;
        let weight = (self.period_ms - elapsed) as f64 / self.period_ms as f64;
        let estimated = previous as f64 * weight + current as f64;
        let allowed = estimated + hits as f64 <= self.requests as f64;
        let used = if allowed {
            estimated + hits as f64
        } else {
            estimated
        };
        Outcome {
            allowed,
            limit: self.requests,
            remaining: (self.requests as f64 - used).max(0.0).floor() as u64,
            reset_ms: window + self.period_ms - now_ms,
            next: Counter::Window {
                window,
                current: current + hits,
                previous,
            },
        }
    }

    fn bucket(&self, stored: Option<Counter>, now_ms: u64, hits: u64) -> Outcome {
        let capacity = self.burst.max(1) as f64;
        let rate = self.requests as f64 / self.period_ms.max(1) as f64; // tokens per ms
        let tokens = match stored {
            Some(Counter::Bucket { tokens, at_ms }) => {
                (tokens + now_ms.saturating_sub(at_ms) as f64 * rate).min(capacity)
            }
            _ => capacity,
        };
        let allowed = tokens >= hits as f64;
        let left = if allowed {
            tokens - hits as f64
        } else {
            tokens
        };
        let reset_ms = if allowed {
            ((capacity - left) / rate).ceil() as u64
        } else {
            ((hits as f64 - tokens) / rate).ceil() as u64
        };
        Outcome {
            allowed,
            limit: self.burst,
            remaining: left.floor() as u64,
            reset_ms,
            next: Counter::Bucket {
                tokens: left,
                at_ms: now_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(algorithm: Algorithm, requests: u64, period_ms: u64, burst: u64) -> Rule {
        Rule {
            algorithm,
            requests,
            period_ms,
            burst,
        }
    }

    /// Applies `n` single hits at `now`, returning how many were allowed.
    fn run(rule: &Rule, counter: &mut Option<Counter>, now: u64, n: u64) -> u64 {
        let mut allowed = 0;
        for _ in 0..n {
            let outcome = rule.evaluate(*counter, now, 1);
            if outcome.allowed {
                *counter = Some(outcome.next);
                allowed += 1;
            }
        }
        allowed
    }

    #[test]
    fn fixed_window_allows_exactly_the_limit_then_resets() {
        let r = rule(Algorithm::FixedWindow, 10, 60_000, 10);
        let mut c = None;
        assert_eq!(run(&r, &mut c, 120_500, 15), 10);
        let refused = r.evaluate(c, 150_000, 1);
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.reset_ms), (0, 30_000));
        assert_eq!(run(&r, &mut c, 180_000, 15), 10, "new window");
    }

    #[test]
    fn sliding_window_weighs_the_previous_window_at_the_boundary() {
        let r = rule(Algorithm::SlidingWindow, 10, 60_000, 10);
        let mut c = None;
        assert_eq!(run(&r, &mut c, 60_000 + 59_000, 10), 10);
        // Just after the boundary almost all of the previous window overlaps.
        assert_eq!(run(&r, &mut c, 120_000 + 1_000, 10), 0);
        // Half way through, half of it does: 5 more fit.
        assert_eq!(run(&r, &mut c, 120_000 + 30_000, 10), 5);
        // A window later, nothing of the first window remains.
        assert_eq!(run(&r, &mut c, 240_000 + 59_999, 20), 10);
    }

    #[test]
    fn token_bucket_bursts_then_refills_at_the_rate() {
        let r = rule(Algorithm::TokenBucket, 10, 1_000, 20);
        let mut c = None;
        assert_eq!(run(&r, &mut c, 0, 30), 20, "burst");
        let refused = r.evaluate(c, 0, 1);
        assert_eq!(refused.reset_ms, 100, "one token every 100 ms");
        assert_eq!(run(&r, &mut c, 500, 10), 5, "refill at 10/s");
        assert_eq!(run(&r, &mut c, 60_000, 30), 20, "never above the burst");
    }

    #[test]
    fn hits_addend_counts_several_at_once() {
        let r = rule(Algorithm::FixedWindow, 10, 1_000, 10);
        let first = r.evaluate(None, 0, 7);
        assert!(first.allowed);
        assert!(!r.evaluate(Some(first.next), 1, 4).allowed);
        assert!(r.evaluate(Some(first.next), 1, 3).allowed);
    }
}
