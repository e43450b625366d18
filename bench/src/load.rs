//! Load shapes the benchmarks drive services with: an open loop, which starts
//! requests on a schedule whatever the answers' latency (for latency), and a
//! closed loop of back-to-back callers (for throughput).

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// How often the pacing thread releases the requests that have fallen due.
const PACING_SLOT: Duration = Duration::from_micros(200);

/// Open loop: `rate` calls per second for `seconds`, `call(i)` for the i-th.
///
/// A pacing thread (a plain thread, whose sleeps have microsecond precision
/// where tokio's timer has milliseconds) releases the calls that have fallen
/// due every [`PACING_SLOT`]. A latency counts from the call's release, or
/// from one slot after its scheduled time if it was released later than
/// that: up to one slot of pacing is the generator's rounding, beyond it
/// a stall (generator, server, VM), which shows in the figures instead of
/// thinning the load, as with `oha --latency-correction`. A call's future
/// answers whether it succeeded: past a server's capacity calls fail
/// (queues overflow) rather than the run.
/// Every call's latency, sorted, and how many calls failed.
pub async fn open_loop<F, Fut>(rate: u32, seconds: u64, call: F) -> (Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = u64::from(rate) * seconds;
    let counted_from = move |started: Instant, i: u64, released: Instant| {
        let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
        released.min(due + PACING_SLOT)
    };
    let (due, mut released) =
        tokio::sync::mpsc::unbounded_channel::<(std::ops::Range<u64>, Instant)>();
    let started = Instant::now();
    std::thread::spawn(move || {
        let mut sent = 0;
        while sent < total {
            let slot_end = Instant::now() + PACING_SLOT;
            let fallen_due =
                ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
            if fallen_due > sent {
                if due.send((sent..fallen_due, Instant::now())).is_err() {
                    return;
                }
                sent = fallen_due;
            }
            std::thread::sleep(slot_end.saturating_duration_since(Instant::now()));
        }
    });
    let call = std::sync::Arc::new(call);
    let mut calls = tokio::task::JoinSet::new();
    while let Some((batch, released_at)) = released.recv().await {
        for i in batch {
            let call = call.clone();
            let from = counted_from(started, i, released_at);
            calls.spawn(async move {
                let succeeded = call(i as usize).await;
                (from.elapsed(), succeeded)
            });
        }
    }
    let (mut latencies, mut failed) = (Vec::with_capacity(total as usize), 0);
    while let Some(joined) = calls.join_next().await {
        let (latency, succeeded) = joined.expect("a call panicked");
        latencies.push(latency);
        failed += usize::from(!succeeded);
    }
    latencies.sort_unstable();
    (latencies, failed)
}

/// Closed loop for `seconds`: `concurrency` callers each run `call(i)` back
/// to back (i = caller, caller + concurrency, ...). Every call's latency, sorted.
pub async fn closed_loop<F, Fut>(seconds: u64, concurrency: usize, call: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..concurrency {
        let call = call.clone();
        callers.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = caller;
            while Instant::now() < deadline {
                let started = Instant::now();
                call(i).await;
                latencies.push(started.elapsed());
                i += concurrency;
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = callers.join_next().await {
        latencies.append(&mut joined.expect("a call panicked"));
    }
    latencies.sort_unstable();
    latencies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_open_loop_makes_every_call_once() {
        let made = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = made.clone();
        let (latencies, failed) = open_loop(2_000, 1, move |i| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("not poisoned").push(i);
                i % 10 != 0
            }
        })
        .await;
        assert_eq!((latencies.len(), failed), (2_000, 200));
        let mut made = made.lock().expect("not poisoned").clone();
        made.sort_unstable();
        assert_eq!(made, (0..2_000).collect::<Vec<_>>());
    }
}
