//! Open-loop load for tests: requests start at a fixed rate whatever the
//! latency, so a stall shows up as failures or delay rather than as fewer
//! requests. Bounded: it stops when told or after `max_duration`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// A request that did not get a 200.
#[derive(Debug, Clone)]
pub struct Failure {
    pub after: Duration,
    pub status: u16,
    /// Which upstream answered, if any did (none: Envoy answered itself).
    pub upstream: Option<String>,
    pub body: String,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub failures: Vec<Failure>,
}

impl LoadReport {
    /// Failures grouped by status and origin, for assertion messages.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self
            .failures
            .iter()
            .take(20)
            .map(|f| {
                format!(
                    "+{:?} status={} upstream={:?} body={:?}",
                    f.after,
                    f.status,
                    f.upstream,
                    f.body.chars().take(120).collect::<String>()
                )
            })
            .collect();
        lines.insert(
            0,
            format!(
                "sent={} ok={} failed={}",
                self.sent,
                self.ok,
                self.failures.len()
            ),
        );
        lines.join("\n")
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    /// Starts GETs to `url` at `rate` per second.
    pub fn start(url: String, rate: u32, max_duration: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = crate::client();
            let started = Instant::now();
            let mut ticker =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut requests = tokio::task::JoinSet::new();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < max_duration {
                ticker.tick().await;
                let (client, url) = (client.clone(), url.clone());
                requests.spawn(async move {
                    let after = started.elapsed();
                    match client.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let upstream = response
                                .headers()
                                .get("x-upstream")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = response.text().await.unwrap_or_default();
                            (status == 200).then_some(()).ok_or(Failure {
                                after,
                                status,
                                upstream,
                                body,
                            })
                        }
                        Err(e) => Err(Failure {
                            after,
                            status: 0,
                            upstream: None,
                            body: e.to_string(),
                        }),
                    }
                });
            }
            let mut report = LoadReport::default();
            while let Some(result) = requests.join_next().await {
                report.sent += 1;
                match result {
                    Ok(Ok(())) => report.ok += 1,
                    Ok(Err(failure)) => report.failures.push(failure),
                    Err(e) => report.failures.push(Failure {
                        after: started.elapsed(),
                        status: 0,
                        upstream: None,
                        body: e.to_string(),
                    }),
                }
            }
            report.failures.sort_by_key(|f| f.after);
            report
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
