//! The configuration store: resources kept as validated JSON documents, with
//! one global config version that every change bumps in its own transaction.
//!
//! One implementation serves both backends through sqlx's `Any` driver:
//! Postgres in production and SQLite as the embedded default. Writers are
//! serialised by taking the `config_version` row first, so reference checks
//! (a route's services exist; a service in use cannot go) can't race.
//! Commits are announced locally through a watch channel and, on Postgres, to
//! every other replica through `NOTIFY` sent in the same transaction.

use std::{borrow::Cow, collections::BTreeMap, fmt, str::FromStr, sync::Arc, time::Duration};

use futures_core::future::BoxFuture;
use serde::Serialize;
use sqlx::{
    AnyPool, Row,
    any::AnyPoolOptions,
    error::BoxDynError,
    migrate::{Migration, MigrationSource, MigrationType, Migrator},
};
use tokio::sync::watch;

use crate::model::{
    Certificate, ConfigDocument, Consumer, FieldError, Gateway, IntrospectionProvider, JwtIssuer,
    Kind, Plan, RateLimitPolicy, Reference, Resource, Route, Service, auth::StoredApiKey,
};

/// What every change must pass before it commits: it sees the whole
/// configuration as it would be (see `admission.rs`).
pub trait Admission: Send + Sync + 'static {
    fn admit<'a>(&'a self, state: &'a ConfigState) -> BoxFuture<'a, Result<(), AdmissionError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The change would produce a configuration nodes cannot take.
    #[error("configuration refused: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Refused(Vec<FieldError>),
    /// The check itself could not run; nothing is committed unchecked.
    #[error("{0}")]
    Unavailable(String),
}

mod api_keys;
mod rejections;

pub use rejections::RejectedResource;

/// The Postgres channel that carries committed config versions between replicas.
pub const NOTIFY_CHANNEL: &str = "gatehouse_config";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "change log items",
        include_str!("../../migrations/0002_change_log_items.sql"),
    ),
    (
        3,
        "history",
        include_str!("../../migrations/0003_history.sql"),
    ),
    (
        4,
        "admin tokens",
        include_str!("../../migrations/0004_admin_tokens.sql"),
    ),
    (
        5,
        "api keys",
        include_str!("../../migrations/0005_api_keys.sql"),
    ),
    (
        6,
        "rejected resources",
        include_str!("../../migrations/0006_rejections.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{} {name:?} already exists", kind.as_str())]
    AlreadyExists { kind: Kind, name: String },
    #[error("{} {name:?} not found", kind.as_str())]
    NotFound { kind: Kind, name: String },
    #[error("{field}: {} {name:?} does not exist", kind.as_str())]
    MissingReference {
        field: String,
        kind: Kind,
        name: String,
    },
    #[error("{} {name:?} is still used by {}", kind.as_str(), describe(used_by))]
    InUse {
        kind: Kind,
        name: String,
        used_by: Vec<(Kind, String)>,
    },
    #[error("stored {} {name:?} cannot be read: {source}", kind.as_str())]
    Corrupt {
        kind: Kind,
        name: String,
        source: serde_json::Error,
    },
    #[error("the configuration is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("{} {name:?} is at version {}, not {expected}", kind.as_str(), actual.map_or("(deleted)".to_string(), |v| v.to_string()))]
    ResourceChanged {
        kind: Kind,
        name: String,
        expected: u64,
        actual: Option<u64>,
    },
    #[error("API key {0:?} is revoked or expired")]
    KeyNotActive(String),
    #[error("admin token {0:?} already exists")]
    TokenExists(String),
    #[error("version {0} does not exist")]
    NoSuchVersion(u64),
    #[error("version {0} predates recorded history and cannot be restored")]
    HistoryUnavailable(u64),
    #[error("unsupported database URL scheme (use postgres:// or sqlite://)")]
    UnsupportedUrl,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
}

