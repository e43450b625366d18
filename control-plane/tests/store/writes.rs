//! Single-resource writes: versions, conflicts, references, concurrency,
//! `If-Match`, the admission check before commit.

use gatehouse_control_plane::{
    model::{ConfigState, FieldError, Kind, Route, Service},
    store::{Admission, AdmissionError, ApplyOptions, Prepared, Store, StoreError},
};

use crate::support::*;

async fn every_change_bumps_the_version_once(store: Store) {
    assert_eq!(store.version().await.unwrap(), 0);
    let written = store.create(&service("a", 80)).await.unwrap();
    assert_eq!(
        (written.version, written.created, written.changed),
        (1, true, true)
    );
    let same = store.upsert(&service("a", 80)).await.unwrap();
    assert_eq!(
        (same.version, same.changed),
        (1, false),
        "identical PUT is a no-op"
    );
    let updated = store.upsert(&service("a", 81)).await.unwrap();
    assert_eq!((updated.version, updated.created), (2, false));
    assert_eq!(
        store.get::<Service>("a").await.unwrap(),
        Some(service("a", 81))
    );
    assert_eq!(store.list::<Service>().await.unwrap().len(), 1);
    assert_eq!(store.version().await.unwrap(), 2);
}

async fn create_of_existing_name_conflicts(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    let err = store.create(&service("a", 81)).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        store.version().await.unwrap(),
        1,
        "failed write changes nothing"
    );
    assert_eq!(
        store.get::<Service>("a").await.unwrap(),
        Some(service("a", 80))
    );
}

async fn routes_must_point_at_existing_services(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    let err = store
        .create(&route("r", &["a", "missing"]))
        .await
        .unwrap_err();
    match err {
        StoreError::MissingReference { field, name, .. } => {
            assert_eq!(field, "destination.weighted[1].service");
            assert_eq!(name, "missing");
        }
        other => panic!("expected missing reference, got {other}"),
    }
    assert_eq!(store.version().await.unwrap(), 1);
    assert!(store.get::<Route>("r").await.unwrap().is_none());
}

async fn services_in_use_cannot_be_deleted(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    store.create(&route("r", &["a"])).await.unwrap();
    let err = store.delete(Kind::Service, "a").await.unwrap_err();
    match &err {
        StoreError::InUse { used_by, .. } => assert_eq!(used_by, &[(Kind::Route, "r".to_string())]),
        other => panic!("expected in use, got {other}"),
    }
    assert_eq!(store.version().await.unwrap(), 2);
    // Re-pointing the route frees the service.
    store.create(&service("b", 80)).await.unwrap();
    store.upsert(&route("r", &["b"])).await.unwrap();
    assert_eq!(store.delete(Kind::Service, "a").await.unwrap(), 5);
    store.delete(Kind::Route, "r").await.unwrap();
    store.delete(Kind::Service, "b").await.unwrap();
    assert!(store.list::<Service>().await.unwrap().is_empty());
}

async fn deleting_a_missing_resource_changes_nothing(store: Store) {
    let err = store.delete(Kind::Route, "nope").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.version().await.unwrap(), 0);
}

async fn load_returns_everything_at_one_version(store: Store) {
    let empty = store.load().await.unwrap();
    assert_eq!(empty.version, 0);
    assert!(empty.services.is_empty() && empty.routes.is_empty());
    store.create(&service("a", 80)).await.unwrap();
    store.create(&service("b", 80)).await.unwrap();
    store.create(&route("r", &["a", "b"])).await.unwrap();
    let state = store.load().await.unwrap();
    assert_eq!(state.version, 3);
    assert_eq!(state.services.len(), 2);
    assert_eq!(state.routes["r"], route("r", &["a", "b"]));
}

async fn concurrent_writers_are_serialised(store: Store) {
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        writers.spawn(async move { store.create(&service(&format!("s{i}"), 80)).await });
    }
    let mut versions = Vec::new();
    while let Some(result) = writers.join_next().await {
        versions.push(result.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=20).collect::<Vec<_>>(),
        "one distinct version per write"
    );
    assert_eq!(store.load().await.unwrap().services.len(), 20);
}

async fn migrations_are_idempotent(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.version().await.unwrap(), 1);
}

async fn a_second_store_on_the_same_database_sees_every_write(store: Store) {
    let other = Store::connect_lazy(store.url()).unwrap();
    store.create(&service("a", 80)).await.unwrap();
    let seen = other.load().await.unwrap();
    assert_eq!((seen.version, seen.services.len()), (1, 1));
}

