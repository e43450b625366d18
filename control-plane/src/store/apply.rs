//! Declarative apply: a whole document in one transaction and one version.
//! What to create, replace and delete is planned by [`plan`], a pure
//! function of the document and the stored specs; the transaction only
//! carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sqlx::Row;

use super::{
    AdmissionError, Change, ChangeOp, Store, StoreError,
    ownership::owned,
    rows::{bump_version, delete_row, encode, record_change, replace_references, upsert_row},
};
use crate::model::{ConfigDocument, Kind, Reference, Resource};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Delete what the document no longer lists.
    pub prune: bool,
    /// Compute and check the changes, store nothing.
    pub dry_run: bool,
    /// Refuse unless the configuration is still at this version (the one the
    /// caller diffed against).
    pub if_version: Option<u64>,
    /// The document is the whole configuration (a rollback): prune across
    /// every owner, whichever the document lists.
    pub whole: bool,
}

/// The outcome of a declarative apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Applied {
    /// The version after the apply (for a dry run: the version it would create).
    pub version: u64,
    pub changes: Vec<Change>,
    pub dry_run: bool,
}

/// A resource by kind and name.
pub(super) type Key = (Kind, String);

/// A resource of an applied document, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Desired {
    pub spec: String,
    pub references: Vec<Reference>,
}

/// Every resource the document lists, encoded, with its references named by
/// their place in the document (`routes[2].destination.service`).
pub(super) fn desired(document: &ConfigDocument) -> BTreeMap<Key, Desired> {
    let mut desired = BTreeMap::new();
    collect(&mut desired, "owners", &document.owners);
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
    collect(&mut desired, "topics", &document.topics);
    collect(&mut desired, "grpc_apis", &document.grpc_apis);
    desired
}