fn describe(used_by: &[(Kind, String)]) -> String {
    used_by
        .iter()
        .map(|(k, n)| format!("{} {n:?}", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl StoreError {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::AlreadyExists { .. } => "already_exists",
            StoreError::NotFound { .. } => "not_found",
            StoreError::MissingReference { .. } => "missing_reference",
            StoreError::InUse { .. } => "in_use",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::VersionMismatch { .. } => "version_mismatch",
            StoreError::NoSuchVersion(_) => "no_such_version",
            StoreError::TokenExists(_) => "token_exists",
            StoreError::KeyNotActive(_) => "key_not_active",
            StoreError::ResourceChanged { .. } => "resource_changed",
            StoreError::HistoryUnavailable(_) => "history_unavailable",
            StoreError::UnsupportedUrl => "unsupported_url",
            StoreError::Database(_) => "database",
            StoreError::Migrate(_) => "migrate",
            StoreError::Admission(AdmissionError::Refused(_)) => "refused",
            StoreError::Admission(AdmissionError::Unavailable(_)) => "admission_unavailable",
        }
    }
}

/// A database URL whose password never reaches logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn backend(&self) -> Option<Backend> {
        if self.0.starts_with("postgres://") || self.0.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if self.0.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }

    /// A SQLite database in `dir`, created if missing.
    pub fn sqlite_in(dir: &std::path::Path) -> Self {
        Self(format!(
            "sqlite://{}?mode=rwc",
            dir.join("gatehouse.db").display()
        ))
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DatabaseUrl {
    /// Shows scheme, host and path with any credentials replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
                write!(f, "{scheme}://{rest}")
            }
            None => f.write_str("<database url>"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The whole configuration at one version, read in one consistent statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigState {
    pub version: u64,
    pub services: BTreeMap<String, Service>,
    pub routes: BTreeMap<String, Route>,
    pub consumers: BTreeMap<String, Consumer>,
    pub jwt_issuers: BTreeMap<String, JwtIssuer>,
    pub introspection_providers: BTreeMap<String, IntrospectionProvider>,
    pub plans: BTreeMap<String, Plan>,
    pub rate_limit_policies: BTreeMap<String, RateLimitPolicy>,
    pub certificates: BTreeMap<String, Certificate>,
    pub gateways: BTreeMap<String, Gateway>,
    /// Every key, including revoked and expired ones (translation filters).
    pub api_keys: Vec<StoredApiKey>,
}

impl ConfigState {
    /// The state as a document (the format `apply` takes and `export` gives).
    pub fn into_document(self) -> ConfigDocument {
        ConfigDocument {
            services: self.services.into_values().collect(),
            routes: self.routes.into_values().collect(),
            consumers: self.consumers.into_values().collect(),
            jwt_issuers: self.jwt_issuers.into_values().collect(),
            introspection_providers: self.introspection_providers.into_values().collect(),
            plans: self.plans.into_values().collect(),
            rate_limit_policies: self.rate_limit_policies.into_values().collect(),
            certificates: self.certificates.into_values().collect(),
            gateways: self.gateways.into_values().collect(),
        }
    }

    /// Puts back a resource's earlier spec (`None`: it did not exist).
    fn restore(
        &mut self,
        kind: Kind,
        name: String,
        before: Option<String>,
    ) -> Result<(), StoreError> {
        match kind {
            Kind::Service => restore(&mut self.services, kind, name, before),
            Kind::Route => restore(&mut self.routes, kind, name, before),
            Kind::Consumer => restore(&mut self.consumers, kind, name, before),
            Kind::JwtIssuer => restore(&mut self.jwt_issuers, kind, name, before),
            Kind::IntrospectionProvider => {
                restore(&mut self.introspection_providers, kind, name, before)
            }
            Kind::Plan => restore(&mut self.plans, kind, name, before),
            Kind::RateLimitPolicy => restore(&mut self.rate_limit_policies, kind, name, before),
            Kind::Certificate => restore(&mut self.certificates, kind, name, before),
            Kind::Gateway => restore(&mut self.gateways, kind, name, before),
            // Keys are not configuration: a rollback never brings back a
            // revoked key nor removes a newer one.
            Kind::ApiKey => Ok(()),
        }
    }
}

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

/// One resource changed by a write, with its canonical spec before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Change {
    pub op: ChangeOp,
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Create,
    Update,
    Delete,
}

impl ChangeOp {
    fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Delete what the document no longer lists.
    pub prune: bool,
    /// Compute and check the changes, store nothing.
    pub dry_run: bool,
    /// Refuse unless the configuration is still at this version (the one the
    /// caller diffed against).
    pub if_version: Option<u64>,
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
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Apply => "apply",
            Source::Rollback => "rollback",
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

/// An admin token as listed (never the secret or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AdminTokenRecord {
    pub name: String,
    pub role: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

/// One version in the history.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VersionRecord {
    pub version: u64,
    pub at_ms: i64,
    pub actor: String,
    pub source: String,
    pub changes: Vec<Change>,
}

/// The outcome of a declarative apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Applied {
    /// The version after the apply (for a dry run: the version it would create).
    pub version: u64,
    pub changes: Vec<Change>,
    pub dry_run: bool,
}

