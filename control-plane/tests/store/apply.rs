//! Declarative apply: one version per document, dry runs, prune,
//! dangling references, concurrent applies, `if_version`.

use gatehouse_control_plane::{
    model::Service,
    store::{ApplyOptions, ChangeOp, Store, StoreError},
};

use crate::support::*;

async fn apply_is_one_version_and_idempotent(store: Store) {
    let doc = document(
        &[service("a", 80), service("b", 80)],
        &[route("r", &["a", "b"])],
    );
    let applied = store.apply(&doc, APPLY).await.unwrap();
    assert_eq!(applied.version, 1, "one version for the whole document");
    assert_eq!(
        summary(&applied),
        ["Create service a", "Create service b", "Create route r"]
    );
    let again = store.apply(&doc, APPLY).await.unwrap();
    assert_eq!(
        (again.version, again.changes.len()),
        (1, 0),
        "re-applying changes nothing"
    );
    let (version, exported) = store.export().await.unwrap();
    assert_eq!((version, exported), (1, doc));
}

async fn dry_run_reports_changes_and_stores_nothing(store: Store) {
    store
        .apply(&document(&[service("a", 80)], &[route("r", &["a"])]), APPLY)
        .await
        .unwrap();
    let changed = document(&[service("a", 81)], &[route("r", &["a"])]);
    let dry = ApplyOptions {
        dry_run: true,
        ..APPLY
    };
    let preview = store.apply(&changed, dry).await.unwrap();
    assert_eq!(summary(&preview), ["Update service a"]);
    assert!(preview.dry_run);
    assert_eq!(store.version().await.unwrap(), 1);
    assert_eq!(
        store.get::<Service>("a").await.unwrap(),
        Some(service("a", 80))
    );
}

async fn prune_deletes_what_the_document_no_longer_lists(store: Store) {
    store
        .apply(
            &document(
                &[service("a", 80), service("old", 80)],
                &[route("r", &["a"]), route("gone", &["old"])],
            ),
            APPLY,
        )
        .await
        .unwrap();
    let keep = document(&[service("a", 80)], &[route("r", &["a"])]);
    let without_prune = store.apply(&keep, APPLY).await.unwrap();
    assert!(
        without_prune.changes.is_empty(),
        "nothing is deleted without prune"
    );
    let prune = ApplyOptions {
        prune: true,
        ..APPLY
    };
    let pruned = store.apply(&keep, prune).await.unwrap();
    assert_eq!(
        summary(&pruned),
        ["Delete route gone", "Delete service old"],
        "routes go before their services"
    );
    assert_eq!(pruned.changes[0].op, ChangeOp::Delete);
    let state = store.load().await.unwrap();
    assert_eq!((state.services.len(), state.routes.len()), (1, 1));
}

async fn apply_with_a_dangling_reference_changes_nothing(store: Store) {
    store
        .apply(&document(&[service("a", 80)], &[]), APPLY)
        .await
        .unwrap();
    let bad = document(&[service("b", 80)], &[route("r", &["a", "missing"])]);
    let err = store.apply(&bad, APPLY).await.unwrap_err();
    match err {
        StoreError::MissingReference { field, name, .. } => {
            assert_eq!(
                (field.as_str(), name.as_str()),
                ("routes[0].destination.weighted[1].service", "missing")
            );
        }
        other => panic!("expected a missing reference, got {other}"),
    }
    // Pruning a service the document's own routes still use is refused too.
    let prune = ApplyOptions {
        prune: true,
        ..APPLY
    };
    let err = store
        .apply(&document(&[service("b", 80)], &[route("r", &["a"])]), prune)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingReference { .. }), "{err}");
    assert_eq!(store.version().await.unwrap(), 1);
    assert!(
        store.get::<Service>("b").await.unwrap().is_none(),
        "all or nothing"
    );
}

async fn concurrent_applies_never_interleave(store: Store) {
    let mut applies = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let store = store.clone();
        applies.spawn(async move {
            let doc = document(&[service("a", 8000 + i)], &[route("r", &["a"])]);
            store.apply(&doc, APPLY).await
        });
    }
    let mut versions = Vec::new();
    while let Some(result) = applies.join_next().await {
        versions.push(result.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    versions.dedup();
    let latest = store.version().await.unwrap();
    assert_eq!(versions.last(), Some(&latest));
    assert_eq!(store.load().await.unwrap().routes.len(), 1);
    // The history is gap-free and every version records what it changed.
    let history = store.history(100, None, None).await.unwrap();
    let recorded: Vec<u64> = history.iter().rev().map(|v| v.version).collect();
    assert_eq!(recorded, (1..=latest).collect::<Vec<_>>());
    assert!(history.iter().all(|v| !v.changes.is_empty()));
}

async fn apply_refuses_a_stale_version(store: Store) {
    store
        .apply(&document(&[service("a", 80)], &[]), APPLY)
        .await
        .unwrap();
    store.upsert(&service("a", 81)).await.unwrap();
    let stale = ApplyOptions {
        if_version: Some(1),
        ..APPLY
    };
    let err = store
        .apply(&document(&[service("a", 90)], &[]), stale)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionMismatch {
                expected: 1,
                actual: 2
            }
        ),
        "{err}"
    );
    let current = ApplyOptions {
        if_version: Some(2),
        ..APPLY
    };
    assert_eq!(
        store
            .apply(&document(&[service("a", 90)], &[]), current)
            .await
            .unwrap()
            .version,
        3
    );
}

store_suite!(
    apply_is_one_version_and_idempotent,
    dry_run_reports_changes_and_stores_nothing,
    prune_deletes_what_the_document_no_longer_lists,
    apply_with_a_dangling_reference_changes_nothing,
    concurrent_applies_never_interleave,
    apply_refuses_a_stale_version,
);
