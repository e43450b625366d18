//! The stream state machine on its own: subscriptions, ordering, ACK/NACK.

use super::*;
use crate::xds::snapshot::SnapshotParts;
use gatehouse_proto::protobuf::Any;

fn res(name: &str, content: &str, clusters: &[&str]) -> XdsResource {
    XdsResource::new(
        name,
        Any {
            type_url: String::new(),
            value: content.as_bytes().to_vec(),
        },
        clusters.iter().map(|c| c.to_string()).collect(),
    )
}

/// Clusters (all EDS), one listener, one route config pointing at `routed`.
fn snapshot(version: u64, clusters: &[&str], routed: &[&str]) -> Snapshot {
    Snapshot::new(
        version,
        SnapshotParts {
            clusters: clusters.iter().map(|c| res(c, c, &[])).collect(),
            eds_clusters: clusters.iter().map(|c| c.to_string()).collect(),
            endpoints: clusters.iter().map(|c| res(c, c, &[])).collect(),
            listeners: vec![res("http", "listener", &[])],
            routes: vec![res("http", &format!("{routed:?}"), routed)],
            ..SnapshotParts::default()
        },
    )
    .expect("consistent")
}

fn request<'a>(kind: ResourceType, nonce: &'a str, names: Vec<&'a str>) -> Request<'a> {
    Request {
        type_url: kind.type_url(),
        response_nonce: nonce,
        subscribe: names,
        ..Request::default()
    }
}

fn kinds(pushes: &[Push]) -> Vec<ResourceType> {
    pushes.iter().map(|p| p.kind).collect()
}

fn names(push: &Push) -> Vec<&str> {
    push.resources.iter().map(|r| r.name.as_str()).collect()
}

use ResourceType::*;

/// Drives a SotW node to convergence the way Envoy does: ACK everything,
/// subscribe to endpoints of every cluster it holds.
fn converge(stream: &mut StreamState, snap: &Snapshot, mut pushes: Vec<Push>) -> Vec<Push> {
    let mut log = Vec::new();
    while !pushes.is_empty() {
        for push in pushes.drain(..) {
            let subscription: Vec<String> = match push.kind {
                Cluster => push.resources.iter().map(|r| r.name.clone()).collect(),
                Listener => vec!["http".into()],
                _ => Vec::new(),
            };
            let names = match push.kind {
                Endpoint | ExtensionConfig | Route => {
                    stream.state(push.kind).names.iter().cloned().collect()
                }
                _ => Vec::new(),
            };
            let ack = request(
                push.kind,
                &push.nonce,
                names.iter().map(String::as_str).collect(),
            );
            stream.on_request(&ack);
            match push.kind {
                Cluster => {
                    let nonce = stream
                        .state(Endpoint)
                        .last_nonce
                        .clone()
                        .unwrap_or_default();
                    let names = subscription.iter().map(String::as_str).collect();
                    stream.on_request(&request(Endpoint, &nonce, names));
                }
                Listener => {
                    stream.on_request(&request(Route, "", vec!["http"]));
                }
                _ => {}
            }
            log.push(push);
        }
        pushes = stream.pushes(snap);
    }
    log
}

fn connect(variant: Variant, snap: &Snapshot) -> (StreamState, Vec<Push>) {
    let mut stream = StreamState::new(variant);
    stream.on_request(&request(Cluster, "", vec![]));
    stream.on_request(&request(Listener, "", vec![]));
    let pushes = stream.pushes(snap);
    let log = converge(&mut stream, snap, pushes);
    (stream, log)
}

#[test]
fn initial_sync_orders_clusters_endpoints_listeners_routes() {
    let snap = snapshot(1, &["a"], &["a"]);
    let (stream, log) = connect(Variant::StateOfTheWorld, &snap);
    assert_eq!(kinds(&log), vec![Cluster, Endpoint, Listener, Route]);
    assert_eq!(stream.holds(Route), vec!["http"]);
}