fn collect<R: Resource>(desired: &mut BTreeMap<Key, Desired>, list: &str, resources: &[R]) {
    for (i, resource) in resources.iter().enumerate() {
        let references = resource
            .all_references()
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

/// What an apply does to the stored resources (`existing`: their specs):
/// creations and updates in dependency order, then deletions of everything
/// unlisted that is `prunable` in reverse order. References are checked
/// against the resulting state, so nothing kept can dangle.
pub(super) fn plan(
    desired: &BTreeMap<Key, Desired>,
    existing: &BTreeMap<Key, String>,
    prunable: impl Fn(&Key) -> bool,
) -> Result<Vec<(ChangeOp, Key)>, StoreError> {
    let deleted: Vec<&Key> = existing
        .keys()
        .filter(|k| !desired.contains_key(*k) && prunable(k))
        .collect();
    let remains = |key: &Key| {
        desired.contains_key(key) || (existing.contains_key(key) && !deleted.contains(&key))
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
            .into_iter()
            .rev()
            .map(|key| (ChangeOp::Delete, key.clone())),
    );
    Ok(changes)
}

impl Store {
    /// Applies a whole document atomically: one transaction, one version,
    /// all or nothing (see [`plan`]).
    ///
    /// A document with an `owner` sees, changes and prunes only that owner's
    /// resources; listing another owner's is a conflict. One without (the
    /// operators') may change anything and prunes the operators' resources
    /// and those of the owners it lists.
    pub async fn apply(
        &self,
        document: &ConfigDocument,
        options: ApplyOptions,
    ) -> Result<Applied, StoreError> {
        let mut document = document.clone();
        let errors = document.assign_owner();
        if !errors.is_empty() {
            return Err(AdmissionError::Refused(errors).into());
        }
        if let Some(scope) = &self.scope
            && document.owner.as_ref() != Some(scope)
        {
            return Err(StoreError::Forbidden(format!(
                "a token for {scope} applies only documents with `owner: {scope}`"
            )));
        }
        let desired = desired(&document);
        let mut key_writes = super::keys::KeyWrites::default();
        for (i, certificate) in document.certificates.iter().enumerate() {
            let writes = self.key_writes(certificate, &format!("certificates[{i}]."))?;
            key_writes.sealed.extend(writes.sealed);
            key_writes.needed.extend(writes.needed);
        }
        let _turn = self.write_turn().await?;
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
        let owner_of = |key: &Key| existing.get(key).and_then(|spec| owned(spec).owner);
        if let Some(owner) = &document.owner {
            super::ownership::ensure_owner(&mut tx, owner).await?;
            for key in desired.keys().filter(|k| existing.contains_key(*k)) {
                let holder = owner_of(key);
                if holder.as_ref() != Some(owner) {
                    return Err(StoreError::OwnedByOther {
                        kind: key.0,
                        name: key.1.clone(),
                        owner: holder,
                    });
                }
            }
        }
        if let Some(scope) = &self.scope {
            for key in desired.keys() {
                let before = existing.get(key).map(String::as_str);
                let after = desired.get(key).map(|d| d.spec.as_str());
                super::ownership::check_scope(scope, key.0, &key.1, before, after)?;
            }
        }
        // Whose resources a prune may delete.
        let pruned: Option<BTreeSet<Option<String>>> = match (&document.owner, options.whole) {
            (_, true) => None,
            (Some(owner), false) => Some(BTreeSet::from([Some(owner.clone())])),
            (None, false) => Some(
                desired
                    .values()
                    .map(|d| owned(&d.spec).owner)
                    .chain([None])
                    .collect(),
            ),
        };
        let prunable = |key: &Key| {
            options.prune
                && pruned
                    .as_ref()
                    .is_none_or(|owners| owners.contains(&owner_of(key)))
        };
        let changes = plan(&desired, &existing, prunable)?;
        super::keys::write(&mut tx, &key_writes).await??;
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
            let key = (*kind, name.clone());
            match (op, desired.get(&key)) {
                (ChangeOp::Delete, _) | (_, None) => delete_row(&mut tx, *kind, name).await?,
                (op, Some(d)) => {
                    let exists = *op == ChangeOp::Update;
                    upsert_row(&mut tx, *kind, name, &d.spec, version, exists).await?;
                    replace_references(&mut tx, *kind, name, &d.references).await?;
                }
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, name: &str) -> Key {
        (kind, name.to_owned())
    }

    fn want(spec: &str, references: &[(Kind, &str)]) -> Desired {
        Desired {
            spec: spec.into(),
            references: references
                .iter()
                .map(|(kind, name)| Reference {
                    field: "routes[0].destination.service".into(),
                    kind: *kind,
                    name: (*name).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn creates_updates_and_leaves_equal_specs_alone() {
        let desired = BTreeMap::from([
            (key(Kind::Service, "a"), want("a1", &[])),
            (key(Kind::Service, "b"), want("b2", &[])),
            (key(Kind::Route, "r"), want("r", &[(Kind::Service, "a")])),
        ]);
        let existing = BTreeMap::from([
            (key(Kind::Service, "a"), "a1".to_owned()),
            (key(Kind::Service, "b"), "b1".to_owned()),
        ]);
        let changes = plan(&desired, &existing, |_| false).expect("plan");
        assert_eq!(
            changes,
            vec![
                (ChangeOp::Update, key(Kind::Service, "b")),
                (ChangeOp::Create, key(Kind::Route, "r")),
            ]
        );
    }

    #[test]
    fn prune_deletes_the_unlisted_in_reverse_dependency_order() {
        let existing = BTreeMap::from([
            (key(Kind::Service, "a"), "a".to_owned()),
            (key(Kind::Route, "r"), "r".to_owned()),
        ]);
        assert_eq!(
            plan(&BTreeMap::new(), &existing, |_| false).expect("plan"),
            []
        );
        assert_eq!(
            plan(&BTreeMap::new(), &existing, |_| true).expect("plan"),
            vec![
                (ChangeOp::Delete, key(Kind::Route, "r")),
                (ChangeOp::Delete, key(Kind::Service, "a")),
            ]
        );
    }

    #[test]
    fn references_are_checked_against_the_result() {
        let desired = BTreeMap::from([(key(Kind::Route, "r"), want("r", &[(Kind::Service, "a")]))]);
        let existing = BTreeMap::from([(key(Kind::Service, "a"), "a".to_owned())]);
        // Kept without prune; gone with it, so the route would dangle.
        assert!(plan(&desired, &existing, |_| false).is_ok());
        let err = plan(&desired, &existing, |_| true).expect_err("dangling");
        assert!(
            matches!(&err, StoreError::MissingReference { field, name, .. }
                if field == "routes[0].destination.service" && name == "a"),
            "{err}"
        );
    }
}
