//! Keeps the served snapshot in step with the store.
//!
//! Rebuilds on a local commit, on a Postgres `NOTIFY` from another replica,
//! and when a periodic version check finds the store ahead (the safety net
//! for missed notifications and for SQLite shared between processes).
//! Triggers that arrive while a build runs coalesce into one more build.
//! Until the store has been read once nothing is published, and a failed
//! read or an inconsistent translation keeps the last good snapshot.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    clock::now_ms,
    store::{Backend, NOTIFY_CHANNEL, Store, StoreError},
    telemetry::{Metrics, ResultLabel},
    translate::{self, ProxySettings},
    xds::{Rollout, Snapshot},
};

/// How far back a restarted control plane looks for a version without
/// resources nodes refused.
const FALLBACK_DEPTH: u64 = 16;

/// How often repeated store failures are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub poll_interval: Duration,
    /// Quiet period after a change before building, so bursts coalesce.
    pub debounce: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            debounce: Duration::from_millis(5),
        }
    }
}

/// Runs until `shutdown`, publishing every consistent snapshot on `publish`.
pub async fn run(
    store: Store,
    proxy: ProxySettings,
    settings: SyncSettings,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    rollout: Rollout,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let remote = Arc::new(Notify::new());
    let mut failures = FailureLog::default();
    while let Err(e) = store.migrate().await {
        failures.report("store not ready (migrations)", &e, &metrics);
        if sleep_or_shutdown(settings.poll_interval, &shutdown).await {
            return;
        }
    }
    info!(store = %store.url(), "store ready");
    // How many refusals the store held when last read.
    let mut known_rejections = None;
    learn_rejections(&store, &proxy, &rollout, &mut known_rejections).await;
    if store.backend() == Backend::Postgres {
        tokio::spawn(listen_postgres(
            store.clone(),
            remote.clone(),
            shutdown.clone(),
        ));
    }
    let mut local = store.subscribe();
    let mut poll = tokio::time::interval(settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The newest version a build was attempted for, successful or not.
    let mut attempted: Option<u64> = None;
    let mut pending = true;
    loop {
        if pending {
            match build(&store, &proxy, &metrics).await {
                Ok(snapshot) => {
                    failures.recovered();
                    pending = false;
                    attempted = Some(snapshot.version);
                    if let Some(snapshot) = snapshot.ready {
                        if rollout.serving_suspect() && rollout.is_suspect(&snapshot) {
                            let start = last_good(&store, &proxy, &rollout, snapshot.version)
                                .await
                                .unwrap_or_else(|| snapshot.clone());
                            rollout.fall_back_to(start);
                        }
                        publish_snapshot(&publish, snapshot, &metrics);
                    }
                }
                Err(e) => {
                    failures.report(
                        "cannot load configuration; keeping the last snapshot",
                        &e,
                        &metrics,
                    );
                    if sleep_or_shutdown(settings.poll_interval, &shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = local.changed() => {
                if changed.is_err() { return; }
                pending = true;
            }
            _ = remote.notified() => {
                // A commit or a refusal recorded by another replica.
                pending = true;
                learn_rejections(&store, &proxy, &rollout, &mut known_rejections).await;
            }
            _ = poll.tick() => match (store.version().await, store.rejection_count().await) {
                (Ok(version), Ok(rejections)) => {
                    pending = attempted != Some(version);
                    if known_rejections != Some(rejections) {
                        learn_rejections(&store, &proxy, &rollout, &mut known_rejections).await;
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    failures.report("store unreachable; keeping the last snapshot", &e, &metrics);
                }
            },
        }
        if pending && sleep_or_shutdown(settings.debounce, &shutdown).await {
            return;
        }
    }
}

struct Built {
    version: u64,
    /// `None` when the configuration did not translate consistently.
    ready: Option<Arc<Snapshot>>,
}

async fn build(
    store: &Store,
    proxy: &ProxySettings,
    metrics: &Metrics,
) -> Result<Built, StoreError> {
    let started = Instant::now();
    let state = store.load().await?;
    let version = state.version;
    let translated = translate::snapshot(&state, proxy, now_ms());
    metrics
        .snapshot_build_seconds
        .observe(started.elapsed().as_secs_f64());
    let ready = match translated {
        Ok(snapshot) => {
            metrics
                .snapshot_builds
                .get_or_create(&ResultLabel { result: "ok" })
                .inc();
            Some(Arc::new(snapshot))
        }
        Err(e) => {
            metrics
                .snapshot_builds
                .get_or_create(&ResultLabel {
                    result: "inconsistent",
                })
                .inc();
            error!(version, error = %e, "inconsistent configuration not served; keeping the last snapshot");
            None
        }
    };
    Ok(Built { version, ready })
}

/// Takes in the refusals recorded in the store (at start, those from before
/// a restart; later, those of other replicas' nodes). When what is served
/// then carries one and no earlier served snapshot is clean, the newest
/// earlier version without any is rebuilt from history and served.
async fn learn_rejections(
    store: &Store,
    proxy: &ProxySettings,
    rollout: &Rollout,
    known: &mut Option<u64>,
) {
    let rejected = match store.rejections().await {
        Ok(rejected) => rejected,
        Err(e) => {
            warn!(error = %e, "cannot read recorded rejections");
            return;
        }
    };
    *known = Some(rejected.len() as u64);
    if !rollout.learn(rejected) || !rollout.serving_suspect() {
        return;
    }
    if let Some(served) = rollout.status().served_version
        && let Some(good) = last_good(store, proxy, rollout, served).await
    {
        rollout.fall_back_to(good);
    }
}

/// The newest version before `newest` without any refused resource, rebuilt
/// from history: at start, when the newest version carries a resource a
/// node refused before the restart, or when another replica's node refused
/// what is served.
async fn last_good(
    store: &Store,
    proxy: &ProxySettings,
    rollout: &Rollout,
    newest: u64,
) -> Option<Arc<Snapshot>> {
    for version in (newest.saturating_sub(FALLBACK_DEPTH)..newest).rev() {
        let earlier = match store.state_at(version).await {
            Ok((_, state)) => translate::snapshot(&state, proxy, now_ms()),
            Err(e) => {
                warn!(version, error = %e, "cannot rebuild an earlier version");
                return None;
            }
        };
        if let Ok(snapshot) = earlier
            && !rollout.is_suspect(&snapshot)
        {
            return Some(Arc::new(snapshot));
        }
    }
    warn!(
        newest,
        "no recent version is free of refused resources; serving the newest"
    );
    None
}

fn publish_snapshot(
    publish: &watch::Sender<Option<Arc<Snapshot>>>,
    snapshot: Arc<Snapshot>,
    metrics: &Metrics,
) {
    let version = snapshot.version;
    let newer = publish.send_if_modified(|current| {
        let newer = current.as_ref().is_none_or(|c| c.version != version);
        if newer {
            *current = Some(snapshot);
        }
        newer
    });
    if newer {
        metrics.snapshot_version.set(version as i64);
        info!(version, "serving snapshot");
    }
}

/// Wakes the sync loop on every `NOTIFY` from another replica; reconnects forever.
async fn listen_postgres(store: Store, notify: Arc<Notify>, shutdown: CancellationToken) {
    let mut failures = FailureLog::default();
    loop {
        let listener = async {
            let mut listener = PgListener::connect(store.url().expose()).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(mut listener) => {
                failures.recovered();
                // Catch up on anything committed while we were not listening.
                notify.notify_one();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        received = listener.recv() => match received {
                            Ok(_) => notify.notify_one(),
                            Err(e) => {
                                warn!(error = %e, "config notifications interrupted; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) => {
                if failures.due() {
                    warn!(error = %e, "cannot listen for config notifications; relying on polling");
                }
            }
        }
        if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
            return;
        }
    }
}

/// Returns true if shutdown was requested.
async fn sleep_or_shutdown(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

/// Logs a recurring failure once per [`LOG_EVERY`], not once per attempt.
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
}

impl FailureLog {
    fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }

    fn report(&mut self, what: &str, e: &StoreError, metrics: &Metrics) {
        metrics
            .store_errors
            .get_or_create(&ResultLabel { result: e.kind() })
            .inc();
        if self.due() {
            warn!(error = %e, "{what}");
        }
    }

    fn recovered(&mut self) {
        if self.last.take().is_some() {
            info!("store reachable again");
        }
    }
}
