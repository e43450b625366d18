//! Gatehouse's own services (ext-authz, ratelimit-service, the broker) as
//! real processes subscribed to a control plane.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::process::{
    client, eventually, free_port, gatehouse_bin, print_tail, scratch_dir, terminate, unique,
};

/// libfaketime (Debian's `faketime` package).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A running Gatehouse service (ext-authz or ratelimit-service) subscribed
/// to a control plane.
pub struct Sidecar {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// ext-authz is a [`Sidecar`] started with [`Sidecar::start`].
pub type ExtAuthz = Sidecar;

impl Sidecar {
    /// The process id (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts ext-authz on `port` (0 picks one) with extra environment
    /// (secrets), and waits until it holds the control plane's configuration.
    pub async fn start(xds: SocketAddr, port: u16, env: &[(&str, &str)]) -> Self {
        Self::spawn(
            "gatehouse-ext-authz",
            xds,
            port,
            env,
            &["--usage-report-interval-ms=200"],
        )
        .await
    }

    /// Starts ratelimit-service on `port` (0 picks one).
    pub async fn ratelimit(xds: SocketAddr, port: u16, extra: &[&str]) -> Self {
        Self::spawn("gatehouse-ratelimit", xds, port, &[], extra).await
    }

    /// Starts the broker (`gatehouse-broker`) on a free port.
    pub async fn broker(xds: SocketAddr, extra: &[&str]) -> Self {
        Self::spawn("gatehouse-broker", xds, 0, &[], extra).await
    }

    /// The service body routing to this sidecar (the broker, say).
    pub fn service(&self) -> serde_json::Value {
        serde_json::json!({"endpoints": [{"host": "127.0.0.1", "port": self.addr.port()}]})
    }

    /// Starts ratelimit-service with its wall clock shifted by `offset`
    /// (e.g. `+30s`) through libfaketime; monotonic time is left alone.
    pub async fn ratelimit_skewed(xds: SocketAddr, extra: &[&str], offset: &str) -> Self {
        let env = [
            ("LD_PRELOAD", FAKETIME_LIB),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        Self::spawn("gatehouse-ratelimit", xds, 0, &env, extra).await
    }

    async fn spawn(
        binary: &str,
        xds: SocketAddr,
        port: u16,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Self {
        let port = if port == 0 { free_port() } else { port };
        let dir = scratch_dir("gatehouse_sidecar");
        let log = dir.join(unique(binary)).with_extension("log");
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        // `extra` may name its own `--xds-url` (an https:// one, say).
        let default_url = (!extra.iter().any(|a| a.starts_with("--xds-url")))
            .then(|| format!("--xds-url=http://{xds}"));
        let child = Command::new(gatehouse_bin(binary))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .args(default_url)
            .args(
                (!extra.iter().any(|a| a.starts_with("--node-id")))
                    .then(|| format!("--node-id={}", unique(binary))),
            )
            .args(extra)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                "info,gatehouse_ext_authz=debug,gatehouse_ratelimit_service::quota=debug,gatehouse_broker=debug",
            )
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let ext = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let http = client();
        let url = format!("http://{}/readyz", ext.addr);
        eventually(
            Duration::from_secs(20),
            "the service to receive its configuration",
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        ext
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM and waits for the exit code (None: killed by a signal).
    pub async fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child).await
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_tail(&self.log.display().to_string(), &self.log, 40);
        }
        let _ = self.child.start_kill();
    }
}
