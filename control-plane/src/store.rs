//! The configuration store: resources kept as validated JSON documents, with
//! one global config version that every change bumps in its own transaction.
//!
//! One implementation serves both backends through sqlx's `Any` driver:
//! Postgres in production and SQLite as the embedded default. Writers are
//! serialised by taking the `config_version` row first, so reference checks
//! (a route's services exist; a service in use cannot go) can't race.
//! Commits are announced locally through a watch channel and, on Postgres, to
//! every other replica through `NOTIFY` sent in the same transaction.
//!
//! Rooms: single-resource writes here; [`apply`] (declarative documents),
//! [`history`] (versions, rollback), [`admin_tokens`], API keys, refusals,
//! [`migrations`], and the SQL underneath in `rows`.

use std::{any::Any, fmt, sync::Arc, time::Duration};

use futures_core::future::BoxFuture;
use serde::Serialize;
use sqlx::{AnyPool, Row, any::AnyPoolOptions};
use tokio::sync::watch;

use crate::model::{ConfigDocument, ConfigState, Kind, Resource};

mod admin_tokens;
mod api_keys;
mod apply;
mod edits;
mod error;
mod health;
mod history;
mod keys;
mod migrations;
mod node_tokens;
mod ownership;
mod queue;
mod rejections;
mod rows;
mod traffic;
mod url;

pub use admin_tokens::{AdminTokenRecord, NewAdminToken, TokenIdentity};
pub use apply::{Applied, ApplyOptions};
pub use error::{AdmissionError, StoreError};
pub use history::{Change, ChangeOp, VersionRecord};
pub use keys::KeyPolicy;
pub use queue::{MAX_BATCH, MAX_QUEUED};

use edits::Edit;
pub use rejections::{RejectedResource, Released};
pub use traffic::{TrafficCounts, TrafficQuery, TrafficRow};
pub use url::{Backend, DatabaseUrl};

use rows::{bump_version, current, decode, encode, load_from, now_ms, record_change};

/// What every change must pass before it commits: it sees the whole
/// configuration as it would be (see `admission.rs`).
pub trait Admission: Send + Sync + 'static {
    /// Checks `state`; on success may hand back what it prepared from it
    /// (the translated snapshot), which travels with the commit notice.
    fn admit<'a>(
        &'a self,
        state: &'a ConfigState,
    ) -> BoxFuture<'a, Result<Option<Prepared>, AdmissionError>>;
}

/// What an [`Admission`] prepared from the exact state it admitted. The
/// store does not look inside; the sync loop takes the snapshot out, so a
/// local commit is loaded and translated once, inside its transaction.
pub type Prepared = Arc<dyn Any + Send + Sync>;

/// A version committed through this process, with what its admission
/// prepared. Only sent once the commit succeeded: a dry run or a failed
/// commit never reaches the sync loop.
#[derive(Clone, Default)]
pub struct Committed {
    pub version: u64,
    pub prepared: Option<Prepared>,
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("version", &self.version)
            .field("prepared", &self.prepared.is_some())
            .finish()
    }
}

/// The Postgres channel that carries committed config versions between replicas.
pub const NOTIFY_CHANNEL: &str = "gatehouse_config";

/// The outcome of a successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The config version after the write.
    pub version: u64,
    pub created: bool,
    /// False when the submitted spec equals the stored one (no new version).
    pub changed: bool,
    /// The config version that last changed this resource (its ETag).
    pub resource_version: u64,
}

/// Who made a change and through what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: String,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A single-resource admin API call.
    Api,
    /// A declarative document (`PUT /v1/config`).
    Apply,
    Rollback,
    /// Refusals released by an operator (no resource changed).
    Release,
}

impl Source {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Apply => "apply",
            Source::Rollback => "rollback",
            Source::Release => "release",
        }
    }
}

