//! The store suite, run once against SQLite and once against Postgres.
//!
//! Each test gets a fresh database: a new SQLite file, or a new Postgres
//! database on the server named by `GATEHOUSE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};

use gatehouse_control_plane::{
    model::{ConfigDocument, ConfigState, Endpoint, FieldError, Kind, Route, Service},
    store::{
        Admission, AdmissionError, ApplyOptions, ChangeOp, DatabaseUrl, Origin, Prepared,
        RejectedResource, Source, Store, StoreError,
    },
};
use sqlx::Connection;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn sqlite() -> Store {
    let dir = std::env::temp_dir().join(unique("gatehouse_store"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Store::connect_lazy(&DatabaseUrl::sqlite_in(&dir)).expect("store");
    store.migrate().await.expect("migrate");
    store
}

fn postgres_admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the test Postgres server.
pub async fn postgres_url() -> DatabaseUrl {
    let admin = postgres_admin_url();
    let name = unique("gh_test");
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("Postgres reachable (set GATEHOUSE_TEST_POSTGRES_URL)");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}").parse().expect("url")
}

async fn postgres() -> Store {
    let store = Store::connect_lazy(&postgres_url().await).expect("store");
    store.migrate().await.expect("migrate");
    store
}

fn service(name: &str, port: u32) -> Service {
    Service {
        name: name.into(),
        endpoints: vec![Endpoint {
            host: "127.0.0.1".into(),
            port,
            weight: None,
        }],
        protocol: Default::default(),
        connect_timeout_ms: 1000,
    }
}

fn route(name: &str, services: &[&str]) -> Route {
    let weighted = if services.len() > 1 {
        services
            .iter()
            .map(|s| gatehouse_control_plane::model::WeightedService {
                service: (*s).into(),
                weight: 1,
            })
            .collect()
    } else {
        Vec::new()
    };
    Route {
        name: name.into(),
        matches: gatehouse_control_plane::model::RouteMatch {
            path_prefix: Some(format!("/{name}")),
            ..Default::default()
        },
        destination: gatehouse_control_plane::model::Destination {
            service: (services.len() == 1).then(|| services[0].to_owned()),
            weighted,
        },
        strip_prefix: false,
        prefix_rewrite: None,
        timeout_ms: None,
        auth: None,
    }
}

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

fn document(services: &[Service], routes: &[Route]) -> ConfigDocument {
    ConfigDocument {
        services: services.to_vec(),
        routes: routes.to_vec(),
        ..ConfigDocument::default()
    }
}

fn summary(applied: &gatehouse_control_plane::store::Applied) -> Vec<String> {
    applied
        .changes
        .iter()
        .map(|c| format!("{:?} {} {}", c.op, c.kind, c.name))
        .collect()
}

const APPLY: ApplyOptions = ApplyOptions {
    prune: false,
    dry_run: false,
    if_version: None,
};

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
    let history = store.history(100, None).await.unwrap();
    let recorded: Vec<u64> = history.iter().rev().map(|v| v.version).collect();
    assert_eq!(recorded, (1..=latest).collect::<Vec<_>>());
    assert!(history.iter().all(|v| !v.changes.is_empty()));
}

