//! A private `redis-server` on an ephemeral port, for tests that stop,
//! hang or flush it (never the shared one on 6379).

use std::{path::PathBuf, time::Duration};

use tokio::process::{Child, Command};

use crate::{eventually, free_port, scratch_dir};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    /// The process id while it runs (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub async fn start() -> Self {
        Self::start_with(free_port(), Vec::new()).await
    }

    async fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            port,
            dir: scratch_dir("gatehouse_redis"),
            child: None,
            extra,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port, empty.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP (`hang`) from loopback; Redis 7 refuses it otherwise.
                "--enable-debug-command",
                "local",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (apt install redis-server)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "redis-server to accept connections",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Runs a command with `redis-cli` and returns its output.
    /// Blocks the server for `seconds` without closing its connections (a
    /// hanging Redis, not a refusing one): `DEBUG SLEEP`, whose reply the
    /// returned task checks, so a test cannot pass without the hang.
    pub fn hang(&self, seconds: u32) -> tokio::task::JoinHandle<()> {
        let port = self.port;
        tokio::spawn(async move {
            let output = Command::new("redis-cli")
                .args([
                    "-p",
                    &port.to_string(),
                    "DEBUG",
                    "SLEEP",
                    &seconds.to_string(),
                ])
                .output()
                .await
                .expect("redis-cli");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                "OK",
                "Redis did not hang: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        })
    }

    pub async fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

/// A three-node Redis Cluster (no replicas) on ephemeral ports, with every
/// slot assigned: the setup a hash-tagged key layout must work on.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        while nodes.len() < 3 {
            // The cluster bus listens on port + 10000.
            let port = free_port();
            let bus_free =
                std::net::TcpListener::bind(("127.0.0.1", port.wrapping_add(10_000))).is_ok();
            if port >= 55_000 || !bus_free {
                continue;
            }
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(
                RedisServer::start_with(port, extra.iter().map(|s| (*s).to_owned()).collect())
                    .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { nodes };
        eventually(
            Duration::from_secs(20),
            "the cluster to be ok on every node",
            || {
                let cluster = &cluster;
                async move {
                    for node in &cluster.nodes {
                        if !node
                            .cli(&["cluster", "info"])
                            .await
                            .contains("cluster_state:ok")
                        {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
        cluster
    }

    /// Seed nodes, comma-separated, as `--redis-url` takes them with `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many keys the whole cluster holds.
    pub async fn keys(&self) -> u64 {
        let mut total = 0;
        for node in &self.nodes {
            total += node
                .cli(&["DBSIZE"])
                .await
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        total
    }
}