/// A resource of an applied document, encoded.
struct Desired {
    spec: String,
    references: Vec<Reference>,
}

type Key = (Kind, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    Create,
    Upsert,
}

#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: DatabaseUrl,
    committed: watch::Sender<u64>,
    /// Whether migrations have run: nothing else may touch the schema before.
    migrated: Arc<watch::Sender<bool>>,
    origin: Origin,
    admission: Option<Arc<dyn Admission>>,
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
            committed: watch::channel(0).0,
            migrated: Arc::new(watch::channel(false).0),
            origin: Origin::default(),
            admission: None,
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

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Applies the embedded migrations (idempotent; serialised by sqlx's lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::new(EmbeddedMigrations)
            .await?
            .run(&self.pool)
            .await?;
        self.migrated.send_replace(true);
        Ok(())
    }

    /// True once migrations have run in this process.
    pub fn is_migrated(&self) -> bool {
        *self.migrated.borrow()
    }

    /// Versions committed through this process, as they commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
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
        load_from(&mut conn).await
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
        let kind = R::KIND;
        let name = resource.name();
        let spec = encode(resource);
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        let current = current(&mut tx, kind, name).await?;
        let current_version = current.as_ref().map(|c| c.1);
        check_expected(kind, name, expected, current_version)?;
        let existing = current.map(|(spec, _)| spec);
        if mode == WriteMode::Create && existing.is_some() {
            return Err(StoreError::AlreadyExists {
                kind,
                name: name.to_owned(),
            });
        }
        if existing.as_deref() == Some(spec.as_str()) {
            tx.rollback().await?;
            return Ok(Written {
                version: version - 1,
                created: false,
                changed: false,
                resource_version: current_version.unwrap_or_default(),
            });
        }
        let references = resource.references();
        for reference in &references {
            let found: Option<String> =
                sqlx::query_scalar("SELECT name FROM resources WHERE kind = $1 AND name = $2")
                    .bind(reference.kind.as_str())
                    .bind(&reference.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Err(StoreError::MissingReference {
                    field: reference.field.clone(),
                    kind: reference.kind,
                    name: reference.name.clone(),
                });
            }
        }
        upsert_row(&mut tx, kind, name, &spec, version, existing.is_some()).await?;
        replace_references(&mut tx, kind, name, &references).await?;
        let op = if existing.is_some() {
            ChangeOp::Update
        } else {
            ChangeOp::Create
        };
        let specs = (existing.as_deref(), Some(spec.as_str()));
        record_change(&mut tx, version, 0, op, kind, name, specs).await?;
        self.commit(tx, version).await?;
        Ok(Written {
            version,
            created: existing.is_none(),
            changed: true,
            resource_version: version,
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
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        let current = current(&mut tx, kind, name).await?;
        check_expected(kind, name, expected, current.as_ref().map(|c| c.1))?;
        let used_by = sqlx::query(
            "SELECT from_kind, from_name FROM resource_refs WHERE to_kind = $1 AND to_name = $2 \
             ORDER BY from_kind, from_name LIMIT 10",
        )
        .bind(kind.as_str())
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !used_by.is_empty() {
            let used_by = used_by
                .iter()
                .filter_map(|row| {
                    let kind: String = row.try_get(0).ok()?;
                    let name: String = row.try_get(1).ok()?;
                    Some((Kind::parse(&kind)?, name))
                })
                .collect();
            return Err(StoreError::InUse {
                kind,
                name: name.to_owned(),
                used_by,
            });
        }
        let Some((before, _)) = current else {
            return Err(StoreError::NotFound {
                kind,
                name: name.to_owned(),
            });
        };
        delete_row(&mut tx, kind, name).await?;
        let specs = (Some(before.as_str()), None);
        record_change(&mut tx, version, 0, ChangeOp::Delete, kind, name, specs).await?;
        self.commit(tx, version).await?;
        Ok(version)
    }

    /// Applies a whole document atomically: one transaction, one version,
    /// all or nothing. References are checked against the resulting state
    /// (with `prune`, everything unlisted goes, so nothing kept can dangle).
    pub async fn apply(
        &self,
        document: &ConfigDocument,
        options: ApplyOptions,
    ) -> Result<Applied, StoreError> {
        let mut desired: BTreeMap<Key, Desired> = BTreeMap::new();
        collect(&mut desired, "services", &document.services);
        collect(&mut desired, "routes", &document.routes);
        collect(&mut desired, "consumers", &document.consumers);
        collect(&mut desired, "jwt_issuers", &document.jwt_issuers);
        collect(
            &mut desired,
            "introspection_providers",
            &document.introspection_providers,
        );
        collect(&mut desired, "plans", &document.plans);
        collect(
            &mut desired,
            "rate_limit_policies",
            &document.rate_limit_policies,
        );
        collect(&mut desired, "certificates", &document.certificates);
        collect(&mut desired, "gateways", &document.gateways);

        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        if let Some(expected) = options.if_version
            && expected != version - 1
        {
            return Err(StoreError::VersionMismatch {
                expected,
                actual: version - 1,
            });
        }
        let mut existing: BTreeMap<Key, String> = BTreeMap::new();
        for row in sqlx::query("SELECT kind, name, spec FROM resources")
            .fetch_all(&mut *tx)
            .await?
        {
            let kind: String = row.try_get(0)?;
            if let Some(kind) = Kind::parse(&kind) {
                existing.insert((kind, row.try_get(1)?), row.try_get(2)?);
            }
        }
        let deleted: Vec<Key> = if options.prune {
            existing
                .keys()
                .filter(|k| !desired.contains_key(*k))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let remains = |key: &Key| {
            desired.contains_key(key) || (existing.contains_key(key) && !deleted.contains(key))
        };
        for d in desired.values() {
            if let Some(missing) = d
                .references
                .iter()
                .find(|r| !remains(&(r.kind, r.name.clone())))
            {
                return Err(StoreError::MissingReference {
                    field: missing.field.clone(),
                    kind: missing.kind,
                    name: missing.name.clone(),
                });
            }
        }
        // Creations and updates in dependency order, then deletions in reverse.
        let mut changes: Vec<(ChangeOp, Key)> = desired
            .iter()
            .filter_map(|(key, d)| match existing.get(key) {
                None => Some((ChangeOp::Create, key.clone())),
                Some(spec) if *spec != d.spec => Some((ChangeOp::Update, key.clone())),
                Some(_) => None,
            })
            .collect();
        changes.extend(
            deleted
                .iter()
                .rev()
                .map(|key| (ChangeOp::Delete, key.clone())),
        );
        let spec = |text: Option<&String>| text.and_then(|t| serde_json::from_str(t).ok());
        let listed = |changes: &[(ChangeOp, Key)]| {
            changes
                .iter()
                .map(|(op, key)| Change {
                    op: *op,
                    kind: key.0.as_str(),
                    name: key.1.clone(),
                    before: spec(existing.get(key)),
                    after: spec(desired.get(key).map(|d| &d.spec))
                        .filter(|_| *op != ChangeOp::Delete),
                })
                .collect()
        };
        if changes.is_empty() {
            tx.rollback().await?;
            return Ok(Applied {
                version: version - 1,
                changes: Vec::new(),
                dry_run: options.dry_run,
            });
        }
        for (seq, (op, (kind, name))) in changes.iter().enumerate() {
            match (op, desired.get(&(*kind, name.clone()))) {
                (ChangeOp::Delete, _) | (_, None) => delete_row(&mut tx, *kind, name).await?,
                (op, Some(d)) => {
                    upsert_row(
                        &mut tx,
                        *kind,
                        name,
                        &d.spec,
                        version,
                        *op == ChangeOp::Update,
                    )
                    .await?;
                    replace_references(&mut tx, *kind, name, &d.references).await?;
                }
            }
            let key = (*kind, name.clone());
            let after = desired
                .get(&key)
                .filter(|_| *op != ChangeOp::Delete)
                .map(|d| d.spec.as_str());
            let specs = (existing.get(&key).map(String::as_str), after);
            record_change(&mut tx, version, seq as i64, *op, *kind, name, specs).await?;
        }
        if options.dry_run {
            // Validation is part of a dry run's answer; then nothing stays.
            self.admit(&mut tx, version).await?;
            tx.rollback().await?;
            return Ok(Applied {
                version,
                changes: listed(&changes),
                dry_run: true,
            });
        }
        self.commit(tx, version).await?;
        Ok(Applied {
            version,
            changes: listed(&changes),
            dry_run: false,
        })
    }

    /// The newest versions first: who, when, how, and what changed.
    pub async fn history(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let before = before.map_or(i64::MAX, |b| b as i64);
        let versions = sqlx::query(
            "SELECT version, at_ms, actor, source FROM config_versions WHERE version < $1 \
             ORDER BY version DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(versions.len());
        for row in versions {
            let version: i64 = row.try_get(0)?;
            records.push(VersionRecord {
                version: version as u64,
                at_ms: row.try_get(1)?,
                actor: row.try_get(2)?,
                source: row.try_get(3)?,
                changes: self.changes(version as u64, false).await?,
            });
        }
        Ok(records)
    }

    /// One version with its changes' specs before and after.
    pub async fn version_record(&self, version: u64) -> Result<VersionRecord, StoreError> {
        let row = sqlx::query(
            "SELECT version, at_ms, actor, source FROM config_versions WHERE version = $1",
        )
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NoSuchVersion(version))?;
        Ok(VersionRecord {
            version,
            at_ms: row.try_get(1)?,
            actor: row.try_get(2)?,
            source: row.try_get(3)?,
            changes: self.changes(version, true).await?,
        })
    }

    async fn changes(&self, version: u64, with_specs: bool) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT op, kind, name, before_spec, after_spec FROM config_changes WHERE version = $1 ORDER BY seq",
        )
        .bind(version as i64)
        .fetch_all(&self.pool)
        .await?;
        let spec = |text: Option<String>| {
            text.filter(|_| with_specs)
                .and_then(|t| serde_json::from_str(&t).ok())
        };
        rows.into_iter()
            .map(|row| {
                let op: String = row.try_get(0)?;
                let kind: String = row.try_get(1)?;
                Ok(Change {
                    op: match op.as_str() {
                        "create" => ChangeOp::Create,
                        "delete" => ChangeOp::Delete,
                        _ => ChangeOp::Update,
                    },
                    kind: Kind::parse(&kind).map_or("unknown", Kind::as_str),
                    name: row.try_get(2)?,
                    before: spec(row.try_get(3)?),
                    after: spec(row.try_get(4)?),
                })
            })
            .collect()
    }

    /// Restores the configuration of version `to` as a new version. Retries
    /// if another write lands while the target is computed.
    pub async fn rollback(&self, to: u64) -> Result<Applied, StoreError> {
        let writer = self.with_origin(Origin {
            source: Source::Rollback,
            ..self.origin.clone()
        });
        let mut attempts = 0;
        loop {
            let (current, document) = self.document_at(to).await?;
            let options = ApplyOptions {
                prune: true,
                dry_run: false,
                if_version: Some(current),
            };
            match writer.apply(&document, options).await {
                Err(StoreError::VersionMismatch { .. }) if attempts < 3 => attempts += 1,
                result => return result,
            }
        }
    }

    /// The configuration as it was at `version`: the current state with every
    /// later change undone. Returns the current version too.
    async fn document_at(&self, version: u64) -> Result<(u64, ConfigDocument), StoreError> {
        let (now, state) = self.state_at(version).await?;
        Ok((now, state.into_document()))
    }

    /// The state as it was at `version` (API keys as they are now: keys are
    /// not configuration), and the current version.
    pub async fn state_at(&self, version: u64) -> Result<(u64, ConfigState), StoreError> {
        let state = self.load().await?;
        if version > state.version {
            return Err(StoreError::NoSuchVersion(version));
        }
        let version_now = state.version;
        let mut state = state;
        let rows = sqlx::query(
            "SELECT version, op, kind, name, before_spec FROM config_changes \
             WHERE version > $1 AND version <= $2 ORDER BY version DESC, seq DESC",
        )
        .bind(version as i64)
        .bind(version_now as i64)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let changed: i64 = row.try_get(0)?;
            let op: String = row.try_get(1)?;
            let kind: String = row.try_get(2)?;
            let name: String = row.try_get(3)?;
            let before: Option<String> = row.try_get(4)?;
            if before.is_none() && op != ChangeOp::Create.as_str() {
                return Err(StoreError::HistoryUnavailable(changed as u64));
            }
            if let Some(kind) = Kind::parse(&kind) {
                state.restore(kind, name, before)?;
            }
        }
        state.version = version;
        Ok((version_now, state))
    }

    /// Whether any admin token exists (authentication is then enforced).
    pub async fn has_admin_tokens(&self) -> Result<bool, StoreError> {
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM admin_tokens LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The name and role of the token with this hash, recording its use.
    pub async fn find_admin_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT name, role FROM admin_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let name: String = row.try_get(0)?;
        sqlx::query("UPDATE admin_tokens SET last_used_at_ms = $1 WHERE name = $2")
            .bind(now_ms())
            .bind(&name)
            .execute(&self.pool)
            .await?;
        Ok(Some((name, row.try_get(1)?)))
    }

    pub async fn create_admin_token(
        &self,
        name: &str,
        role: &str,
        token_hash: &str,
        prefix: &str,
    ) -> Result<AdminTokenRecord, StoreError> {
        let created_at_ms = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_hash, prefix, created_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(role)
        .bind(token_hash)
        .bind(prefix)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::TokenExists(name.to_owned()));
        }
        Ok(AdminTokenRecord {
            name: name.to_owned(),
            role: role.to_owned(),
            prefix: prefix.to_owned(),
            created_at_ms,
            last_used_at_ms: None,
        })
    }

    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, prefix, created_at_ms, last_used_at_ms FROM admin_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AdminTokenRecord {
                    name: row.try_get(0)?,
                    role: row.try_get(1)?,
                    prefix: row.try_get(2)?,
                    created_at_ms: row.try_get(3)?,
                    last_used_at_ms: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Revokes a token at once; returns whether it existed.
    pub async fn delete_admin_token(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM admin_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// The whole configuration as a document (the format `apply` takes).
    pub async fn export(&self) -> Result<(u64, ConfigDocument), StoreError> {
        let state = self.load().await?;
        Ok((state.version, state.into_document()))
    }

    /// Announces the version to other replicas and commits.
    /// Runs the admission check on the configuration as the transaction
    /// leaves it (its version is the one being written).
    async fn admit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        version: u64,
    ) -> Result<(), StoreError> {
        let Some(admission) = &self.admission else {
            return Ok(());
        };
        let mut state = load_from(tx).await?;
        state.version = version;
        Ok(admission.admit(&state).await?)
    }

    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        version: u64,
    ) -> Result<(), StoreError> {
        self.admit(&mut tx, version).await?;
        sqlx::query(
            "INSERT INTO config_versions (version, at_ms, actor, source) VALUES ($1, $2, $3, $4)",
        )
        .bind(version as i64)
        .bind(now_ms())
        .bind(&self.origin.actor)
        .bind(self.origin.source.as_str())
        .execute(&mut *tx)
        .await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(version.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.committed.send_replace(version);
        Ok(())
    }
}

