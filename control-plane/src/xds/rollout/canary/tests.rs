use super::*;
use crate::xds::rollout::analysis::Analysis;
use crate::xds::rollout::tests::snapshot;

fn place(id: &str, cluster: &str) -> Placement {
    Placement {
        id: id.into(),
        cluster: cluster.into(),
        zone: String::new(),
    }
}

fn nodes() -> Vec<Placement> {
    vec![place("a", "canary"), place("b", "edge"), place("c", "edge")]
}

fn served_to(rollout: &Rollout, node: &str, cluster: &str) -> Option<u64> {
    let newest = rollout.watch().borrow().clone()?;
    Some(match rollout.pin().borrow().as_ref() {
        Some(pin) => pin.snapshot_for(&place(node, cluster), &newest).version,
        None => newest.version,
    })
}

fn by_cluster(cluster: &str) -> Selector {
    Selector {
        clusters: vec![cluster.into()],
        ..Selector::default()
    }
}

#[test]
fn only_canary_nodes_get_new_versions_until_promoted() {
    let rollout = Rollout::default();
    rollout.offer(snapshot(1, "one"));
    let started = rollout
        .start_canary(by_cluster("canary"), Analysis::default(), &nodes())
        .expect("started");
    assert_eq!(started.stable_version, 1);
    rollout.offer(snapshot(2, "two"));
    assert_eq!(served_to(&rollout, "a", "canary"), Some(2));
    assert_eq!(served_to(&rollout, "b", "edge"), Some(1));
    assert_eq!(rollout.canary().map(|c| c.canary_version), Some(Some(2)));
    let promoted = rollout.promote_canary().expect("promoted");
    assert_eq!(promoted.phase, Phase::Promoted);
    assert_eq!(served_to(&rollout, "b", "edge"), Some(2));
    assert!(matches!(
        rollout.promote_canary(),
        Err(CanaryError::NotRunning(Some(_)))
    ));
}

#[test]
fn an_abort_sends_canary_nodes_back_and_holds_the_change() {
    let rollout = Rollout::default();
    rollout.offer(snapshot(1, "one"));
    rollout
        .start_canary(by_cluster("canary"), Analysis::default(), &nodes())
        .expect("started");
    rollout.offer(snapshot(2, "two"));
    let aborted = rollout.abort_canary("errors").expect("aborted");
    assert_eq!(
        (aborted.phase, aborted.reason.as_deref()),
        (Phase::Aborted, Some("errors"))
    );
    assert_eq!(served_to(&rollout, "a", "canary"), Some(1));
    assert_eq!(served_to(&rollout, "b", "edge"), Some(1));
    // A later version still carrying the canary's change is held back...
    rollout.offer(snapshot(3, "two"));
    assert_eq!(served_to(&rollout, "b", "edge"), Some(1));
    // ...one without it rolls out.
    rollout.offer(snapshot(4, "fixed"));
    assert_eq!(served_to(&rollout, "b", "edge"), Some(4));
    let err = rollout.promote_canary().unwrap_err();
    assert!(err.to_string().contains("aborted: errors"), "{err}");
}

#[test]
fn a_nack_during_a_canary_aborts_it() {
    let rollout = Rollout::default();
    rollout.offer(snapshot(1, "one"));
    rollout
        .start_canary(by_cluster("canary"), Analysis::default(), &nodes())
        .expect("started");
    let bad = snapshot(2, "bad");
    rollout.offer(bad.clone());
    let route = &bad.resources(ResourceType::Route)["routes"];
    rollout.reject(
        "a",
        ResourceType::Route,
        "2",
        &[("routes".into(), route.version.clone())],
        "no",
    );
    let canary = rollout.canary().expect("a canary");
    assert_eq!(canary.phase, Phase::Aborted);
    assert!(
        canary
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("node a rejected version 2")),
        "{canary:?}"
    );
    assert_eq!(served_to(&rollout, "a", "canary"), Some(1));
}

#[test]
fn starting_needs_a_matching_node_and_a_steady_fleet() {
    let rollout = Rollout::default();
    assert_eq!(
        rollout.start_canary(by_cluster("canary"), Analysis::default(), &nodes()),
        Err(CanaryError::NotSteady)
    );
    rollout.offer(snapshot(1, "one"));
    assert_eq!(
        rollout.start_canary(by_cluster("nowhere"), Analysis::default(), &nodes()),
        Err(CanaryError::NoNodeMatches(3))
    );
    rollout
        .start_canary(by_cluster("canary"), Analysis::default(), &nodes())
        .expect("started");
    assert_eq!(
        rollout.start_canary(by_cluster("canary"), Analysis::default(), &nodes()),
        Err(CanaryError::Running(1))
    );
}

#[test]
fn selectors_match_by_cluster_id_or_share() {
    let selector = Selector {
        percent: Some(50),
        ..Selector::default()
    };
    let matched = (0..1000)
        .filter(|i| selector.matches(&place(&format!("node-{i}"), "edge")))
        .count();
    assert!((400..600).contains(&matched), "{matched}");
    assert!(Selector::default().problems().len() == 1);
    let bad = Selector {
        percent: Some(100),
        ..Selector::default()
    };
    assert_eq!(bad.problems()[0].0, "selector.percent");
    let by_id = Selector {
        nodes: vec!["x".into()],
        ..Selector::default()
    };
    assert!(by_id.matches(&place("x", "")) && !by_id.matches(&place("y", "")));
    let by_zone = Selector {
        zones: vec!["eu-1a".into()],
        ..Selector::default()
    };
    let mut zoned = place("z", "edge");
    assert!(!by_zone.matches(&zoned));
    zoned.zone = "eu-1a".into();
    assert!(by_zone.matches(&zoned));
}