#[test]
fn routes_wait_until_new_cluster_is_warm() {
    let v1 = snapshot(1, &["a"], &["a"]);
    let (mut stream, _) = connect(Variant::StateOfTheWorld, &v1);
    let v2 = snapshot(2, &["a", "b"], &["b"]);
    let pushes = stream.pushes(&v2);
    // The route to "b" is held back until "b" is acknowledged and warmed.
    assert_eq!(kinds(&pushes), vec![Cluster]);
    let log = converge(&mut stream, &v2, pushes);
    assert_eq!(kinds(&log), vec![Cluster, Endpoint, Route]);
}

/// One static cluster, a listener, a filter configuration (ECDS) and routes.
fn with_filter(version: u64, filter: &str, routes: &str) -> Snapshot {
    Snapshot::new(
        version,
        SnapshotParts {
            clusters: vec![res("a", "a", &[])],
            extension_configs: vec![res("jwt", filter, &[])],
            listeners: vec![res("http", "listener", &[])],
            routes: vec![res("http", routes, &["a"])],
            ..SnapshotParts::default()
        },
    )
    .expect("consistent")
}

#[test]
fn routes_wait_for_the_filter_configurations_they_name() {
    let v1 = with_filter(1, "providers-1", "routes-1");
    let (mut stream, _) = connect(Variant::StateOfTheWorld, &v1);
    // Envoy asks for the filter configuration once it holds the listener.
    stream.on_request(&request(ExtensionConfig, "", vec!["jwt"]));
    let pushes = stream.pushes(&v1);
    let log = converge(&mut stream, &v1, pushes);
    assert_eq!(kinds(&log), vec![ExtensionConfig]);
    assert_eq!(stream.holds(ExtensionConfig), vec!["jwt"]);

    // Routes naming a new part of the configuration wait for it.
    let v2 = with_filter(2, "providers-2", "routes-2");
    let pushes = stream.pushes(&v2);
    assert_eq!(kinds(&pushes), vec![ExtensionConfig], "routes held back");
    let log = converge(&mut stream, &v2, pushes);
    assert_eq!(kinds(&log), vec![ExtensionConfig, Route]);
}

#[test]
fn removed_cluster_stays_until_routes_moved_off_it() {
    let v1 = snapshot(1, &["a"], &["a"]);
    let (mut stream, _) = connect(Variant::StateOfTheWorld, &v1);
    // One change: new cluster b, routes move to b, a is deleted.
    let v2 = snapshot(2, &["b"], &["b"]);
    let first = stream.pushes(&v2);
    assert_eq!(kinds(&first), vec![Cluster]);
    assert_eq!(
        names(&first[0]),
        vec!["a", "b"],
        "a is kept while routes use it"
    );
    let log = converge(&mut stream, &v2, first);
    let last_cds = log.iter().rev().find(|p| p.kind == Cluster).expect("cds");
    assert_eq!(names(last_cds), vec!["b"], "a is removed once routes moved");
    let rds_at = log.iter().position(|p| p.kind == Route).expect("rds");
    let final_cds_at = log.iter().rposition(|p| p.kind == Cluster).expect("cds");
    assert!(
        rds_at < final_cds_at,
        "removal comes after the route update"
    );
}

