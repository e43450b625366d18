//! What Envoys report of their own traffic through Envoy's metrics sink
//! (`envoy.service.metrics.v3.MetricsService`, served on the xDS port; the
//! bootstrap's `stats_sinks`): per node, requests, 5xx answers and the
//! request-time histogram of its HTTP connection managers, kept for the
//! last few minutes. While a canary runs, [`analyse`] compares its nodes
//! with the rest and aborts or promotes it (thresholds in
//! `xds/rollout/analysis.rs`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use gatehouse_proto::metrics_service::{
    StreamMetricsMessage, StreamMetricsResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use gatehouse_proto::prometheus::MetricFamily;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    clock::now_ms,
    xds::{
        Rollout,
        rollout::{
            Phase, Placement,
            analysis::{Window, verdict},
        },
    },
};

/// How long a node's samples are kept: the longest window judged is an
/// hour, but memory is bounded by count too.
const SAMPLES_KEPT: usize = 720;
/// Nodes silent this long are forgotten.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// One report of one node: what changed since its previous report.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: i64,
    window: Window,
}

#[derive(Debug, Default)]
struct NodeStats {
    placement: Placement,
    samples: VecDeque<Sample>,
    /// The cumulative histogram last reported, per connection manager.
    last_buckets: HashMap<String, Vec<(f64, u64)>>,
    last_seen_ms: i64,
}

/// Every node's recent traffic, shared by the sink and the analysis.
#[derive(Debug, Clone, Default)]
pub struct FleetStats {
    nodes: Arc<Mutex<HashMap<String, NodeStats>>>,
    /// When silent nodes were last forgotten.
    forgotten_at_ms: Arc<AtomicI64>,
}

impl FleetStats {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, NodeStats>) -> T) -> T {
        f(&mut self.nodes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes in one report of `node`.
    fn record(&self, node: &Placement, families: &[MetricFamily]) {
        let now = now_ms();
        self.with(|nodes| {
            // Forgetting is a pass over every node: once a minute, not per report.
            // (Under the lock: only one report does it.)
            if now - self.forgotten_at_ms.load(Ordering::Relaxed) >= 60_000 {
                self.forgotten_at_ms.store(now, Ordering::Relaxed);
                nodes.retain(|_, n| now - n.last_seen_ms < FORGET_AFTER_MS);
            }
            let stats = nodes.entry(node.id.clone()).or_default();
            stats.placement = node.clone();
            stats.last_seen_ms = now;
            let window = traffic(families, &mut stats.last_buckets);
            stats.samples.push_back(Sample { at_ms: now, window });
            if stats.samples.len() > SAMPLES_KEPT {
                stats.samples.pop_front();
            }
        });
    }

    /// The traffic since `since_ms` of the nodes `in_group` picks, and of
    /// the others.
    pub fn split(&self, since_ms: i64, in_group: impl Fn(&Placement) -> bool) -> (Window, Window) {
        self.with(|nodes| {
            let (mut group, mut rest) = (Window::default(), Window::default());
            for stats in nodes.values() {
                let target = if in_group(&stats.placement) {
                    &mut group
                } else {
                    &mut rest
                };
                for sample in stats.samples.iter().filter(|s| s.at_ms > since_ms) {
                    target.add(&sample.window);
                }
            }
            (group, rest)
        })
    }

    pub fn server(&self) -> MetricsServiceServer<Sink> {
        MetricsServiceServer::new(Sink {
            stats: self.clone(),
        })
    }
}

/// Requests, 5xx answers (counters sent as deltas) and the request-time
/// histogram's growth since the last report, over every HTTP connection
/// manager but the admin interface's.
fn traffic(families: &[MetricFamily], last: &mut HashMap<String, Vec<(f64, u64)>>) -> Window {
    let mut window = Window::default();
    for family in families {
        let Some(name) = family.name.as_deref() else {
            continue;
        };
        let Some((manager, stat)) = name
            .strip_prefix("http.")
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            continue;
        };
        if manager == "admin" {
            continue;
        }
        for metric in &family.metric {
            let counted = metric
                .counter
                .as_ref()
                .and_then(|c| c.value)
                .map_or(0, |v| v.max(0.0) as u64);
            match stat {
                "downstream_rq_completed" => window.requests += counted,
                "downstream_rq_5xx" => window.errors += counted,
                "downstream_rq_time" => {
                    let Some(histogram) = &metric.histogram else {
                        continue;
                    };
                    let now: Vec<(f64, u64)> = histogram
                        .bucket
                        .iter()
                        .filter_map(|b| Some((b.upper_bound?, b.cumulative_count?)))
                        .collect();
                    let before = last.insert(manager.to_owned(), now.clone());
                    window.add(&Window {
                        requests: 0,
                        errors: 0,
                        buckets: growth(&now, before.as_deref()),
                    });
                }
                _ => {}
            }
        }
    }
    window
}

/// Per-bucket counts added since `before` (cumulative histograms in, plain
/// counts out); a restarted node (counts going down) counts from zero.
fn growth(now: &[(f64, u64)], before: Option<&[(f64, u64)]>) -> Vec<(f64, u64)> {
    let mut previous_now = 0;
    let mut previous_before = 0;
    now.iter()
        .map(|(bound, cumulative)| {
            let earlier = before
                .and_then(|b| b.iter().find(|(x, _)| x == bound))
                .map_or(0, |(_, c)| *c);
            let earlier = if earlier > *cumulative { 0 } else { earlier };
            let count =
                (cumulative - previous_now).saturating_sub(earlier.saturating_sub(previous_before));
            previous_now = *cumulative;
            previous_before = earlier;
            (*bound, count)
        })
        .collect()
}

/// The metrics sink Envoys stream their stats to.
pub struct Sink {
    stats: FleetStats,
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut node = Placement::default();
        while let Some(message) = stream.message().await? {
            if let Some(n) = message.identifier.and_then(|i| i.node) {
                node = Placement::of(&n);
            }
            if !node.id.is_empty() {
                self.stats.record(&node, &message.envoy_metrics);
            }
        }
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

/// While a canary runs, judges it every second: aborts it when its nodes do
/// worse than the rest past its thresholds, promotes it when its duration
/// passed. Ends with `shutdown`.
pub async fn analyse(stats: FleetStats, rollout: Rollout, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(canary) = rollout.canary().filter(|c| c.phase == Phase::Running) else {
            continue;
        };
        let now = now_ms();
        let started = i64::try_from(canary.started_at_ms).unwrap_or(i64::MAX);
        let window = i64::try_from(canary.analysis.window_ms).unwrap_or(i64::MAX);
        let since = started.max(now - window);
        let (ours, theirs) = stats.split(since, |node| canary.selector.matches(node));
        if let Some(reason) = verdict(&canary.analysis, &ours, &theirs) {
            if rollout.abort_canary(&reason).is_ok() {
                tracing::warn!(%reason, "canary analysis failed: canary aborted");
            }
            continue;
        }
        let due = canary
            .analysis
            .duration_ms
            .and_then(|d| i64::try_from(d).ok())
            .is_some_and(|d| now - started >= d);
        if due && rollout.promote_canary().is_ok() {
            tracing::info!("canary ran its duration without failing: promoted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_growth_is_per_bucket() {
        let before = [(1.0, 2), (5.0, 5), (10.0, 5)];
        let now = [(1.0, 3), (5.0, 9), (10.0, 10)];
        assert_eq!(
            growth(&now, Some(&before)),
            vec![(1.0, 1), (5.0, 3), (10.0, 1)]
        );
        assert_eq!(growth(&now, None), vec![(1.0, 3), (5.0, 6), (10.0, 1)]);
    }
}
