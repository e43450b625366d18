//! The shipped Prometheus configuration and rules pass `promtool`: the
//! configuration and rules check, and the rules' unit tests (one case per
//! alert, and the healthy cases that must stay quiet).

use std::process::Command;

use gatehouse_e2e::workspace_root;

fn promtool(args: &[&str]) {
    let dir = workspace_root().join("deploy/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_configuration_and_rules_pass_promtool_check() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "gatehouse.rules.yml"]);
}

#[test]
fn every_alert_passes_its_promtool_unit_tests() {
    promtool(&["test", "rules", "gatehouse.rules.test.yml"]);
}
