//! Automatic canary analysis, pure: given the canary nodes' and the other
//! nodes' traffic over the same recent window, whether the canary is worse
//! than the rest by more than the rollout's thresholds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A canary's thresholds; every field has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Abort when the canary's share of 5xx answers exceeds the rest's by
    /// more than this (0.05: five percentage points).
    pub max_error_rate_increase: f64,
    /// Abort when the canary's p99 request time is more than this many
    /// times the rest's (and at least 50 ms more).
    pub max_p99_ratio: f64,
    /// Requests the canary nodes (and, for latency, the rest) must have
    /// served in the window before anything is judged.
    pub min_requests: u64,
    /// How far back each judgement looks, in milliseconds.
    pub window_ms: u64,
    /// Promote by itself once the canary ran this long without failing
    /// (absent: wait for an operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.05,
            max_p99_ratio: 2.0,
            min_requests: 20,
            window_ms: 30_000,
            duration_ms: None,
        }
    }
}

impl Analysis {
    /// What is wrong with it, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.max_error_rate_increase) {
            problems.push((
                "analysis.max_error_rate_increase",
                "a share between 0 and 1".to_owned(),
            ));
        }
        if !(self.max_p99_ratio >= 1.0 && self.max_p99_ratio <= 1000.0) {
            problems.push(("analysis.max_p99_ratio", "between 1 and 1000".to_owned()));
        }
        if !(1_000..=3_600_000).contains(&self.window_ms) {
            problems.push(("analysis.window_ms", "between 1000 and 3600000".to_owned()));
        }
        if self
            .duration_ms
            .is_some_and(|d| !(1_000..=604_800_000).contains(&d))
        {
            problems.push((
                "analysis.duration_ms",
                "between 1000 and 604800000 (a week)".to_owned(),
            ));
        }
        problems
    }
}

/// Traffic of a group of nodes over a window: requests, 5xx answers and
/// the request-time histogram (upper bound in ms, count), ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl Window {
    pub fn add(&mut self, other: &Window) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (bound, count) in &other.buckets {
            match self.buckets.iter_mut().find(|(b, _)| b == bound) {
                Some((_, c)) => *c += count,
                None => self.buckets.push((*bound, *count)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The 99th percentile, as the upper bound of the bucket it falls in.
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (bound, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(*bound);
            }
        }
        self.buckets.last().map(|(b, _)| *b)
    }
}

/// Why the canary should be aborted, if it should.
pub fn verdict(analysis: &Analysis, canary: &Window, rest: &Window) -> Option<String> {
    if canary.requests < analysis.min_requests {
        return None;
    }
    let (ours, theirs) = (canary.error_rate(), rest.error_rate());
    if ours - theirs > analysis.max_error_rate_increase {
        return Some(format!(
            "error rate {:.1}% on the canary nodes vs {:.1}% on the rest ({} of {} requests), above the allowed {:.1} points",
            ours * 100.0,
            theirs * 100.0,
            canary.errors,
            canary.requests,
            analysis.max_error_rate_increase * 100.0
        ));
    }
    if rest.requests < analysis.min_requests {
        return None;
    }
    if let (Some(ours), Some(theirs)) = (canary.p99_ms(), rest.p99_ms())
        && ours > theirs * analysis.max_p99_ratio
        && ours - theirs >= 50.0
    {
        return Some(format!(
            "p99 {ours} ms on the canary nodes vs {theirs} ms on the rest, above {}×",
            analysis.max_p99_ratio
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, errors: u64, slow: u64) -> Window {
        Window {
            requests,
            errors,
            buckets: vec![(5.0, requests - slow), (1000.0, slow)],
        }
    }

    #[test]
    fn a_canary_failing_a_fifth_of_its_requests_is_aborted() {
        let a = Analysis::default();
        let reason = verdict(&a, &window(100, 20, 0), &window(200, 2, 0)).expect("abort");
        assert!(
            reason.starts_with("error rate 20.0% on the canary nodes vs 1.0%"),
            "{reason}"
        );
        assert_eq!(verdict(&a, &window(100, 5, 0), &window(200, 2, 0)), None);
        assert_eq!(
            verdict(&a, &window(10, 10, 0), &window(200, 0, 0)),
            None,
            "too few requests"
        );
    }

    #[test]
    fn a_slow_canary_is_aborted_on_p99() {
        let a = Analysis::default();
        let reason = verdict(&a, &window(100, 0, 5), &window(200, 0, 0)).expect("abort");
        assert!(
            reason.starts_with("p99 1000 ms on the canary nodes vs 5 ms"),
            "{reason}"
        );
        assert_eq!(verdict(&a, &window(100, 0, 5), &window(200, 0, 4)), None);
    }

    #[test]
    fn windows_add_up_by_bucket() {
        let mut w = window(10, 1, 2);
        w.add(&Window {
            requests: 5,
            errors: 0,
            buckets: vec![(1.0, 5)],
        });
        assert_eq!((w.requests, w.errors), (15, 1));
        assert_eq!(w.buckets, vec![(1.0, 5), (5.0, 8), (1000.0, 2)]);
        assert_eq!(Window::default().p99_ms(), None);
    }

    #[test]
    fn thresholds_are_checked() {
        let bad = Analysis {
            max_error_rate_increase: 2.0,
            window_ms: 10,
            ..Analysis::default()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(
            fields,
            ["analysis.max_error_rate_increase", "analysis.window_ms"]
        );
    }
}