async fn if_match_guards_single_resource_writes(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    store.create(&service("b", 80)).await.unwrap();
    let (_, etag) = store.get_versioned::<Service>("a").await.unwrap().unwrap();
    assert_eq!(etag, 1);
    let written = store
        .upsert_if(&service("a", 81), Some(etag))
        .await
        .unwrap();
    assert_eq!((written.version, written.resource_version), (3, 3));
    // A second writer still holding the old ETag loses, and changes nothing.
    let err = store
        .upsert_if(&service("a", 82), Some(etag))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ResourceChanged {
                expected: 1,
                actual: Some(3),
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .delete_if(Kind::Service, "a", Some(etag))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ResourceChanged { .. }), "{err}");
    assert_eq!(
        store.get::<Service>("a").await.unwrap(),
        Some(service("a", 81))
    );
    assert_eq!(store.version().await.unwrap(), 3);
    store.delete_if(Kind::Service, "a", Some(3)).await.unwrap();
    let err = store
        .upsert_if(&service("a", 80), Some(3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::ResourceChanged { actual: None, .. }),
        "{err}"
    );
}

/// Refuses any configuration with a route named `refused`, and counts the
/// states it saw, so the test sees what the check is shown.
struct RefuseNamedRoute(std::sync::Mutex<Vec<u64>>);

impl Admission for RefuseNamedRoute {
    fn admit<'a>(
        &'a self,
        state: &'a ConfigState,
    ) -> futures_core::future::BoxFuture<'a, Result<Option<Prepared>, AdmissionError>> {
        self.0.lock().unwrap().push(state.version);
        let refused = state.routes.contains_key("refused");
        Box::pin(async move {
            if refused {
                Err(AdmissionError::Refused(vec![FieldError::new(
                    "config",
                    "no such route",
                )]))
            } else {
                Ok(Some(
                    std::sync::Arc::new(format!("prepared {}", state.version)) as Prepared,
                ))
            }
        })
    }
}

async fn every_change_passes_admission_before_commit(store: Store) {
    let check = std::sync::Arc::new(RefuseNamedRoute(Default::default()));
    let store = store.with_admission(check.clone());
    let mut committed = store.subscribe();
    store.create(&service("a", 80)).await.unwrap();
    store.create(&route("r", &["a"])).await.unwrap();
    assert_eq!(
        *check.0.lock().unwrap(),
        [1, 2],
        "each sees its own version"
    );
    // What the check prepared travels with the commit notice.
    let notice = committed.borrow_and_update().clone();
    assert_eq!(notice.version, 2);
    let prepared = notice.prepared.expect("prepared").downcast::<String>().ok();
    assert_eq!(prepared.as_deref().map(String::as_str), Some("prepared 2"));

    // Single writes, applies, dry runs and rollbacks are all refused.
    let refused = |e: StoreError| matches!(e, StoreError::Admission(AdmissionError::Refused(_)));
    assert!(refused(
        store.create(&route("refused", &["a"])).await.unwrap_err()
    ));
    let doc = document(
        &[service("a", 80)],
        &[route("r", &["a"]), route("refused", &["a"])],
    );
    assert!(refused(store.apply(&doc, APPLY).await.unwrap_err()));
    let dry = ApplyOptions {
        dry_run: true,
        ..APPLY
    };
    assert!(
        refused(store.apply(&doc, dry).await.unwrap_err()),
        "a dry run reports what the check says"
    );
    assert_eq!(store.version().await.unwrap(), 2, "nothing committed");
    assert!(
        !committed.has_changed().unwrap(),
        "refusals and dry runs announce nothing"
    );
    assert!(store.get::<Route>("refused").await.unwrap().is_none());
    assert_eq!(store.history(10, None, None).await.unwrap().len(), 2);
}

store_suite!(
    every_change_bumps_the_version_once,
    create_of_existing_name_conflicts,
    routes_must_point_at_existing_services,
    services_in_use_cannot_be_deleted,
    deleting_a_missing_resource_changes_nothing,
    load_returns_everything_at_one_version,
    concurrent_writers_are_serialised,
    migrations_are_idempotent,
    a_second_store_on_the_same_database_sees_every_write,
    if_match_guards_single_resource_writes,
    every_change_passes_admission_before_commit,
);
