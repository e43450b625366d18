//! `gatehousectl` against a real control plane and a real Envoy: what CI
//! pipelines do (diff on a pull request, apply on merge).

use std::path::Path;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant,
    ctl::{assert_no_changes, ctl},
    free_port, gatehouse_bin, scratch_dir,
};

fn document(dir: &Path, name: &str, upstream: &Upstream, routes: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "services:\n  - name: web\n    endpoints:\n      - host: 127.0.0.1\n        port: {}\nroutes:\n",
        upstream.addr.port()
    );
    for (route, prefix) in routes {
        yaml += &format!(
            "  - name: {route}\n    match:\n      path_prefix: {prefix}\n    destination:\n      service: web\n"
        );
    }
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write document");
    path.display().to_string()
}

#[tokio::test]
async fn diff_apply_prune_through_envoy() {
    let dir = scratch_dir("gatehouse_cli");
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        validate_with_envoy: true,
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let web = Upstream::start("web").await;

    // A pull request: diff shows everything, with --exit-code 1.
    let v1 = document(
        &dir,
        "v1.yaml",
        &web,
        &[("main", "/a"), ("extra", "/extra")],
    );
    let diff = ctl(&cp, &["diff", "-f", &v1, "--exit-code"]).await;
    assert_eq!(diff.code, 1, "{}{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains("+ create route main"),
        "{}",
        diff.stdout
    );

    // Merge: apply, then the diff is empty and Envoy serves it.
    let apply = ctl(&cp, &["apply", "-f", &v1]).await;
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert!(
        apply
            .stdout
            .contains("applied 3 changes (config version 1)"),
        "{}",
        apply.stdout
    );
    let again = ctl(&cp, &["diff", "-f", &v1, "--exit-code"]).await;
    assert_eq!((again.code, again.stdout.as_str()), (0, "no changes\n"));
    envoy.until_status("/a/1", 200).await;

    // Change one route: the diff shows exactly that route and field.
    let v2 = document(
        &dir,
        "v2.yaml",
        &web,
        &[("main", "/b"), ("extra", "/extra")],
    );
    let diff = ctl(&cp, &["diff", "-f", &v2]).await;
    assert_eq!(diff.code, 0);
    assert!(
        diff.stdout.starts_with("~ update route main\n"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("-   path_prefix: /a") && diff.stdout.contains("+   path_prefix: /b"),
        "{}",
        diff.stdout
    );
    assert_eq!(
        diff.stdout.matches("update").count(),
        1,
        "only one resource changes: {}",
        diff.stdout
    );
    let machine = ctl(&cp, &["diff", "-f", &v2, "-o", "json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&machine.stdout).expect("json output");
    assert_eq!(parsed["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(ctl(&cp, &["apply", "-f", &v2]).await.code, 0);
    envoy.until_status("/b/1", 200).await;
    envoy.until_status("/a/1", 404).await;

    // Dropping a route from the document deletes it only with --prune.
    let v3 = document(&dir, "v3.yaml", &web, &[("main", "/b")]);
    let kept = ctl(&cp, &["diff", "-f", &v3, "--exit-code"]).await;
    assert_eq!(kept.code, 0, "without --prune nothing is deleted");
    let pruned = ctl(&cp, &["diff", "-f", &v3, "--prune"]).await;
    assert!(
        pruned.stdout.starts_with("- delete route extra"),
        "{}",
        pruned.stdout
    );
    assert_eq!(ctl(&cp, &["apply", "-f", &v3, "--prune"]).await.code, 0);
    envoy.until_status("/extra", 404).await;

    // Export round-trips: applying it changes nothing.
    let export = ctl(&cp, &["export"]).await;
    let exported = dir.join("exported.yaml");
    std::fs::write(&exported, &export.stdout).expect("write export");
    assert_no_changes(&cp, &[], exported.to_str().expect("utf-8")).await;
    cp.assert_no_nacks().await;
}

#[tokio::test]
async fn invalid_documents_exit_3_and_change_nothing() {
    let dir = scratch_dir("gatehouse_cli_bad");
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions::new(proxy_port)).await;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let cases = [
        (write("broken.yaml", "services: [\n"), "line 1"),
        (
            write("unknown.yaml", "routes:\n  - name: r\n    colour: red\n"),
            "routes[0].colour",
        ),
        (
            write(
                "dangling.yaml",
                "routes:\n  - name: r\n    match: {path_prefix: /}\n    destination: {service: nowhere}\n",
            ),
            "routes[0].destination.service",
        ),
        (
            write("list.yaml", "- just\n- a list\n"),
            "must be a mapping",
        ),
        (
            // Valid on its own; refused by the pre-commit check.
            write(
                "clash.yaml",
                &format!(
                    "gateways:\n  - name: clash\n    address: 127.0.0.1\n    port: {proxy_port}\n"
                ),
            ),
            "both bind",
        ),
        (
            dir.join("missing.yaml").display().to_string(),
            "cannot read",
        ),
    ];
    for (path, expected) in &cases {
        let out = ctl(&cp, &["apply", "-f", path]).await;
        assert_eq!(out.code, 3, "{path}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{path}: expected {expected:?} in {}",
            out.stderr
        );
    }
    assert_eq!(cp.version().await, 0, "nothing was applied");
    let usage = ctl(&cp, &["apply"]).await;
    assert_eq!(usage.code, 2, "usage errors exit 2");
}

/// `gatehousectl [extra] export` against a port nobody listens on.
async fn export_from_nowhere(extra: &[&str]) -> std::process::Output {
    let server = format!("http://127.0.0.1:{}", free_port());
    tokio::process::Command::new(gatehouse_bin("gatehousectl"))
        .args(extra)
        .args(["--server", &server, "export"])
        .output()
        .await
        .expect("gatehousectl runs")
}

#[tokio::test]
async fn unreachable_server_exits_4() {
    let out = export_from_nowhere(&[]).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));

    // The same error as one JSON line with --log-format json.
    let out = export_from_nowhere(&["--log-format", "json"]).await;
    assert_eq!(out.status.code(), Some(4));
    let line: serde_json::Value =
        serde_json::from_slice(&out.stderr).expect("one JSON object on stderr");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach")),
        "{line}"
    );
}

#[tokio::test]
async fn the_example_document_is_valid() {
    let cp = ControlPlane::start(ControlPlaneOptions::new(free_port())).await;
    let example = gatehouse_e2e::workspace_root().join("examples/gateway.yaml");
    let out = ctl(
        &cp,
        &["apply", "--dry-run", "-f", example.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("would apply 9 changes"),
        "{}",
        out.stdout
    );
}

/// History names who changed what; rolling back restores the previous
/// behaviour through Envoy, as a new version; a stale --if-version is refused.
#[tokio::test]
async fn history_and_rollback_through_envoy() {
    let dir = scratch_dir("gatehouse_cli_rollback");
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions::new(proxy_port)).await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::Delta).await;
    let web = Upstream::start("web").await;

    let v1 = document(&dir, "v1.yaml", &web, &[("main", "/old")]);
    let out = ctl(&cp, &["--actor", "alice", "apply", "-f", &v1]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    envoy.until_status("/old", 200).await;
    let v2 = document(&dir, "v2.yaml", &web, &[("main", "/new")]);
    let stale = ctl(&cp, &["apply", "-f", &v2, "--if-version", "0"]).await;
    assert_eq!(
        stale.code, 3,
        "a stale version is refused: {}",
        stale.stderr
    );
    assert!(stale.stderr.contains("not 0"), "{}", stale.stderr);
    let out = ctl(
        &cp,
        &["--actor", "bob", "apply", "-f", &v2, "--if-version", "1"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    envoy.until_status("/new", 200).await;
    envoy.until_status("/old", 404).await;

    let history = ctl(&cp, &["history"]).await;
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert!(
        lines[1].contains("bob") && lines[1].contains("update route main"),
        "{}",
        history.stdout
    );
    assert!(
        lines[2].contains("alice") && lines[2].contains("create service web"),
        "{}",
        history.stdout
    );

    let rollback = ctl(&cp, &["--actor", "carol", "rollback", "--to", "1"]).await;
    assert_eq!(rollback.code, 0, "{}", rollback.stderr);
    assert!(
        rollback
            .stdout
            .contains("rolled back to version 1: 1 change (config version 3)"),
        "{}",
        rollback.stdout
    );
    envoy.until_status("/old", 200).await;
    envoy.until_status("/new", 404).await;
    let history = ctl(&cp, &["history", "-o", "json"]).await;
    let versions: serde_json::Value = serde_json::from_str(&history.stdout).expect("json");
    assert_eq!(versions[0]["source"], "rollback");
    assert_eq!(versions[0]["actor"], "carol");
    let missing = ctl(&cp, &["rollback", "--to", "42"]).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    cp.assert_no_nacks().await;
}

/// With a bootstrap token every call needs a token; roles decide what it may
/// do; the history names the token.
#[tokio::test]
async fn admin_tokens_and_roles_from_the_cli() {
    let bootstrap = "bootstrap-secret-for-the-e2e-test-0123456789";
    let mut options = ControlPlaneOptions::new(free_port());
    options.admin_token = Some(bootstrap.into());
    let cp = ControlPlane::start(options).await;
    let dir = scratch_dir("gatehouse_cli_tokens");
    let web = Upstream::start("web").await;
    let doc = document(&dir, "doc.yaml", &web, &[("main", "/")]);

    let anonymous = ctl(&cp, &["export"]).await;
    assert_eq!(anonymous.code, 3, "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("admin token is required"),
        "{}",
        anonymous.stderr
    );

    let mut tokens = Vec::new();
    for (name, role) in [("reader", "viewer"), ("deployer", "editor")] {
        let out = ctl(
            &cp,
            &[
                "--token", bootstrap, "tokens", "create", name, "--role", role,
            ],
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let token = out.stdout.lines().last().unwrap_or_default().to_owned();
        assert!(token.starts_with("ghadm_"), "{}", out.stdout);
        tokens.push(token);
    }
    let (reader, deployer) = (&tokens[0], &tokens[1]);
    let denied = ctl(&cp, &["--token", reader, "apply", "-f", &doc]).await;
    assert_eq!(denied.code, 3, "a viewer cannot apply: {}", denied.stderr);
    assert!(denied.stderr.contains("needs editor"), "{}", denied.stderr);
    assert_eq!(
        ctl(&cp, &["--token", reader, "diff", "-f", &doc])
            .await
            .code,
        3,
        "a dry run is a write request too"
    );
    let applied = ctl(
        &cp,
        &[
            "--token",
            deployer,
            "--actor",
            "someone-else",
            "apply",
            "-f",
            &doc,
        ],
    )
    .await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let history = ctl(&cp, &["--token", reader, "history", "-o", "json"]).await;
    let versions: serde_json::Value = serde_json::from_str(&history.stdout).expect("json");
    assert_eq!(versions[0]["actor"], "deployer");

    let listed = ctl(&cp, &["--token", bootstrap, "tokens", "list"]).await;
    assert!(listed.stdout.contains("deployer") && !listed.stdout.contains(deployer.as_str()));
    assert_eq!(
        ctl(&cp, &["--token", bootstrap, "tokens", "revoke", "deployer"])
            .await
            .code,
        0
    );
    assert_eq!(
        ctl(&cp, &["--token", deployer, "export"]).await.code,
        3,
        "revoked at once"
    );
}

#[tokio::test]
async fn admin_api_off_loopback_without_a_token_refuses_to_start() {
    let out = tokio::process::Command::new(gatehouse_bin("gatehouse-control-plane"))
        .args([
            "--admin-addr",
            "0.0.0.0:0",
            "--xds-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(scratch_dir("gatehouse_refuse"))
        .output()
        .await
        .expect("control plane runs");
    assert_eq!(out.status.code(), Some(64));
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("refusing to serve the admin API"), "{log}");
}

#[tokio::test]
async fn api_keys_from_the_cli() {
    let cp = ControlPlane::start(ControlPlaneOptions::new(free_port())).await;
    let missing = ctl(&cp, &["keys", "create", "nobody"]).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let dir = scratch_dir("gatehouse_cli_keys");
    let doc = dir.join("consumers.yaml");
    std::fs::write(&doc, "consumers:\n  - name: alice\n    plan: pro\n").expect("write");
    let applied = ctl(&cp, &["apply", "-f", &doc.display().to_string()]).await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);

    let created = ctl(
        &cp,
        &[
            "-o",
            "json",
            "keys",
            "create",
            "alice",
            "--scope",
            "orders:read",
            "--ttl-seconds",
            "3600",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let key: serde_json::Value = serde_json::from_str(&created.stdout).expect("json");
    let (id, secret) = (
        key["id"].as_str().expect("id"),
        key["key"].as_str().expect("key"),
    );
    assert!(secret.starts_with("gk_"));
    assert!(key["expires_at_ms"].is_i64());

    let listed = ctl(&cp, &["keys", "list", "alice"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains(id) && !listed.stdout.contains(&secret[16..]),
        "{}",
        listed.stdout
    );

    let rotated = ctl(
        &cp,
        &["keys", "rotate", "alice", id, "--grace-seconds", "60"],
    )
    .await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    assert!(
        rotated.stdout.contains("not shown again"),
        "{}",
        rotated.stdout
    );
    let revoked = ctl(&cp, &["keys", "revoke", "alice", id]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    let statuses = ctl(&cp, &["-o", "json", "keys", "list", "alice"]).await;
    let keys: serde_json::Value = serde_json::from_str(&statuses.stdout).expect("json");
    let mut status: Vec<&str> = keys
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["status"].as_str().unwrap_or(""))
        .collect();
    status.sort_unstable();
    assert_eq!(status, ["active", "revoked"]);
    let bad = ctl(&cp, &["keys", "create", "alice", "--scope", "has space"]).await;
    assert_eq!(bad.code, 3, "{}", bad.stderr);
    assert!(bad.stderr.contains("scopes[0]"), "{}", bad.stderr);
}
