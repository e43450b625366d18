//! Ownership in the store: scoped applies see, change and prune only their
//! owner's resources; scoped writers change only their own; the history
//! records and filters by the owners each version touched.

use gatehouse_control_plane::{
    model::{ConfigDocument, Owner, Resource},
    store::{ApplyOptions, Store, StoreError},
};

use crate::support::*;

fn owner(name: &str) -> Owner {
    Owner {
        name: name.into(),
        description: None,
    }
}

/// The operators' document: two teams and a shared service.
fn operators() -> ConfigDocument {
    let mut web = service("web", 80);
    web.shared = true;
    ConfigDocument {
        owners: vec![owner("team-a"), owner("team-b")],
        services: vec![web],
        ..ConfigDocument::default()
    }
}

fn team(owner: &str, routes: &[&str]) -> ConfigDocument {
    ConfigDocument {
        owner: Some(owner.into()),
        routes: routes.iter().map(|r| route(r, &["web"])).collect(),
        ..ConfigDocument::default()
    }
}

const PRUNE: ApplyOptions = ApplyOptions {
    prune: true,
    ..APPLY
};

async fn scoped_applies_prune_only_their_owner(store: Store) {
    store.apply(&operators(), APPLY).await.unwrap();
    store
        .apply(&team("team-a", &["a1", "a2"]), PRUNE)
        .await
        .unwrap();
    store.apply(&team("team-b", &["b1"]), PRUNE).await.unwrap();
    // team-a drops a2: only a2 goes, team-b's route and the service stay.
    let applied = store.apply(&team("team-a", &["a1"]), PRUNE).await.unwrap();
    assert_eq!(summary(&applied), ["Delete route a2"]);
    let state = store.load().await.unwrap();
    assert_eq!(
        state.routes.keys().collect::<Vec<_>>(),
        ["a1", "b1"],
        "team-b's route survives team-a's prune"
    );
    assert_eq!(state.routes["a1"].owner(), Some("team-a"));
    // The operators' document (no owner) prunes only the operators' resources.
    let applied = store.apply(&operators(), PRUNE).await.unwrap();
    assert!(applied.changes.is_empty(), "{:?}", summary(&applied));

    // A team's document naming another team's resource is a conflict.
    let err = store
        .apply(&team("team-a", &["b1"]), APPLY)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::OwnedByOther { name, owner, .. }
            if name == "b1" && owner.as_deref() == Some("team-b")),
        "{err}"
    );
    let err = store
        .apply(&team("team-c", &["c1"]), APPLY)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownOwner(_)), "{err}");
}

async fn scoped_writers_change_only_their_own(store: Store) {
    store.apply(&operators(), APPLY).await.unwrap();
    store.apply(&team("team-b", &["b1"]), APPLY).await.unwrap();
    let team_a = store.clone().with_scope(Some("team-a".into()));
    let mut mine = route("a1", &["web"]);
    mine.owner = Some("team-a".into());
    team_a.upsert(&mine).await.unwrap();

    let mut theirs = route("b1", &["web"]);
    theirs.owner = Some("team-a".into());
    let err = team_a.upsert(&theirs).await.unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    let err = team_a
        .delete(gatehouse_control_plane::model::Kind::Route, "b1")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    let err = team_a
        .apply(&team("team-b", &["b1"]), APPLY)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    // Sharing is the operators' call.
    mine.shared = true;
    let err = team_a.upsert(&mine).await.unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    assert_eq!(store.load().await.unwrap().routes.len(), 2);
}

async fn history_records_and_filters_owners(store: Store) {
    store.apply(&operators(), APPLY).await.unwrap();
    store.apply(&team("team-a", &["a1"]), APPLY).await.unwrap();
    store.apply(&team("team-b", &["b1"]), APPLY).await.unwrap();
    let all = store.history(10, None, None).await.unwrap();
    let owners: Vec<Vec<String>> = all.iter().map(|v| v.owners.clone()).collect();
    assert_eq!(owners, [vec!["team-b"], vec!["team-a"], vec![]]);
    let a = store.history(10, None, Some("team-a")).await.unwrap();
    assert_eq!(a.iter().map(|v| v.version).collect::<Vec<_>>(), [2]);
    assert!(store.history(10, None, Some("%")).await.unwrap().is_empty());
}

async fn references_across_owners_need_sharing(store: Store) {
    let mut ops = operators();
    ops.services[0].shared = false;
    store.apply(&ops, APPLY).await.unwrap();
    let err = store
        .apply(&team("team-a", &["a1"]), APPLY)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("which is not shared"),
        "a team's route cannot use the operators' unshared service: {err}"
    );
    assert!(store.load().await.unwrap().routes.is_empty());
}

store_suite!(
    scoped_applies_prune_only_their_owner,
    scoped_writers_change_only_their_own,
    history_records_and_filters_owners,
    references_across_owners_need_sharing,
);