/// Every resource and the version they belong to, in one statement, so the
/// state is consistent without relying on isolation levels.
async fn load_from(conn: &mut sqlx::AnyConnection) -> Result<ConfigState, StoreError> {
    let rows = sqlx::query(
        "SELECT '' AS kind, '' AS name, CAST(version AS TEXT) AS spec FROM config_version WHERE id = 1 \
         UNION ALL SELECT kind, name, spec FROM resources \
         UNION ALL SELECT 'api_key', id, spec FROM api_keys",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut state = ConfigState::default();
    for row in rows {
        let kind: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let spec: String = row.try_get(2)?;
        match Kind::parse(&kind) {
            None if kind.is_empty() => {
                state.version = spec.parse().unwrap_or_default();
            }
            None => {}
            Some(Kind::ApiKey) => {
                let key = serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
                    kind: Kind::ApiKey,
                    name: name.clone(),
                    source,
                })?;
                state.api_keys.push(key);
            }
            Some(kind) => state.restore(kind, name, Some(spec))?,
        }
    }
    Ok(state)
}

fn collect<R: Resource>(desired: &mut BTreeMap<Key, Desired>, list: &str, resources: &[R]) {
    for (i, resource) in resources.iter().enumerate() {
        let references = resource
            .references()
            .into_iter()
            .map(|r| Reference {
                field: format!("{list}[{i}].{}", r.field),
                ..r
            })
            .collect();
        desired.insert(
            (R::KIND, resource.name().to_owned()),
            Desired {
                spec: encode(resource),
                references,
            },
        );
    }
}

