//! Keeps the served snapshot in step with the store, handing each one
//! straight to the [`Rollout`].
//!
//! A commit made through this process carries the snapshot its admission
//! check translated inside the write transaction (see `admission.rs`), so
//! it is served as is: one load and one translation per change. A commit
//! by another replica (Postgres `NOTIFY`) or one found by the periodic
//! version check (missed notifications, SQLite shared between processes)
//! is loaded and translated here. A change after a quiet spell is served
//! at once; builds are at least the debounce apart, so the changes of a
//! burst coalesce into one more build. Until the store has been read once nothing
//! is served, and a failed read or an inconsistent translation keeps the
//! last good snapshot.
//!
//! The loop only ends on shutdown: if it, or the notification listener it
//! watches, stops otherwise, it returns an error and the process stops
//! rather than leave Envoy on a frozen configuration.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_core::future::BoxFuture;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    clock::now_ms,
    model::ConfigState,
    store::{Backend, Committed, DatabaseUrl, NOTIFY_CHANNEL, RejectedResource, Store, StoreError},
    telemetry::{Metrics, ResultLabel},
    translate::{self, ProxySettings},
    xds::{Rollout, Snapshot, rollout::RefusalLog},
};

/// How far back a restarted control plane looks for a version without
/// resources nodes refused.
const FALLBACK_DEPTH: u64 = 16;

/// How often repeated store failures are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub poll_interval: Duration,
    /// Least time between two builds: a change after a quiet spell is
    /// built at once, the changes of a burst coalesce.
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

/// Why the sync loop stopped before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the store stopped announcing commits")]
    CommitsClosed,
    #[error("the Postgres notification listener stopped: {0}")]
    Listener(String),
}

/// What the sync loop reads: the [`Store`], or in tests a stand-in.
pub trait ConfigSource: Send + Sync + 'static {
    /// For logs; never carries credentials.
    fn describe(&self) -> String;
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    fn load(&self) -> BoxFuture<'_, Result<ConfigState, StoreError>>;
    fn version(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// The state at `version`, and the current version.
    fn state_at(&self, version: u64) -> BoxFuture<'_, Result<(u64, ConfigState), StoreError>>;
    fn rejections(&self) -> BoxFuture<'_, Result<Vec<RejectedResource>, StoreError>>;
    fn rejection_count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Commits made through this process, with what their admission prepared.
    fn subscribe(&self) -> watch::Receiver<Committed>;
    /// Where to `LISTEN` for other replicas' commits (Postgres only).
    fn notifications(&self) -> Option<DatabaseUrl>;
}

impl ConfigSource for Store {
    fn describe(&self) -> String {
        self.url().to_string()
    }
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::migrate(self))
    }
    fn load(&self) -> BoxFuture<'_, Result<ConfigState, StoreError>> {
        Box::pin(Store::load(self))
    }
    fn version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::checked_version(self))
    }
    fn state_at(&self, version: u64) -> BoxFuture<'_, Result<(u64, ConfigState), StoreError>> {
        Box::pin(Store::state_at(self, version))
    }
    fn rejections(&self) -> BoxFuture<'_, Result<Vec<RejectedResource>, StoreError>> {
        Box::pin(Store::rejections(self))
    }
    fn rejection_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::rejection_count(self))
    }
    fn subscribe(&self) -> watch::Receiver<Committed> {
        Store::subscribe(self)
    }
    fn notifications(&self) -> Option<DatabaseUrl> {
        (self.backend() == Backend::Postgres).then(|| self.url().clone())
    }
}

/// The rollout records what nodes refused in the store, so a restarted
/// control plane and the other replicas keep the fleet off it too.
impl RefusalLog for Store {
    fn record(&self, refused: Vec<RejectedResource>) {
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.record_rejections(&refused).await {
                warn!(error = %e, "cannot record a rejection; a restart would retry it");
            }
        });
    }
}

