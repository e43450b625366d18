//! What can go wrong in the store, and what the admission check answers.

use crate::model::{FieldError, Kind, state::CorruptSpec};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The change would produce a configuration nodes cannot take.
    #[error("configuration refused: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Refused(Vec<FieldError>),
    /// The check itself could not run; nothing is committed unchecked.
    #[error("{0}")]
    Unavailable(String),
}

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
    /// A caller scoped to one owner reached beyond it.
    #[error("{0}")]
    Forbidden(String),
    /// A scoped apply lists a resource another owner holds.
    #[error("{} {name:?} belongs to {}; change it through its owner or the operators", kind.as_str(), crate::model::ownership::describe(owner.as_deref()))]
    OwnedByOther {
        kind: Kind,
        name: String,
        owner: Option<String>,
    },
    /// Admin tokens are scoped to the owner being deleted.
    #[error("owner {owner:?} still has admin tokens scoped to it: {}; revoke them first", tokens.join(", "))]
    OwnerHasTokens { owner: String, tokens: Vec<String> },
    /// An owner named by a scoped token or apply does not exist.
    #[error("owner {0:?} does not exist (see /v1/owners)")]
    UnknownOwner(String),
    /// An uploaded private key cannot be stored, or is missing.
    #[error("{field}: {message}")]
    PrivateKey { field: String, message: String },
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
    /// A release with no refusal recorded: nothing is held back.
    #[error("no refused version is held back: nothing to release")]
    NothingHeld,
    /// Too many writes wait for their turn (see `store/queue.rs`).
    #[error("the control plane is busy: too many writes are waiting")]
    Busy,
    /// The store is known to be unreachable (see `store/health.rs`).
    #[error("the configuration store is unreachable")]
    Down,
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
            StoreError::PrivateKey { .. } => "private_key",
            StoreError::Forbidden(_) => "forbidden",
            StoreError::OwnedByOther { .. } => "owned_by_other",
            StoreError::UnknownOwner(_) => "unknown_owner",
            StoreError::OwnerHasTokens { .. } => "owner_has_tokens",
            StoreError::ResourceChanged { .. } => "resource_changed",
            StoreError::HistoryUnavailable(_) => "history_unavailable",
            StoreError::UnsupportedUrl => "unsupported_url",
            StoreError::Database(_) => "database",
            StoreError::Down => "down",
            StoreError::Busy => "busy",
            StoreError::NothingHeld => "nothing_held",
            StoreError::Migrate(_) => "migrate",
            StoreError::Admission(AdmissionError::Refused(_)) => "refused",
            StoreError::Admission(AdmissionError::Unavailable(_)) => "admission_unavailable",
        }
    }
}

impl From<CorruptSpec> for StoreError {
    fn from(e: CorruptSpec) -> Self {
        StoreError::Corrupt {
            kind: e.kind,
            name: e.name,
            source: e.source,
        }
    }
}