async fn upsert_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: Kind,
    name: &str,
    spec: &str,
    version: u64,
    exists: bool,
) -> Result<(), StoreError> {
    let query = if exists {
        "UPDATE resources SET spec = $3, updated_version = $4, updated_at_ms = $5 WHERE kind = $1 AND name = $2"
    } else {
        "INSERT INTO resources (kind, name, spec, created_version, updated_version, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $4, $5)"
    };
    sqlx::query(query)
        .bind(kind.as_str())
        .bind(name)
        .bind(spec)
        .bind(version as i64)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Removes a resource row, its references, and what it owns (a consumer's keys).
async fn delete_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: Kind,
    name: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM resources WHERE kind = $1 AND name = $2")
        .bind(kind.as_str())
        .bind(name)
        .execute(&mut **tx)
        .await?;
    replace_references(tx, kind, name, &[]).await?;
    if kind == Kind::Consumer {
        sqlx::query("DELETE FROM api_keys WHERE consumer = $1")
            .bind(name)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    version: u64,
    seq: i64,
    op: ChangeOp,
    kind: Kind,
    name: &str,
    (before, after): (Option<&str>, Option<&str>),
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO config_changes (version, seq, op, kind, name, at_ms, before_spec, after_spec) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(version as i64)
    .bind(seq)
    .bind(op.as_str())
    .bind(kind.as_str())
    .bind(name)
    .bind(now_ms())
    .bind(before)
    .bind(after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the writer lock (the single `config_version` row) and returns the next version.
async fn bump_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(version as u64)
}

async fn replace_references(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: Kind,
    name: &str,
    references: &[Reference],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM resource_refs WHERE from_kind = $1 AND from_name = $2")
        .bind(kind.as_str())
        .bind(name)
        .execute(&mut **tx)
        .await?;
    for reference in references {
        sqlx::query(
            "INSERT INTO resource_refs (from_kind, from_name, to_kind, to_name) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(name)
        .bind(reference.kind.as_str())
        .bind(&reference.name)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A resource's stored spec and the version that last changed it.
async fn current(
    conn: &mut sqlx::AnyConnection,
    kind: Kind,
    name: &str,
) -> Result<Option<(String, u64)>, StoreError> {
    let row =
        sqlx::query("SELECT spec, updated_version FROM resources WHERE kind = $1 AND name = $2")
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|row| {
        let version: i64 = row.try_get(1)?;
        Ok((row.try_get(0)?, version as u64))
    })
    .transpose()
}

/// An `If-Match` precondition: the resource must exist at that version.
fn check_expected(
    kind: Kind,
    name: &str,
    expected: Option<u64>,
    actual: Option<u64>,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if actual != Some(expected) => Err(StoreError::ResourceChanged {
            kind,
            name: name.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Puts back a resource's earlier spec (`None`: it did not exist).
fn restore<R: Resource>(
    map: &mut BTreeMap<String, R>,
    kind: Kind,
    name: String,
    before: Option<String>,
) -> Result<(), StoreError> {
    match before {
        Some(spec) => {
            let resource = decode(kind, &name, &spec)?;
            map.insert(name, resource);
        }
        None => {
            map.remove(&name);
        }
    }
    Ok(())
}

fn encode<R: Serialize>(resource: &R) -> String {
    // Serialising our own plain structs cannot fail.
    serde_json::to_string(resource).unwrap_or_default()
}

fn decode<R: Resource>(kind: Kind, name: &str, spec: &str) -> Result<R, StoreError> {
    serde_json::from_str(spec).map_err(|source| StoreError::Corrupt {
        kind,
        name: name.to_owned(),
        source,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_hides_credentials() {
        let url: DatabaseUrl = "postgres://gate:s3cret@db.internal:5432/gatehouse?sslmode=require"
            .parse()
            .expect("infallible");
        assert_eq!(url.to_string(), "postgres://db.internal:5432/gatehouse");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.backend(), Some(Backend::Postgres));
    }
}
