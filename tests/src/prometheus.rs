//! A real Prometheus (Debian's package) on an ephemeral port, scraping the
//! given targets every second with the project's own rule files, and a
//! query helper over its HTTP API.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{client, eventually, free_port, scratch_dir, workspace_root};

/// One scrape job: its name, `host:port` and metrics path.
pub struct Target {
    pub job: &'static str,
    pub address: String,
    pub path: &'static str,
}

pub struct Prometheus {
    pub addr: String,
    pub log: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus with `deploy/prometheus/gatehouse.rules.yml`,
    /// scraping and evaluating every second; waits until every target is up.
    pub async fn start(targets: &[Target]) -> Self {
        let dir = scratch_dir("gatehouse_prometheus");
        let rules = workspace_root().join("deploy/prometheus/gatehouse.rules.yml");
        let jobs: String = targets
            .iter()
            .map(|t| {
                format!(
                    "  - job_name: {}\n    metrics_path: {}\n    static_configs:\n      - targets: [\"{}\"]\n",
                    t.job, t.path, t.address
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
            rules.display()
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let prometheus = Self { addr, log, child };
        let wanted = targets.len();
        eventually(Duration::from_secs(30), "every target scraped", || async {
            prometheus
                .query("up == 1")
                .await
                .is_some_and(|r| r.len() == wanted)
        })
        .await;
        prometheus
    }

    /// An instant query's result vector, `None` on an error answer.
    pub async fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let answer: Value = client()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (answer["status"] == "success").then(|| {
            answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
