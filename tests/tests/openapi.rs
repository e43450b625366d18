//! The admin API against its own OpenAPI document: schemathesis (from PyPI,
//! installed by scripts/test.sh) generates requests from the document and
//! must find no 5xx. Any drift between document and server shows up here too.

use std::path::PathBuf;

use gatehouse_e2e::{ControlPlane, ControlPlaneOptions, client, free_port, workspace_root};

fn schemathesis() -> PathBuf {
    std::env::var_os("GATEHOUSE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/st"))
}

#[tokio::test]
async fn fuzzing_the_admin_api_finds_no_server_error() {
    let token = "bootstrap-token-for-the-fuzz-run-0123456789";
    let mut options = ControlPlaneOptions::new(free_port());
    options.admin_token = Some(token.into());
    let cp = ControlPlane::start(options).await;
    let document: serde_json::Value = client()
        .get(cp.url("/v1/openapi.json"))
        .bearer_auth(token)
        .send()
        .await
        .expect("reachable")
        .json()
        .await
        .expect("json");
    assert_eq!(document["openapi"], "3.1.0");

    let st = schemathesis();
    assert!(
        st.exists(),
        "{} not found: run scripts/test.sh (it installs schemathesis)",
        st.display()
    );
    let output = tokio::process::Command::new(st)
        .args(["run", &cp.url("/v1/openapi.json")])
        .args([
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "7",
        ])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = report.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{}\n{}",
        tail.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{}", tail.join("\n"));
}