async fn history_records_who_how_and_what(store: Store) {
    let ci = store.with_origin(Origin {
        actor: "ci-pipeline".into(),
        source: Source::Apply,
    });
    ci.apply(&document(&[service("a", 80)], &[route("r", &["a"])]), APPLY)
        .await
        .unwrap();
    store.upsert(&service("a", 81)).await.unwrap();
    store.delete(Kind::Route, "r").await.unwrap();
    let history = store.history(10, None).await.unwrap();
    let summary: Vec<(u64, &str, &str, usize)> = history
        .iter()
        .map(|v| {
            (
                v.version,
                v.actor.as_str(),
                v.source.as_str(),
                v.changes.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, "anonymous", "api", 1),
            (2, "anonymous", "api", 1),
            (1, "ci-pipeline", "apply", 2)
        ]
    );
    assert!(
        history[0].changes[0].before.is_none(),
        "the list carries no specs"
    );
    let detail = store.version_record(2).await.unwrap();
    assert_eq!(
        detail.changes[0].before.as_ref().unwrap()["endpoints"][0]["port"],
        80
    );
    assert_eq!(
        detail.changes[0].after.as_ref().unwrap()["endpoints"][0]["port"],
        81
    );
    assert_eq!(
        store.history(10, Some(2)).await.unwrap().len(),
        1,
        "paging by version"
    );
    assert!(matches!(
        store.version_record(9).await,
        Err(StoreError::NoSuchVersion(9))
    ));
}

async fn rollback_restores_an_earlier_version_as_a_new_one(store: Store) {
    let v1 = document(&[service("a", 80)], &[route("r", &["a"])]);
    store.apply(&v1, APPLY).await.unwrap();
    store.upsert(&service("a", 81)).await.unwrap();
    store
        .apply(
            &document(&[service("b", 80)], &[route("r2", &["b"])]),
            APPLY,
        )
        .await
        .unwrap();
    store.delete(Kind::Route, "r").await.unwrap();
    assert_eq!(store.version().await.unwrap(), 4);

    let restored = store.rollback(1).await.unwrap();
    assert_eq!(restored.version, 5, "a rollback is a new version");
    let (_, now) = store.export().await.unwrap();
    assert_eq!(now, v1);
    let record = store.version_record(5).await.unwrap();
    assert_eq!(record.source, "rollback");
    // Rolling back the rollback returns to version 4's state.
    store.rollback(4).await.unwrap();
    let state = store.load().await.unwrap();
    assert_eq!(state.services.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(state.routes.keys().collect::<Vec<_>>(), ["r2"]);
    assert!(matches!(
        store.rollback(99).await,
        Err(StoreError::NoSuchVersion(99))
    ));
    let noop = store.rollback(6).await.unwrap();
    assert!(noop.changes.is_empty());
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
    assert_eq!(store.history(10, None).await.unwrap().len(), 2);
}

async fn rejections_are_kept_once_and_earlier_states_rebuilt(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    store.create(&route("r", &["a"])).await.unwrap();
    store.create(&route("s", &["a"])).await.unwrap();
    let rejected = RejectedResource {
        r#type: "rds".into(),
        name: "gatehouse_http".into(),
        content_version: "00ff".into(),
        version: "3".into(),
        node: "edge-1".into(),
        error_detail: "bad regex".into(),
        at_ms: 1,
    };
    store
        .record_rejections(std::slice::from_ref(&rejected))
        .await
        .unwrap();
    let again = RejectedResource {
        node: "edge-2".into(),
        ..rejected.clone()
    };
    store.record_rejections(&[again]).await.unwrap();
    assert_eq!(
        store.rejections().await.unwrap(),
        [rejected],
        "first refusal kept"
    );

    let (now, earlier) = store.state_at(2).await.unwrap();
    assert_eq!(now, 3);
    assert_eq!(earlier.version, 2);
    assert!(earlier.routes.contains_key("r") && !earlier.routes.contains_key("s"));
}

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::sqlite().await).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::postgres().await).await;
                }
            )*
        }
    };
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
    apply_is_one_version_and_idempotent,
    dry_run_reports_changes_and_stores_nothing,
    prune_deletes_what_the_document_no_longer_lists,
    apply_with_a_dangling_reference_changes_nothing,
    concurrent_applies_never_interleave,
    history_records_who_how_and_what,
    rollback_restores_an_earlier_version_as_a_new_one,
    apply_refuses_a_stale_version,
    if_match_guards_single_resource_writes,
    every_change_passes_admission_before_commit,
    rejections_are_kept_once_and_earlier_states_rebuilt,
);
