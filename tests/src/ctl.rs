//! `gatehousectl`, the real binary, run against a control plane as a CI
//! pipeline runs it: exit code, stdout and stderr.

use crate::{ControlPlane, gatehouse_bin};

/// What one `gatehousectl` run printed and how it exited.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `gatehousectl args…` against `cp` (no colours).
pub async fn ctl(cp: &ControlPlane, args: &[&str]) -> Ctl {
    let output = tokio::process::Command::new(gatehouse_bin("gatehousectl"))
        .args(args)
        .env("GATEHOUSE_SERVER", format!("http://{}", cp.admin))
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("gatehousectl runs");
    Ctl {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into(),
        stderr: String::from_utf8_lossy(&output.stderr).into(),
    }
}

/// `gatehousectl [before…] diff -f document --prune --exit-code` finds
/// nothing to change: the document is what is stored.
pub async fn assert_no_changes(cp: &ControlPlane, before: &[&str], document: &str) {
    let args = [before, &["diff", "-f", document, "--prune", "--exit-code"]].concat();
    let out = ctl(cp, &args).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no changes\n"),
        "{}",
        out.stderr
    );
}