impl Default for Origin {
    fn default() -> Self {
        Self {
            actor: "anonymous".into(),
            source: Source::Api,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    Create,
    Upsert,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: DatabaseUrl,
    committed: watch::Sender<Committed>,
    /// Whether migrations have run: nothing else may touch the schema before.
    migrated: Arc<watch::Sender<bool>>,
    health: Arc<health::Health>,
    writes: Arc<queue::WriteQueue>,
    origin: Origin,
    /// The owner a scoped caller may change (`store/ownership.rs`).
    scope: Option<String>,
    admission: Option<Arc<dyn Admission>>,
    /// How uploaded private keys are sealed (`store/keys.rs`).
    keys: KeyPolicy,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish()
    }
}

impl Store {
    /// Connects lazily: no connection is made until the first query, so a
    /// control plane can start (and serve nothing) while its database is down.
    pub fn connect_lazy(url: &DatabaseUrl) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = url.backend().ok_or(StoreError::UnsupportedUrl)?;
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(3))
            .max_connections(match backend {
                Backend::Postgres => 8,
                Backend::Sqlite => 4,
            });
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect_lazy(url.expose())?;
        Ok(Self {
            pool,
            backend,
            url: url.clone(),
            committed: watch::channel(Committed::default()).0,
            migrated: Arc::new(watch::channel(false).0),
            health: Arc::default(),
            writes: Arc::default(),
            origin: Origin::default(),
            scope: None,
            admission: None,
            keys: KeyPolicy::default(),
        })
    }

    /// The same store, checking every change with `admission` before commit.
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Store {
        self.admission = Some(admission);
        self
    }

    /// The same store, recording writes as made by `origin`.
    pub fn with_origin(&self, origin: Origin) -> Store {
        Store {
            origin,
            ..self.clone()
        }
    }

    /// The same store, letting writes change only `owner`'s resources
    /// (a scoped admin token); `None`: anything.
    pub fn with_scope(self, owner: Option<String>) -> Store {
        Store {
            scope: owner,
            ..self
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Versions committed through this process, as they commit.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn version(&self) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(version as u64)
    }

    /// Reads every resource and the version they belong to in one statement,
    /// so the state is consistent without relying on isolation levels.
    pub async fn load(&self) -> Result<ConfigState, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut state = load_from(&mut conn).await?;
        keys::load(&mut conn, self.keys.keyring.as_deref(), &mut state).await?;
        Ok(state)
    }

    pub async fn get<R: Resource>(&self, name: &str) -> Result<Option<R>, StoreError> {
        Ok(self
            .get_versioned(name)
            .await?
            .map(|(resource, _)| resource))
    }

    /// A resource with the config version that last changed it (its ETag).
    pub async fn get_versioned<R: Resource>(
        &self,
        name: &str,
    ) -> Result<Option<(R, u64)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        match current(&mut conn, R::KIND, name).await? {
            Some((spec, version)) => Ok(Some((decode(R::KIND, name, &spec)?, version))),
            None => Ok(None),
        }
    }

    pub async fn list<R: Resource>(&self) -> Result<Vec<R>, StoreError> {
        let rows = sqlx::query("SELECT name, spec FROM resources WHERE kind = $1 ORDER BY name")
            .bind(R::KIND.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let spec: String = row.try_get(1)?;
                decode(R::KIND, &name, &spec)
            })
            .collect()
    }

    /// Stores a new resource; fails if one of that name exists.
    pub async fn create<R: Resource>(&self, resource: &R) -> Result<Written, StoreError> {
        self.write(resource, WriteMode::Create, None).await
    }

    /// Creates or replaces; an identical spec is a no-op that keeps the version.
    pub async fn upsert<R: Resource>(&self, resource: &R) -> Result<Written, StoreError> {
        self.write(resource, WriteMode::Upsert, None).await
    }

    /// Replaces a resource only if it is still at `expected` (its ETag).
    pub async fn upsert_if<R: Resource>(
        &self,
        resource: &R,
        expected: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.write(resource, WriteMode::Upsert, expected).await
    }

    async fn write<R: Resource>(
        &self,
        resource: &R,
        mode: WriteMode,
        expected: Option<u64>,
    ) -> Result<Written, StoreError> {
        let edit = Edit::Put {
            kind: R::KIND,
            name: resource.name().to_owned(),
            spec: encode(resource),
            references: resource.all_references(),
            keys: self.key_writes(resource, "")?,
            create_only: mode == WriteMode::Create,
            expected,
            scope: self.scope.clone(),
        };
        let (effect, version) = self.submit(edit).await?;
        Ok(Written {
            version,
            created: effect.created,
            changed: effect.changed,
            resource_version: effect.resource_version,
        })
    }

    /// Deletes a resource nothing else refers to; returns the new version.
    pub async fn delete(&self, kind: Kind, name: &str) -> Result<u64, StoreError> {
        self.delete_if(kind, name, None).await
    }

    /// Deletes a resource only if it is still at `expected` (its ETag).
    pub async fn delete_if(
        &self,
        kind: Kind,
        name: &str,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        let edit = Edit::Delete {
            kind,
            name: name.to_owned(),
            expected,
            scope: self.scope.clone(),
        };
        Ok(self.submit(edit).await?.1)
    }

    /// The whole configuration as a document (the format `apply` takes).
    pub async fn export(&self) -> Result<(u64, ConfigDocument), StoreError> {
        let state = self.load().await?;
        Ok((state.version, state.into_document()))
    }

    /// Checks the configuration as the transaction leaves it (its version is
    /// the one being written): ownership rules always, then the admission
    /// check; returns what the admission prepared from it.
    async fn admit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        version: u64,
    ) -> Result<Option<Prepared>, StoreError> {
        let mut state = load_from(tx).await?;
        keys::load(tx, self.keys.keyring.as_deref(), &mut state).await?;
        state.version = version;
        let errors = crate::model::ownership::check_state(&state);
        if !errors.is_empty() {
            return Err(AdmissionError::Refused(errors).into());
        }
        let Some(admission) = &self.admission else {
            return Ok(None);
        };
        Ok(admission.admit(&state).await?)
    }

    /// Admits the change, records the version (who, how), announces it to
    /// other replicas (`NOTIFY`, sent on commit) and commits; then tells
    /// this process's sync loop, with what the admission prepared.
    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        version: u64,
    ) -> Result<(), StoreError> {
        let prepared = self.admit(&mut tx, version).await?;
        let origin = self.origin.clone();
        self.finish(tx, &[(version, &origin)], version, prepared)
            .await
    }

    /// Records each version made (who, how), announces the newest to other
    /// replicas (`NOTIFY`, sent on commit), commits, and tells this
    /// process's sync loop with what the admission prepared.
    pub(super) async fn finish(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        made: &[(u64, &Origin)],
        newest: u64,
        prepared: Option<Prepared>,
    ) -> Result<(), StoreError> {
        for (version, origin) in made {
            sqlx::query(
                "INSERT INTO config_versions (version, at_ms, actor, source) VALUES ($1, $2, $3, $4)",
            )
            .bind(*version as i64)
            .bind(now_ms())
            .bind(&origin.actor)
            .bind(origin.source.as_str())
            .execute(&mut *tx)
            .await?;
            ownership::record_owners(&mut tx, *version).await?;
        }
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(newest.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.committed.send_replace(Committed {
            version: newest,
            prepared,
        });
        Ok(())
    }
}
