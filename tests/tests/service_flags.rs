//! The services' shared edges: ext-authz, ratelimit-service and the broker
//! take the same common flags, refuse an invalid configuration with exit 64
//! and a one-line reason, and log as text or JSON.

use std::time::Duration;

use gatehouse_e2e::{eventually, free_port, gatehouse_bin, scratch_dir};
use tokio::process::Command;

const SERVICES: [&str; 3] = [
    "gatehouse-ext-authz",
    "gatehouse-ratelimit",
    "gatehouse-broker",
];

async fn refused(binary: &str, args: &[&str]) -> String {
    let output = Command::new(gatehouse_bin(binary))
        .args(args)
        .env_remove("GATEHOUSE_XDS_TOKEN")
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        output.status.code(),
        Some(64),
        "{binary} {args:?}: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{binary} {args:?}: one line, got {stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn invalid_common_flags_exit_64_with_one_line_naming_the_flag() {
    let missing = scratch_dir("gatehouse_flags").join("no-such-token");
    let missing = missing.display().to_string();
    for binary in SERVICES {
        let line = refused(binary, &["--listen-addr", "nowhere"]).await;
        assert!(line.contains("--listen-addr"), "{binary}: {line}");
        let line = refused(binary, &["--worker-threads", "many"]).await;
        assert!(line.contains("--worker-threads"), "{binary}: {line}");
        let line = refused(binary, &["--log-format", "xml"]).await;
        assert!(line.contains("--log-format"), "{binary}: {line}");
        let args = ["--listen-addr", "127.0.0.1:0", "--xds-token-file", &missing];
        let line = refused(binary, &args).await;
        assert!(line.contains("--xds-token-file"), "{binary}: {line}");
        let args = ["--listen-addr", "127.0.0.1:0", "--xds-ca-file", &missing];
        let line = refused(binary, &args).await;
        assert!(line.contains("--xds-ca-file"), "{binary}: {line}");
        let args = [
            "--listen-addr",
            "127.0.0.1:0",
            "--xds-url",
            "https://127.0.0.1:1",
        ];
        let line = refused(binary, &args).await;
        assert!(line.contains("--xds-ca-file"), "{binary}: {line}");
    }
    let args = ["--listen-addr", "127.0.0.1:0", "--redis-url", "not-a-url"];
    for binary in ["gatehouse-ratelimit", "gatehouse-broker"] {
        let line = refused(binary, &args).await;
        assert!(line.contains("--redis-url"), "{binary}: {line}");
    }
    let args = ["--listen-addr", "127.0.0.1:0", "--queue-size", "0"];
    let line = refused("gatehouse-broker", &args).await;
    assert!(line.contains("--queue-size"), "{line}");
}

#[tokio::test]
async fn every_service_logs_json_when_asked() {
    for binary in SERVICES {
        let port = free_port();
        let log = scratch_dir("gatehouse_json").join("stderr.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(gatehouse_bin(binary))
            .args([
                "--listen-addr",
                &format!("127.0.0.1:{port}"),
                "--xds-url",
                &format!("http://127.0.0.1:{}", free_port()),
                "--log-format",
                "json",
            ])
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the binary runs");
        eventually(Duration::from_secs(10), "the listening line", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { text.contains("listening") }
        })
        .await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{binary}: not JSON ({e}): {l}"))
            })
            .collect();
        assert!(
            lines.iter().any(|l| l["fields"]["message"] == "listening"),
            "{binary}: {text}"
        );
        let _ = child.kill().await;
    }
}
