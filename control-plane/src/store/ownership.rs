//! Ownership in the store: who a stored spec belongs to, what a caller
//! scoped to one owner may change, and the owners each version touched (for
//! the history's filter). The rules themselves are in `model/ownership.rs`.

use std::collections::BTreeSet;

use serde::Deserialize;
use sqlx::Row;

use super::StoreError;
use crate::model::{Kind, ownership::describe};

/// The ownership fields of a stored spec (the rest is not read).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Owned {
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub shared: bool,
}

/// The owner and `shared` flag of an encoded spec.
pub(super) fn owned(spec: &str) -> Owned {
    serde_json::from_str(spec).unwrap_or_default()
}

/// What a caller scoped to `scope` may do with one resource: only its own
/// owner's (before and after the change), never owners themselves, and never
/// change `shared` (the operators share resources).
pub(super) fn check_scope(
    scope: &str,
    kind: Kind,
    name: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), StoreError> {
    if kind == Kind::Owner {
        return Err(StoreError::Forbidden(format!(
            "owners are managed by the operators; a token for {scope} cannot change owner {name:?}"
        )));
    }
    let before = before.map(owned);
    let after = after.map(owned);
    for spec in before.iter().chain(after.iter()) {
        if spec.owner.as_deref() != Some(scope) {
            return Err(StoreError::Forbidden(format!(
                "{} {name:?} belongs to {}; a token for {scope} changes only its own resources",
                kind.as_str(),
                describe(spec.owner.as_deref()),
            )));
        }
    }
    let was_shared = before.as_ref().is_some_and(|b| b.shared);
    if let Some(after) = &after
        && after.shared != was_shared
    {
        return Err(StoreError::Forbidden(format!(
            "{} {name:?}: only the operators mark a resource shared",
            kind.as_str()
        )));
    }
    Ok(())
}

/// Records which owners `version` touched (before or after each change), as
/// `,a,b,` so the history can filter with `LIKE`.
pub(super) async fn record_owners(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    version: u64,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT before_spec, after_spec FROM config_changes WHERE version = $1")
        .bind(version as i64)
        .fetch_all(&mut **tx)
        .await?;
    let mut owners = BTreeSet::new();
    for row in rows {
        for column in 0..2 {
            let spec: Option<String> = row.try_get(column)?;
            if let Some(owner) = spec.and_then(|s| owned(&s).owner) {
                owners.insert(owner);
            }
        }
    }
    sqlx::query("UPDATE config_versions SET owners = $1 WHERE version = $2")
        .bind(joined(&owners))
        .bind(version as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Refuses an owner that is not registered (`/v1/owners`).
pub(super) async fn ensure_owner(
    conn: &mut sqlx::AnyConnection,
    owner: &str,
) -> Result<(), StoreError> {
    let known: Option<String> =
        sqlx::query_scalar("SELECT name FROM resources WHERE kind = $1 AND name = $2")
            .bind(Kind::Owner.as_str())
            .bind(owner)
            .fetch_optional(&mut *conn)
            .await?;
    match known {
        Some(_) => Ok(()),
        None => Err(StoreError::UnknownOwner(owner.to_owned())),
    }
}

pub(super) fn joined(owners: &BTreeSet<String>) -> String {
    if owners.is_empty() {
        return String::new();
    }
    let mut out = String::from(",");
    for owner in owners {
        out.push_str(owner);
        out.push(',');
    }
    out
}

pub(super) fn split(owners: Option<String>) -> Vec<String> {
    owners
        .unwrap_or_default()
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_caller_changes_only_its_own() {
        let a = r#"{"name":"r","owner":"team-a"}"#;
        let b = r#"{"name":"r","owner":"team-b"}"#;
        let ops = r#"{"name":"r"}"#;
        let shared = r#"{"name":"r","owner":"team-a","shared":true}"#;
        assert!(check_scope("team-a", Kind::Route, "r", None, Some(a)).is_ok());
        assert!(check_scope("team-a", Kind::Route, "r", Some(a), None).is_ok());
        for (before, after) in [
            (None, Some(b)),
            (Some(b), Some(a)),
            (Some(a), Some(ops)),
            (Some(ops), None),
            (Some(a), Some(shared)),
            (Some(shared), Some(a)),
        ] {
            let err = check_scope("team-a", Kind::Route, "r", before, after).unwrap_err();
            assert!(
                matches!(err, StoreError::Forbidden(_)),
                "{before:?} {after:?}"
            );
        }
        assert!(check_scope("team-a", Kind::Route, "r", Some(shared), Some(shared)).is_ok());
        assert!(check_scope("team-a", Kind::Owner, "team-a", None, Some("{}")).is_err());
    }

    #[test]
    fn owners_round_trip() {
        let owners = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        assert_eq!(joined(&owners), ",a,b,");
        assert_eq!(split(Some(joined(&owners))), ["a", "b"]);
        assert!(split(Some(String::new())).is_empty());
        assert!(split(None).is_empty());
    }
}