/// Runs until `shutdown`, handing every consistent snapshot to `rollout`.
pub async fn run(
    source: Arc<dyn ConfigSource>,
    proxy: ProxySettings,
    settings: SyncSettings,
    rollout: Rollout,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), SyncError> {
    let source = source.as_ref();
    let remote = Arc::new(Notify::new());
    let mut failures = FailureLog::default();
    while let Err(e) = source.migrate().await {
        failures.report("store not ready (migrations)", &e, &metrics);
        if sleep_or_shutdown(settings.poll_interval, &shutdown).await {
            return Ok(());
        }
    }
    info!(store = %source.describe(), "store ready");
    // How many refusals the store held when last read.
    let mut known_rejections = None;
    learn_rejections(source, &proxy, &rollout, &mut known_rejections).await;
    let mut listener = source
        .notifications()
        .map(|url| tokio::spawn(listen_postgres(url, remote.clone(), shutdown.clone())));
    let mut local = source.subscribe();
    let mut poll = tokio::time::interval(settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut served: Option<u64> = None;
    // The newest version a build was attempted for, successful or not.
    let mut attempted: Option<u64> = None;
    let mut pending = true;
    // Whether the next build must read the store (a change made elsewhere)
    // rather than take what a local commit's admission prepared.
    let mut needs_load = true;
    // When the last build started: builds are at least `debounce` apart, so
    // a change after a quiet spell is served at once and a burst coalesces.
    let mut last_build: Option<Instant> = None;
    loop {
        if pending {
            last_build = Some(Instant::now());
            let prepared = if needs_load {
                None
            } else {
                prepared_snapshot(&mut local, attempted)
            };
            let built = match prepared {
                Some(built) => {
                    metrics
                        .snapshot_builds
                        .get_or_create(&ResultLabel { result: "admitted" })
                        .inc();
                    Ok(built)
                }
                None if needs_load || local_is_newer(&local, attempted) => {
                    build(source, &proxy, &metrics).await
                }
                // Nothing newer than what was built.
                None => Ok(Built {
                    version: attempted.unwrap_or_default(),
                    ready: None,
                }),
            };
            match built {
                Ok(snapshot) => {
                    failures.recovered();
                    pending = false;
                    needs_load = false;
                    attempted = Some(snapshot.version);
                    if let Some(snapshot) = snapshot.ready {
                        if rollout.serving_suspect() && rollout.is_suspect(&snapshot) {
                            let start = last_good(source, &proxy, &rollout, snapshot.version)
                                .await
                                .unwrap_or_else(|| snapshot.clone());
                            rollout.fall_back_to(start);
                        }
                        serve(&rollout, snapshot, &metrics, &mut served);
                    }
                }
                Err(e) => {
                    failures.report(
                        "cannot load configuration; keeping the last snapshot",
                        &e,
                        &metrics,
                    );
                    if sleep_or_shutdown(settings.poll_interval, &shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = local.changed() => {
                if changed.is_err() {
                    return Err(SyncError::CommitsClosed);
                }
                pending = true;
            }
            _ = remote.notified() => {
                // A commit or a refusal recorded by another replica.
                pending = true;
                needs_load = true;
                learn_rejections(source, &proxy, &rollout, &mut known_rejections).await;
            }
            _ = poll.tick() => match (source.version().await, source.rejection_count().await) {
                (Ok(version), Ok(rejections)) => {
                    if attempted != Some(version) {
                        pending = true;
                        needs_load = true;
                    }
                    if known_rejections != Some(rejections) {
                        learn_rejections(source, &proxy, &rollout, &mut known_rejections).await;
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    failures.report("store unreachable; keeping the last snapshot", &e, &metrics);
                }
            },
            stopped = async {
                match listener.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let why = match stopped {
                    Ok(()) => "returned".to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(SyncError::Listener(why));
            }
        }
        let wait = last_build.map_or(Duration::ZERO, |at| {
            settings.debounce.saturating_sub(at.elapsed())
        });
        if pending && !wait.is_zero() && sleep_or_shutdown(wait, &shutdown).await {
            return Ok(());
        }
    }
}

/// The snapshot a local commit newer than `attempted` carries, if its
/// admission prepared one.
fn prepared_snapshot(
    local: &mut watch::Receiver<Committed>,
    attempted: Option<u64>,
) -> Option<Built> {
    let committed = local.borrow_and_update().clone();
    if attempted.is_some_and(|a| committed.version <= a) {
        return None;
    }
    let snapshot = committed.prepared?.downcast::<Snapshot>().ok()?;
    Some(Built {
        version: committed.version,
        ready: Some(snapshot),
    })
}

/// Whether a local commit is newer than what was built.
fn local_is_newer(local: &watch::Receiver<Committed>, attempted: Option<u64>) -> bool {
    attempted.is_none_or(|a| local.borrow().version > a)
}

struct Built {
    version: u64,
    /// `None` when the configuration did not translate consistently.
    ready: Option<Arc<Snapshot>>,
}

async fn build(
    source: &dyn ConfigSource,
    proxy: &ProxySettings,
    metrics: &Metrics,
) -> Result<Built, StoreError> {
    let started = Instant::now();
    let state = source.load().await?;
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
    store: &dyn ConfigSource,
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
    // Fewer than before: an operator released them (here or on another
    // replica); forget them all and take in what remains.
    if known.is_some_and(|known| (rejected.len() as u64) < known) {
        rollout.release();
    }
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
    store: &dyn ConfigSource,
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

/// Hands `snapshot` to the rollout once per version.
fn serve(rollout: &Rollout, snapshot: Arc<Snapshot>, metrics: &Metrics, served: &mut Option<u64>) {
    let version = snapshot.version;
    if *served == Some(version) {
        return;
    }
    *served = Some(version);
    rollout.offer(snapshot.clone());
    metrics.snapshot_version.set(version as i64);
    metrics.certificate_not_after_seconds.clear();
    for c in &snapshot.certificates {
        if let Some(not_after) = c.not_after_s {
            let label = crate::telemetry::CertificateLabel {
                certificate: c.name.clone(),
            };
            metrics
                .certificate_not_after_seconds
                .get_or_create(&label)
                .set(not_after);
        }
    }
    metrics
        .snapshot_served_at_seconds
        .set(crate::clock::now_ms() / 1000);
    info!(version, "serving snapshot");
}

/// Wakes the sync loop on every `NOTIFY` from another replica; reconnects forever.
async fn listen_postgres(url: DatabaseUrl, notify: Arc<Notify>, shutdown: CancellationToken) {
    let mut failures = FailureLog::default();
    loop {
        let listener = async {
            let mut listener = PgListener::connect(url.expose()).await?;
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
