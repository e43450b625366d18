//! A newcomer's first run: a control plane on a fresh data directory takes
//! writes the moment it is reachable, and `scripts/run.sh` on a fresh data
//! directory comes up on the first try with curl lines that work.

use std::{process::Stdio, time::Duration};

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, client, eventually, free_port, scratch_dir,
};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// `/healthz` answers before the store is prepared; a write sent right then
/// waits for the start-up instead of failing with "store unavailable".
#[tokio::test]
async fn a_fresh_control_plane_takes_writes_the_moment_it_is_reachable() {
    let mut options = ControlPlaneOptions::new(free_port());
    options.wait_ready = false;
    options.validate_with_envoy = true;
    let cp = ControlPlane::start(options).await;
    eventually(Duration::from_secs(20), "/healthz", || async {
        cp.get("/healthz").await.status().is_success()
    })
    .await;
    let write = cp
        .put(
            "/v1/services/demo",
            json!({"endpoints": [{"host": "127.0.0.1", "port": 9}]}),
        )
        .await;
    let status = write.status();
    let body = write.text().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {body}");
    let route = cp
        .put(
            "/v1/routes/demo",
            json!({"match": {"path_prefix": "/demo"}, "destination": {"service": "demo"}}),
        )
        .await;
    assert!(route.status().is_success(), "{}", route.status());
    eventually(Duration::from_secs(20), "/readyz", || async {
        cp.get("/readyz").await.status().is_success()
    })
    .await;
}

/// Runs a printed `curl -i …` line: the status it gets.
async fn status_of(line: &str) -> String {
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} -s -o /dev/null -w '%{{http_code}}'",
            line.replacen("curl -i", "curl", 1)
        ))
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Runs `scripts/run.sh` exactly as the README says (on the default ports,
/// with a fresh data directory in place of `.gatehouse/`), then every curl
/// line it prints, then Ctrl-C.
#[tokio::test]
async fn run_script_works_on_a_fresh_data_dir_and_its_curl_lines_work() {
    let data = scratch_dir("gatehouse_run");
    let root = gatehouse_e2e::workspace_root();
    let mut script = Command::new("bash")
        .arg(root.join("scripts/run.sh"))
        .env("GATEHOUSE_DATA_DIR", &data)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("bash runs scripts/run.sh");
    let stdout = script.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let came_up = tokio::time::timeout(Duration::from_secs(300), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let started = line.contains("curl -i -H");
            printed.push(line);
            if started {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(came_up, Ok(true)),
        "run.sh did not come up; it printed:\n{}",
        printed.join("\n")
    );
    let curls: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 3, "{printed:?}");
    let expected = [200, 401, 200];
    for (line, want) in curls.iter().zip(expected) {
        let command = line.split(" #").next().unwrap_or(line);
        assert_eq!(status_of(command).await, want.to_string(), "{command}");
    }
    // The real-time lines: publishing to the demo topic is accepted.
    let publish = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("/v1/topics/demo/messages") {
                return Some(line.trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("run.sh prints how to publish");
    assert_eq!(status_of(&publish).await, "202", "{publish}");

    // Ctrl-C stops everything: the script exits and the ports are free again.
    let pid = script.id().expect("script pid");
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
    let exited = tokio::time::timeout(Duration::from_secs(30), script.wait()).await;
    assert!(exited.is_ok(), "run.sh did not stop on Ctrl-C");
    let http = client();
    eventually(Duration::from_secs(15), "the gateway to stop", || {
        let http = http.clone();
        async move {
            http.get("http://127.0.0.1:8001/healthz")
                .send()
                .await
                .is_err()
        }
    })
    .await;
}
