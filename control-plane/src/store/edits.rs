//! Single-resource edits (create, replace, delete) as data, so that many of
//! them can share one transaction and one admission check (see `queue.rs`).
//!
//! An edit checks first (precondition, existence, references, use) and
//! writes only once every check passed: an edit refused for its own reasons
//! leaves the transaction exactly as it found it, and the others in its
//! group go on.

use sqlx::Row;

use super::{
    ChangeOp, StoreError,
    ownership::check_scope,
    rows::{current, delete_row, record_change, replace_references, upsert_row},
};
use crate::model::{Kind, Reference};

/// One resource to write or delete.
#[derive(Debug)]
pub(super) enum Edit {
    Put {
        kind: Kind,
        name: String,
        /// The encoded spec.
        spec: String,
        references: Vec<Reference>,
        /// Uploaded private keys to store and keys that must be stored.
        keys: super::keys::KeyWrites,
        /// Refuse when the resource exists already.
        create_only: bool,
        /// `If-Match`: the version the resource must be at.
        expected: Option<u64>,
        /// A caller scoped to this owner changes only its resources.
        scope: Option<String>,
    },
    Delete {
        kind: Kind,
        name: String,
        expected: Option<u64>,
        scope: Option<String>,
    },
}

/// What an edit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Effect {
    /// False when a put's spec equals the stored one: nothing was written.
    pub changed: bool,
    pub created: bool,
    /// The version that last changed the resource after the edit.
    pub resource_version: u64,
}

/// Applies `edit` as `version` (the version it creates if it changes
/// anything). The outer error is the database's and fails the whole group;
/// the inner one is this edit's own refusal, with nothing written.
pub(super) async fn apply_edit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    edit: &Edit,
    version: u64,
) -> Result<Result<Effect, StoreError>, StoreError> {
    match edit {
        Edit::Put {
            kind,
            name,
            spec,
            references,
            keys,
            create_only,
            expected,
            scope,
        } => {
            let kind = *kind;
            let current = current(tx, kind, name).await?;
            let current_version = current.as_ref().map(|c| c.1);
            if let Err(e) = super::rows::check_expected(kind, name, *expected, current_version) {
                return Ok(Err(e));
            }
            let existing = current.map(|(spec, _)| spec);
            if let Some(scope) = scope
                && let Err(e) = check_scope(scope, kind, name, existing.as_deref(), Some(spec))
            {
                return Ok(Err(e));
            }
            if *create_only && existing.is_some() {
                return Ok(Err(StoreError::AlreadyExists {
                    kind,
                    name: name.clone(),
                }));
            }
            if let Err(e) = super::keys::write(tx, keys).await? {
                return Ok(Err(e));
            }
            if existing.as_deref() == Some(spec.as_str()) {
                return Ok(Ok(Effect {
                    changed: false,
                    created: false,
                    resource_version: current_version.unwrap_or_default(),
                }));
            }
            for reference in references {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT name FROM resources WHERE kind = $1 AND name = $2")
                        .bind(reference.kind.as_str())
                        .bind(&reference.name)
                        .fetch_optional(&mut **tx)
                        .await?;
                if found.is_none() {
                    return Ok(Err(StoreError::MissingReference {
                        field: reference.field.clone(),
                        kind: reference.kind,
                        name: reference.name.clone(),
                    }));
                }
            }
            upsert_row(tx, kind, name, spec, version, existing.is_some()).await?;
            replace_references(tx, kind, name, references).await?;
            let op = if existing.is_some() {
                ChangeOp::Update
            } else {
                ChangeOp::Create
            };
            let specs = (existing.as_deref(), Some(spec.as_str()));
            record_change(tx, version, 0, op, kind, name, specs).await?;
            Ok(Ok(Effect {
                changed: true,
                created: existing.is_none(),
                resource_version: version,
            }))
        }
        Edit::Delete {
            kind,
            name,
            expected,
            scope,
        } => {
            let kind = *kind;
            let current = current(tx, kind, name).await?;
            let current_version = current.as_ref().map(|c| c.1);
            if let Err(e) = super::rows::check_expected(kind, name, *expected, current_version) {
                return Ok(Err(e));
            }
            if let (Some(scope), Some((before, _))) = (scope, &current)
                && let Err(e) = check_scope(scope, kind, name, Some(before), None)
            {
                return Ok(Err(e));
            }
            let used_by = sqlx::query(
                "SELECT from_kind, from_name FROM resource_refs WHERE to_kind = $1 AND to_name = $2 \
                 ORDER BY from_kind, from_name LIMIT 10",
            )
            .bind(kind.as_str())
            .bind(name)
            .fetch_all(&mut **tx)
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
                return Ok(Err(StoreError::InUse {
                    kind,
                    name: name.clone(),
                    used_by,
                }));
            }
            if kind == Kind::Owner {
                let tokens: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM admin_tokens WHERE owner = $1 ORDER BY name LIMIT 10",
                )
                .bind(name)
                .fetch_all(&mut **tx)
                .await?;
                if !tokens.is_empty() {
                    return Ok(Err(StoreError::OwnerHasTokens {
                        owner: name.clone(),
                        tokens,
                    }));
                }
            }
            let Some((before, _)) = current else {
                return Ok(Err(StoreError::NotFound {
                    kind,
                    name: name.clone(),
                }));
            };
            delete_row(tx, kind, name).await?;
            let specs = (Some(before.as_str()), None);
            record_change(tx, version, 0, ChangeOp::Delete, kind, name, specs).await?;
            Ok(Ok(Effect {
                changed: true,
                created: false,
                resource_version: version,
            }))
        }
    }
}
