//! Many teams, one gateway: two teams' CI pipelines apply and prune their
//! own documents in parallel with tokens scoped to their owner, through the
//! real `gatehousectl`, a real control plane and a real Envoy. Neither sees,
//! changes nor deletes the other's routes; a route capturing another team's
//! paths is refused with both names; the history filters by owner.

use std::path::Path;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant,
    ctl::{Ctl, assert_no_changes, ctl},
    free_port, reqwest, scratch_dir,
};
use serde_json::{Value, json};

const BOOTSTRAP: &str = "bootstrap-secret-for-the-ownership-test-0123";

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write document");
    path.display().to_string()
}

/// A team's document: `owner` at the top, its routes under `/<prefix>/<n>`
/// to the shared service.
fn team_document(dir: &Path, owner: &str, prefix: &str, routes: &[u32]) -> String {
    let mut yaml = format!("owner: {owner}\nroutes:\n");
    for n in routes {
        yaml += &format!(
            "  - name: {prefix}-{n}\n    labels: {{app: {prefix}}}\n    match:\n      path_prefix: /{prefix}/{n}\n    destination:\n      service: web\n"
        );
    }
    write(dir, &format!("{owner}-{}.yaml", routes.len()), &yaml)
}

async fn token(cp: &ControlPlane, name: &str, owner: &str, read: &str) -> String {
    let out = ctl(
        cp,
        &[
            "--token", BOOTSTRAP, "tokens", "create", name, "--role", "editor", "--owner", owner,
            "--read", read,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.lines().last().unwrap_or_default().to_owned()
}

fn ok(out: &Ctl) {
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

fn refused(out: &Ctl, needle: &str) {
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(needle),
        "wanted {needle:?}: {}",
        out.stderr
    );
}

async fn routes(cp: &ControlPlane) -> Vec<String> {
    let routes: Value = cp.get("/v1/routes").await.json().await.expect("json");
    routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn two_teams_apply_and_prune_in_parallel_without_touching_each_other() {
    let dir = scratch_dir("gatehouse_owners");
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.admin_token = Some(BOOTSTRAP.into());
    options.validate_with_envoy = true;
    let cp = ControlPlane::start(options).await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let web = Upstream::start("web").await;

    // The operators: two teams and a service both may use.
    let operators = write(
        &dir,
        "operators.yaml",
        &format!(
            "owners:\n  - name: team-a\n  - name: team-b\nservices:\n  - name: web\n    shared: true\n    endpoints:\n      - host: 127.0.0.1\n        port: {}\n",
            web.addr.port()
        ),
    );
    ok(&ctl(
        &cp,
        &["--token", BOOTSTRAP, "apply", "-f", &operators, "--prune"],
    )
    .await);
    let ci_a = token(&cp, "ci-a", "team-a", "all").await;
    let ci_b = token(&cp, "ci-b", "team-b", "own").await;

    // Three rounds of both pipelines at once, each with --prune, each
    // round a different set of routes.
    for round in [vec![1, 2, 3], vec![2, 3, 4, 5], vec![5, 6]] {
        let doc_a = team_document(&dir, "team-a", "a", &round);
        let doc_b = team_document(&dir, "team-b", "b", &round);
        let args_a = ["--token", &ci_a, "apply", "-f", &doc_a, "--prune"];
        let args_b = ["--token", &ci_b, "apply", "-f", &doc_b, "--prune"];
        let (a, b) = tokio::join!(ctl(&cp, &args_a), ctl(&cp, &args_b));
        ok(&a);
        ok(&b);
        let mut expected: Vec<String> = round
            .iter()
            .flat_map(|n| [format!("a-{n}"), format!("b-{n}")])
            .collect();
        expected.sort();
        assert_eq!(
            routes(&cp).await,
            expected,
            "each team has exactly its latest routes"
        );
        // Each sees only its own: its document has nothing left to change.
        assert_no_changes(&cp, &["--token", &ci_a], &doc_a).await;
    }
    envoy.until_status("/a/6/x", 200).await;
    envoy.until_status("/b/5/x", 200).await;
    envoy.until_status("/a/1/x", 404).await;

    // The operators' document, pruned, leaves the teams' routes alone.
    ok(&ctl(
        &cp,
        &["--token", BOOTSTRAP, "apply", "-f", &operators, "--prune"],
    )
    .await);
    assert_eq!(routes(&cp).await.len(), 4);

    // A token of one team cannot change the other's.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let stolen = http
        .put(cp.url("/v1/routes/b-5"))
        .bearer_auth(&ci_a)
        .json(&json!({"match": {"path_prefix": "/b/5"}, "destination": {"service": "web"}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(stolen.status().as_u16(), 403);
    let deleted = http
        .delete(cp.url("/v1/routes/b-5"))
        .bearer_auth(&ci_a)
        .send()
        .await
        .expect("answered");
    assert_eq!(deleted.status().as_u16(), 403);
    let doc_b = team_document(&dir, "team-b", "b", &[9]);
    refused(
        &ctl(&cp, &["--token", &ci_a, "apply", "-f", &doc_b, "--prune"]).await,
        "cannot change resources of owner team-b",
    );
    refused(
        &ctl(&cp, &["--token", &ci_a, "rollback", "--to", "1"]).await,
        "needs an unscoped token",
    );

    // A team's document naming the other's route: 409 naming the owner.
    let grab = write(
        &dir,
        "grab.yaml",
        "owner: team-a\nroutes:\n  - name: b-5\n    match:\n      path_prefix: /a/elsewhere\n    destination:\n      service: web\n",
    );
    refused(
        &ctl(&cp, &["--token", &ci_a, "apply", "-f", &grab]).await,
        "route \"b-5\" belongs to owner team-b",
    );

    // A route that would capture the other team's paths: 422 with both
    // routes and owners, nothing stored.
    let capture = write(
        &dir,
        "capture.yaml",
        "owner: team-b\nroutes:\n  - name: b-5\n    match:\n      path_prefix: /b/5\n    destination:\n      service: web\n  - name: b-6\n    match:\n      path_prefix: /b/6\n    destination:\n      service: web\n  - name: b-sneaky\n    match:\n      path_prefix: /a/6/admin\n    destination:\n      service: web\n",
    );
    let out = ctl(&cp, &["--token", &ci_b, "apply", "-f", &capture]).await;
    refused(
        &out,
        "route \"a-6\" (owner team-a) and route \"b-sneaky\" (owner team-b)",
    );
    assert!(!routes(&cp).await.contains(&"b-sneaky".to_owned()));

    // Reads: team-b's token reads only its own (and the shared service).
    let listed = ctl(&cp, &["--token", &ci_b, "get", "routes", "-o", "json"]).await;
    let listed: Value = serde_json::from_str(&listed.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let hidden = ctl(&cp, &["--token", &ci_b, "get", "routes", "a-6"]).await;
    assert_eq!(
        hidden.code, 3,
        "another team's route is not found: {}",
        hidden.stderr
    );
    let services = ctl(&cp, &["--token", &ci_b, "get", "services", "-o", "json"]).await;
    assert!(services.stdout.contains("\"web\""), "{}", services.stdout);
    // team-a's token reads everything, filtered on request.
    let by_label = ctl(
        &cp,
        &[
            "--token", &ci_a, "get", "routes", "--label", "app=b", "-o", "json",
        ],
    )
    .await;
    let by_label: Value = serde_json::from_str(&by_label.stdout).expect("json");
    assert_eq!(by_label.as_array().map(Vec::len), Some(2), "{by_label}");

    // Export per owner round-trips: team-b's export is its document.
    let export = ctl(&cp, &["--token", &ci_b, "export"]).await;
    assert!(
        export.stdout.starts_with("owner: team-b\n"),
        "{}",
        export.stdout
    );
    assert!(!export.stdout.contains("a-6"), "{}", export.stdout);
    let exported = write(&dir, "exported-b.yaml", &export.stdout);
    assert_no_changes(&cp, &["--token", &ci_b], &exported).await;

    // History by owner: every version shown touched team-a.
    let history = ctl(
        &cp,
        &[
            "--token", &ci_a, "history", "--owner", "team-a", "-o", "json",
        ],
    )
    .await;
    let versions: Value = serde_json::from_str(&history.stdout).expect("json");
    let versions = versions.as_array().cloned().unwrap_or_default();
    assert_eq!(
        versions.len(),
        3,
        "three rounds changed team-a: {versions:?}"
    );
    for v in &versions {
        assert_eq!(v["owners"], json!(["team-a"]), "{v}");
    }
    // Status by owner: team-a's newest change reached the one Envoy.
    let newest = versions[0]["version"].as_u64();
    gatehouse_e2e::eventually(
        std::time::Duration::from_secs(10),
        "team-a's newest change to reach the node",
        || async {
            let out = ctl(
                &cp,
                &[
                    "--token", &ci_a, "status", "--owner", "team-a", "-o", "json",
                ],
            )
            .await;
            let status: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            status["owner"]["latest_version"].as_u64() == newest
                && status["owner"]["served"] == true
                && status["owner"]["nodes_current"] == 1
        },
    )
    .await;
    let human = ctl(&cp, &["--token", &ci_a, "status", "--owner", "team-a"]).await;
    assert!(
        human.stdout.contains("owner team-a: newest change version"),
        "{}",
        human.stdout
    );
    let human = ctl(&cp, &["--token", BOOTSTRAP, "history", "--limit", "3"]).await;
    assert!(human.stdout.contains("OWNERS"), "{}", human.stdout);
    cp.assert_no_nacks().await;
}

#[tokio::test]
async fn bad_ownership_input_is_refused_and_changes_nothing() {
    let dir = scratch_dir("gatehouse_owners_bad");
    let mut options = ControlPlaneOptions::new(free_port());
    options.admin_token = Some(BOOTSTRAP.into());
    let cp = ControlPlane::start(options).await;
    let admin = ["--token", BOOTSTRAP];
    let owners = write(&dir, "owners.yaml", "owners:\n  - name: team-a\n");
    ok(&ctl(&cp, &[&admin[..], &["apply", "-f", &owners]].concat()).await);
    let version = cp.version().await;

    // A token for an owner that does not exist.
    refused(
        &ctl(
            &cp,
            &[
                &admin[..],
                &[
                    "tokens", "create", "x", "--role", "editor", "--owner", "nobody",
                ],
            ]
            .concat(),
        )
        .await,
        "owner \"nobody\" does not exist",
    );
    // An admin token cannot be scoped.
    refused(
        &ctl(
            &cp,
            &[
                &admin[..],
                &[
                    "tokens", "create", "x", "--role", "admin", "--owner", "team-a",
                ],
            ]
            .concat(),
        )
        .await,
        "cannot be scoped",
    );
    // A document with two owners.
    let two = write(
        &dir,
        "two.yaml",
        "owner: team-a\nservices:\n  - name: s\n    owner: team-b\n",
    );
    refused(
        &ctl(&cp, &[&admin[..], &["apply", "-f", &two]].concat()).await,
        "services[0].owner",
    );
    refused(
        &ctl(
            &cp,
            &[&admin[..], &["apply", "-f", &owners, "--owner", "team-b"]].concat(),
        )
        .await,
        "owners are the operators",
    );
    // A resource naming an owner that does not exist.
    let response = cp.put("/v1/services/s", json!({"owner": "nobody"})).await;
    assert_eq!(response.status().as_u16(), 422);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], "owner", "{problem}");
    // An owner still in use, or still holding tokens, stays.
    ok(&ctl(
        &cp,
        &[
            &admin[..],
            &[
                "tokens", "create", "ci", "--role", "editor", "--owner", "team-a",
            ],
        ]
        .concat(),
    )
    .await);
    assert_eq!(cp.delete("/v1/owners/team-a").await.status().as_u16(), 409);
    assert_eq!(cp.version().await, version, "nothing changed");
}

#[tokio::test]
async fn the_team_examples_apply() {
    let cp = ControlPlane::start(ControlPlaneOptions::new(free_port())).await;
    let example = |name: &str| {
        gatehouse_e2e::workspace_root()
            .join("examples/teams")
            .join(name)
            .display()
            .to_string()
    };
    ok(&ctl(&cp, &["apply", "-f", &example("operators.yaml"), "--prune"]).await);
    let out = ctl(&cp, &["apply", "-f", &example("orders.yaml"), "--prune"]).await;
    ok(&out);
    assert!(out.stdout.contains("applied 2 changes"), "{}", out.stdout);
    // The operators' document, pruned again, leaves the team's alone.
    assert_no_changes(&cp, &[], &example("operators.yaml")).await;
}
