//! The SQL underneath every write: resource rows, references, the change
//! log, the version counter, and the JSON encoding of specs.

use serde::Serialize;
use sqlx::Row;

use super::{ChangeOp, StoreError};
use crate::model::{ConfigState, Kind, Reference, Resource};

/// Every resource and the version they belong to, in one statement, so the
/// state is consistent without relying on isolation levels.
pub(super) async fn load_from(conn: &mut sqlx::AnyConnection) -> Result<ConfigState, StoreError> {
    let rows = sqlx::query(
        "SELECT '' AS kind, '' AS name, CAST(version AS TEXT) AS spec FROM config_version WHERE id = 1 \
         UNION ALL SELECT kind, name, spec FROM resources \
         UNION ALL SELECT 'api_key', id, spec FROM api_keys \
         UNION ALL SELECT 'xds_token', name, spec FROM xds_tokens",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut state = ConfigState::default();
    for row in rows {
        let kind: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let spec: String = row.try_get(2)?;
        if kind == "xds_token" {
            let token = serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
                kind: Kind::ApiKey,
                name: name.clone(),
                source,
            })?;
            state.node_tokens.push(token);
            continue;
        }
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

pub(super) async fn upsert_row(
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
pub(super) async fn delete_row(
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

pub(super) async fn record_change(
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
pub(super) async fn bump_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(version as u64)
}

pub(super) async fn replace_references(
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
pub(super) async fn current(
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
pub(super) fn check_expected(
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

pub(super) fn encode<R: Serialize>(resource: &R) -> String {
    // Serialising our own plain structs cannot fail.
    serde_json::to_string(resource).unwrap_or_default()
}

pub(super) fn decode<R: Resource>(kind: Kind, name: &str, spec: &str) -> Result<R, StoreError> {
    serde_json::from_str(spec).map_err(|source| StoreError::Corrupt {
        kind,
        name: name.to_owned(),
        source,
    })
}

pub(super) use crate::clock::now_ms;
