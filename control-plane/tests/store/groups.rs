//! Group commit: parallel single-resource writes share one transaction and
//! one admission check, yet each keeps its own version, history entry and
//! answer; a refused edit never takes the others down with it.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use gatehouse_control_plane::{
    model::{ConfigState, FieldError},
    store::{Admission, AdmissionError, Origin, Prepared, Source, Store, StoreError},
};

use crate::support::*;

/// A check as slow as Envoy's (so writers pile up behind it), refusing any
/// configuration with a route named `refused`; counts its runs.
#[derive(Default)]
struct SlowCheck {
    runs: AtomicUsize,
}

impl Admission for SlowCheck {
    fn admit<'a>(
        &'a self,
        state: &'a ConfigState,
    ) -> futures_core::future::BoxFuture<'a, Result<Option<Prepared>, AdmissionError>> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let refused = state.routes.contains_key("refused");
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if refused {
                Err(AdmissionError::Refused(vec![FieldError::new(
                    "config",
                    "refused by the test",
                )]))
            } else {
                Ok(None)
            }
        })
    }
}

const WRITERS: usize = 100;

async fn parallel_writes_share_checks_but_keep_their_versions(store: Store) {
    let check = Arc::new(SlowCheck::default());
    let store = store.with_admission(check.clone());
    store.create(&service("a", 80)).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = store.with_origin(Origin {
            actor: format!("ci-{i}"),
            source: Source::Api,
        });
        writers.spawn(async move { store.create(&route(&format!("r{i}"), &["a"])).await });
    }
    let mut versions = BTreeSet::new();
    while let Some(result) = writers.join_next().await {
        let written = result.unwrap().unwrap();
        assert!(written.created && written.changed);
        assert_eq!(written.resource_version, written.version);
        versions.insert(written.version);
    }
    let expected: BTreeSet<u64> = (2..=WRITERS as u64 + 1).collect();
    assert_eq!(versions, expected, "distinct, gap-free versions");
    let runs = check.runs.load(Ordering::Relaxed);
    assert!(
        runs < WRITERS / 4,
        "{runs} checks for {WRITERS} writes: groups share one"
    );
    let history = store.history(1_000, None, None).await.unwrap();
    assert_eq!(history.len(), WRITERS + 1, "one entry per version");
    let actors: BTreeSet<&str> = history.iter().map(|v| v.actor.as_str()).collect();
    assert!(actors.contains("ci-0") && actors.contains(&*format!("ci-{}", WRITERS - 1)));
    let state = store.load().await.unwrap();
    assert_eq!(state.version, WRITERS as u64 + 1);
    assert_eq!(state.routes.len(), WRITERS);
}

async fn a_refused_edit_fails_alone(store: Store) {
    let check = Arc::new(SlowCheck::default());
    let store = store.with_admission(check.clone());
    store.create(&service("a", 80)).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        let name = if i == 20 {
            "refused".to_owned()
        } else {
            format!("r{i}")
        };
        writers.spawn(async move { (name.clone(), store.create(&route(&name, &["a"])).await) });
    }
    let mut versions = BTreeSet::new();
    while let Some(result) = writers.join_next().await {
        match result.unwrap() {
            (name, Err(StoreError::Admission(AdmissionError::Refused(_)))) => {
                assert_eq!(name, "refused")
            }
            (name, Err(e)) => panic!("{name}: {e}"),
            (_, Ok(written)) => {
                versions.insert(written.version);
            }
        }
    }
    assert_eq!(versions, (2..=40).collect(), "39 writes, gap-free");
    let state = store.load().await.unwrap();
    assert_eq!(state.routes.len(), 39);
    assert!(!state.routes.contains_key("refused"));
}

async fn an_edit_refused_for_its_own_reasons_costs_no_version(store: Store) {
    store.create(&service("a", 80)).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        writers.spawn(async move { store.create(&route("same", &["a"])).await });
    }
    for i in 0..20 {
        let store = store.clone();
        writers.spawn(async move { store.create(&route(&format!("r{i}"), &["missing"])).await });
    }
    let (mut created, mut exists, mut missing) = (0, 0, 0);
    while let Some(result) = writers.join_next().await {
        match result.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::AlreadyExists { .. }) => exists += 1,
            Err(StoreError::MissingReference { .. }) => missing += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((created, exists, missing), (1, 19, 20));
    assert_eq!(store.version().await.unwrap(), 2);
}

store_suite!(
    parallel_writes_share_checks_but_keep_their_versions,
    a_refused_edit_fails_alone,
    an_edit_refused_for_its_own_reasons_costs_no_version,
);
