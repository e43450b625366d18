//! History, rollback, earlier states, and refused resources.

use gatehouse_control_plane::{
    model::Kind,
    store::{Origin, RejectedResource, Source, Store, StoreError},
};

use crate::support::*;

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
    let history = store.history(10, None, None).await.unwrap();
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
        store.history(10, Some(2), None).await.unwrap().len(),
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

store_suite!(
    history_records_who_how_and_what,
    rollback_restores_an_earlier_version_as_a_new_one,
    rejections_are_kept_once_and_earlier_states_rebuilt,
);
