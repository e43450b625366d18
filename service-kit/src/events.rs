//! Security events (authentication failures, rate-limit hits) as structured
//! log lines (target `gatehouse::events`) that stay readable under attack:
//! the first event of a kind in each interval is logged at once, with its
//! trace id; the rest are counted, and when the interval ends each kind
//! that repeated gets one summary line with its count. At most
//! [`MAX_KINDS`] kinds are told apart per interval; the rest are counted
//! together.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

/// Distinct kinds kept per interval (route, reason, consumer, client).
pub const MAX_KINDS: usize = 1_000;

/// What tells events apart. Never a credential: the reason is a stable code
/// or a policy name, the consumer a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub route: String,
    pub reason: String,
    pub consumer: String,
    pub client_ip: String,
}

#[derive(Debug, Default)]
struct Window {
    /// Events after the first, per kind.
    repeats: HashMap<EventKey, u64>,
    /// Events past `MAX_KINDS` kinds.
    overflow: u64,
}

/// One kind of security event (`auth_failure`, `rate_limited`).
#[derive(Debug, Clone)]
pub struct Events {
    event: &'static str,
    interval: Duration,
    window: Arc<Mutex<Window>>,
}

impl Events {
    /// Starts the interval's flusher (inside the Tokio runtime); it ends
    /// with the last clone.
    pub fn new(event: &'static str, interval: Duration) -> Self {
        let events = Self {
            event,
            interval,
            window: Arc::default(),
        };
        let weak = Arc::downgrade(&events.window);
        tokio::spawn(flush_every(event, interval, weak));
        events
    }

    /// Records one event; logs it at once if it is the first of its kind in
    /// this interval.
    pub fn record(&self, key: EventKey, trace_id: Option<&str>) {
        let first = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let known = window.repeats.len();
            match window.repeats.get_mut(&key) {
                Some(n) => {
                    *n += 1;
                    false
                }
                None if known >= MAX_KINDS => {
                    window.overflow += 1;
                    false
                }
                None => {
                    window.repeats.insert(key.clone(), 0);
                    true
                }
            }
        };
        if first {
            tracing::info!(
                target: "gatehouse::events",
                event = self.event,
                route = %key.route,
                reason = %key.reason,
                consumer = %key.consumer,
                client_ip = %key.client_ip,
                trace_id = trace_id.unwrap_or(""),
                "{}",
                self.event
            );
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

async fn flush_every(event: &'static str, interval: Duration, window: Weak<Mutex<Window>>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(window) = window.upgrade() else {
            return;
        };
        let ended = std::mem::take(&mut *window.lock().unwrap_or_else(PoisonError::into_inner));
        drop(window);
        for (key, repeats) in ended.repeats.into_iter().filter(|(_, n)| *n > 0) {
            tracing::info!(
                target: "gatehouse::events",
                event,
                route = %key.route,
                reason = %key.reason,
                consumer = %key.consumer,
                client_ip = %key.client_ip,
                count = repeats + 1,
                interval_s = interval.as_secs(),
                "{event} (summary)"
            );
        }
        if ended.overflow > 0 {
            tracing::warn!(
                target: "gatehouse::events",
                event,
                count = ended.overflow,
                interval_s = interval.as_secs(),
                "{event} (summary of kinds past {MAX_KINDS})"
            );
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("garbage"), None);
    }

    #[tokio::test]
    async fn only_the_first_of_a_kind_is_logged_at_once() {
        let events = Events::new("auth_failure", Duration::from_secs(3600));
        let key = EventKey {
            route: "orders".into(),
            reason: "invalid_api_key".into(),
            consumer: String::new(),
            client_ip: "10.0.0.1".into(),
        };
        for _ in 0..5 {
            events.record(key.clone(), None);
        }
        let window = events.window.lock().expect("lock");
        assert_eq!(window.repeats.get(&key), Some(&4));
    }
}
