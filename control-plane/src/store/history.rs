//! The version history: who changed what, when and how, with the specs
//! before and after; the configuration as it was at a version; rollback.

use serde::Serialize;
use sqlx::Row;

use super::{Applied, ApplyOptions, Origin, Source, Store, StoreError};
use crate::model::{ConfigDocument, ConfigState, Kind};

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
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One version in the history.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VersionRecord {
    pub version: u64,
    pub at_ms: i64,
    pub actor: String,
    pub source: String,
    /// Why a version that changed no resource was made (a release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The owners whose resources it changed (none: only the operators').
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    pub changes: Vec<Change>,
}

impl Store {
    /// The newest versions first: who, when, how, and what changed; with
    /// `owner`, only the versions that changed that owner's resources.
    pub async fn history(
        &self,
        limit: u32,
        before: Option<u64>,
        owner: Option<&str>,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let before = before.map_or(i64::MAX, |b| b as i64);
        // Owner names are DNS labels: no `%` or `_` to escape; anything else matches nothing.
        let pattern = match owner {
            Some(o) if crate::model::is_dns_label(o) => format!("%,{o},%"),
            Some(_) => return Ok(Vec::new()),
            None => "%".into(),
        };
        let versions = sqlx::query(
            "SELECT version, at_ms, actor, source, note, owners FROM config_versions \
             WHERE version < $1 AND COALESCE(owners, '') LIKE $3 \
             ORDER BY version DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .bind(pattern)
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
                note: row.try_get(4)?,
                owners: super::ownership::split(row.try_get(5)?),
                changes: self.changes(version as u64, false).await?,
            });
        }
        Ok(records)
    }

    /// One version with its changes' specs before and after.
    pub async fn version_record(&self, version: u64) -> Result<VersionRecord, StoreError> {
        let row = sqlx::query(
            "SELECT version, at_ms, actor, source, note, owners FROM config_versions WHERE version = $1",
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
            note: row.try_get(4)?,
            owners: super::ownership::split(row.try_get(5)?),
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
                whole: true,
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
}