#[test]
fn stale_nonce_is_ignored_and_nack_not_repushed() {
    let v1 = snapshot(1, &["a"], &["a"]);
    let (mut stream, _) = connect(Variant::StateOfTheWorld, &v1);
    let v2 = snapshot(2, &["a", "c"], &["a"]);
    let pushes = stream.pushes(&v2);
    let nonce = pushes[0].nonce.clone();
    assert_eq!(
        stream.on_request(&request(Cluster, "stale", vec![])),
        RequestOutcome::Stale(Cluster)
    );
    let nack = Request {
        error_detail: Some("bad cluster"),
        ..request(Cluster, &nonce, vec![])
    };
    let RequestOutcome::Nack { suspects, .. } = stream.on_request(&nack) else {
        panic!("expected a NACK");
    };
    let c = &v2.resources(Cluster)["c"];
    assert_eq!(
        suspects,
        vec![("c".to_string(), c.version.clone())],
        "only what changed for the node is suspect"
    );
    assert!(
        stream.pushes(&v2).is_empty(),
        "rejected content is not re-pushed"
    );
    let v3 = snapshot(3, &["a", "d"], &["a"]);
    assert_eq!(
        kinds(&stream.pushes(&v3)),
        vec![Cluster],
        "new content is pushed"
    );
}

#[test]
fn delta_sends_only_changes_and_removals() {
    let v1 = snapshot(1, &["a", "b"], &["a"]);
    let (mut stream, _) = connect(Variant::Delta, &v1);
    let v2 = snapshot(2, &["a", "c"], &["c"]);
    let pushes = stream.pushes(&v2);
    let log = converge(&mut stream, &v2, pushes);
    let cds: Vec<&Push> = log.iter().filter(|p| p.kind == Cluster).collect();
    assert_eq!(names(cds[0]), vec!["c"], "only the new cluster is sent");
    assert_eq!(cds[0].removed, Vec::<String>::new());
    let removal = cds.iter().find(|p| !p.removed.is_empty()).expect("removal");
    assert_eq!(removal.removed, vec!["b"]);
}

#[test]
fn delta_reconnect_skips_what_the_node_already_holds() {
    let v1 = snapshot(1, &["a"], &["a"]);
    let cluster_version = v1.resources(Cluster)["a"].version.clone();
    let mut stream = StreamState::new(Variant::Delta);
    stream.on_request(&Request {
        initial_versions: vec![("a", cluster_version.as_str())],
        ..request(Cluster, "", vec![])
    });
    let pushes = stream.pushes(&v1);
    assert_eq!(kinds(&pushes), vec![Cluster]);
    assert!(
        pushes[0].resources.is_empty(),
        "nothing changed: empty first answer"
    );
}

#[test]
fn a_node_gets_only_its_fleets_resources_and_sensitive_ones_only_when_secure() {
    let mut secret = res("cert_edge", "key", &[]);
    secret.sensitive = true;
    let snap = Snapshot::new(
        1,
        SnapshotParts {
            listeners: vec![
                res("everywhere", "a", &[]),
                res("internal", "b", &[]).for_fleets(vec!["internal".into()]),
                res("public", "c", &[]).for_fleets(vec!["public".into()]),
            ],
            routes: vec![res("routes_internal", "r", &[]).for_fleets(vec!["internal".into()])],
            secrets: vec![secret],
            ..SnapshotParts::default()
        },
    )
    .expect("consistent");
    let mut stream = StreamState::new(Variant::StateOfTheWorld);
    stream.set_fleet("public");
    stream.on_request(&request(Listener, "", vec![]));
    // Asking by name for another fleet's routes gets nothing.
    stream.on_request(&request(Route, "", vec!["routes_internal"]));
    stream.on_request(&request(Secret, "", vec!["cert_edge"]));
    let pushes = stream.pushes(&snap);
    let by_kind = |kind| {
        pushes
            .iter()
            .find(|p| p.kind == kind)
            .map(names)
            .unwrap_or_default()
    };
    assert_eq!(by_kind(Listener), ["everywhere", "public"]);
    assert!(by_kind(Route).is_empty());
    assert!(by_kind(Secret).is_empty(), "a plaintext stream gets no key");
    let mut secure = StreamState::new(Variant::StateOfTheWorld).secure(true);
    secure.set_fleet("internal");
    secure.on_request(&request(Secret, "", vec!["cert_edge"]));
    assert_eq!(names(&secure.pushes(&snap)[0]), ["cert_edge"]);
}
