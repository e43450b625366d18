//! A real `gatehouse-control-plane` process: its options, its admin API,
//! and waiting for the fleet to converge.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde_json::Value;
use tokio::process::Child;

use crate::process::{
    client, envoy_bin, eventually, gatehouse_bin, print_tail, scratch_dir, spawn, terminate, unique,
};
use crate::upstream::Upstream;

/// Options for a control plane process.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// `None`: SQLite in the process's own data directory.
    pub database_url: Option<String>,
    /// Reuse a data directory (a restart of the same control plane).
    pub data_dir: Option<PathBuf>,
    /// Fixed xDS port (Envoy's bootstrap points at it); 0 picks one.
    pub xds_port: u16,
    /// Port of Envoy's HTTP listener, served over LDS.
    pub proxy_port: u16,
    pub access_log: Option<PathBuf>,
    /// Quiet period before a snapshot build: larger values coalesce writes.
    pub debounce_ms: u64,
    /// Store version poll (the fallback to LISTEN/NOTIFY).
    pub poll_interval_ms: u64,
    /// Bootstrap admin token (authentication on); the harness uses it too.
    pub admin_token: Option<String>,
    pub admin_addr: String,
    /// Wait for `/readyz` (store migrated and a snapshot built) on start.
    pub wait_ready: bool,
    /// Where Envoy reaches ext-authz.
    pub ext_authz_addr: Option<SocketAddr>,
    /// Where Envoy reaches ratelimit-service.
    pub ratelimit_addr: Option<SocketAddr>,
    /// Check every change with `envoy --mode validate` before commit.
    pub validate_with_envoy: bool,
    /// Token every xDS client must present.
    pub xds_token: Option<String>,
    /// Without a token: `--xds-insecure` (true), or the control plane's
    /// default, a token generated into its data directory (false).
    pub xds_insecure: bool,
    /// More command-line arguments, as given.
    pub args: Vec<String>,
}

impl ControlPlaneOptions {
    pub fn new(proxy_port: u16) -> Self {
        Self {
            database_url: None,
            data_dir: None,
            xds_port: 0,
            proxy_port,
            access_log: None,
            debounce_ms: 5,
            poll_interval_ms: 250,
            admin_token: None,
            admin_addr: "127.0.0.1:0".into(),
            wait_ready: true,
            ext_authz_addr: None,
            ratelimit_addr: None,
            validate_with_envoy: false,
            xds_token: None,
            xds_insecure: true,
            args: Vec::new(),
        }
    }
}

/// A running `gatehouse-control-plane`.
pub struct ControlPlane {
    child: Child,
    pub dir: PathBuf,
    pub admin: SocketAddr,
    pub xds: SocketAddr,
    pub options: ControlPlaneOptions,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl ControlPlane {
    pub async fn start(options: ControlPlaneOptions) -> Self {
        let dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| scratch_dir("gatehouse_cp"));
        let addr_file = dir.join(unique("addrs"));
        let mut args = vec![
            format!("--admin-addr={}", options.admin_addr),
            format!("--xds-addr=127.0.0.1:{}", options.xds_port),
            format!("--proxy-addr=127.0.0.1:{}", options.proxy_port),
            format!("--data-dir={}", dir.display()),
            format!("--addr-file={}", addr_file.display()),
            format!("--poll-interval-ms={}", options.poll_interval_ms),
            "--shutdown-grace-ms=2000".to_string(),
            format!("--debounce-ms={}", options.debounce_ms),
            format!(
                "--validate-with-envoy={}",
                if options.validate_with_envoy {
                    envoy_bin().display().to_string()
                } else {
                    "off".into()
                }
            ),
        ];
        if let Some(url) = &options.database_url {
            args.push(format!("--database-url={url}"));
        }
        // Off unless a test reads it: Envoy's output stays about Envoy.
        match &options.access_log {
            Some(log) => args.push(format!("--access-log={}", log.display())),
            None => args.push("--access-log=off".into()),
        }
        if let Some(token) = &options.admin_token {
            args.push(format!("--admin-token={token}"));
        }
        match &options.xds_token {
            Some(token) => args.push(format!("--xds-token={token}")),
            // Tests that do not set a token run open, as before the
            // generated token became the default (tests/tests/xds_port.rs).
            None if options.xds_insecure => args.push("--xds-insecure".into()),
            None => {}
        }
        if let Some(addr) = &options.ext_authz_addr {
            args.push(format!("--ext-authz-addr={addr}"));
        }
        if let Some(addr) = &options.ratelimit_addr {
            args.push(format!("--ratelimit-addr={addr}"));
        }
        args.extend(options.args.iter().cloned());
        let log = dir.join(unique("control-plane")).with_extension("log");
        let child = spawn(&gatehouse_bin("gatehouse-control-plane"), &args, &log).await;
        let mut addrs = Value::Null;
        eventually(Duration::from_secs(20), "control plane to bind", || {
            addrs = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null);
            let bound = !addrs.is_null();
            async move { bound }
        })
        .await;
        let parse = |key: &str| -> SocketAddr {
            addrs[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("address file lacks {key}: {addrs}"))
        };
        let cp = Self {
            admin: parse("admin"),
            xds: parse("xds"),
            child,
            dir,
            options,
            log,
            http: client(),
        };
        if cp.options.wait_ready {
            eventually(
                Duration::from_secs(20),
                "control plane to become ready",
                || async { cp.get("/readyz").await.status().is_success() },
            )
            .await;
        }
        cp
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn put(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(self.http.put(self.url(path)).json(&body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    /// Creates `consumer` (no plan) and an API key for it: the key.
    pub async fn consumer_key(&self, consumer: &str) -> String {
        self.apply(&format!("/v1/consumers/{consumer}"), serde_json::json!({}))
            .await;
        let created: Value = self
            .post(
                &format!("/v1/consumers/{consumer}/keys"),
                serde_json::json!({}),
            )
            .await
            .json()
            .await
            .expect("json");
        created["key"].as_str().expect("key").to_owned()
    }

    /// Route `name` for `prefix` to `service` behind API keys, served by
    /// every node.
    pub async fn api_key_route(&self, name: &str, prefix: &str, service: &str) {
        let version = self
            .apply(
                &format!("/v1/routes/{name}"),
                serde_json::json!({"match": {"path_prefix": prefix},
                    "destination": {"service": service}, "auth": {"method": "api_key"}}),
            )
            .await;
        self.until_converged(version).await;
    }

    /// Policy `per-consumer`: `per_minute` requests per consumer on
    /// `route`, served by every node.
    pub async fn per_consumer_limit(&self, per_minute: u32, route: &str) {
        let version = self
            .apply(
                "/v1/rate-limit-policies/per-consumer",
                serde_json::json!({"limit": {"requests": per_minute, "per": "minute"},
                    "by": ["consumer"], "routes": [route]}),
            )
            .await;
        self.until_converged(version).await;
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(self.http.get(self.url(path))).await
    }

    /// Sends raw bytes (for malformed bodies).
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &'static str,
    ) -> reqwest::Response {
        self.send(self.http.request(method, self.url(path)).body(body))
            .await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> reqwest::Response {
        if let Some(token) = &self.options.admin_token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("admin API reachable")
    }

    /// PUT that must succeed; returns the new config version.
    pub async fn apply(&self, path: &str, body: Value) -> u64 {
        let response = self.put(path, body).await;
        let status = response.status();
        let version = response
            .headers()
            .get("x-gatehouse-config-version")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "PUT {path} failed with {status}: {text}"
        );
        version.unwrap_or_else(|| panic!("PUT {path} returned no version"))
    }

    /// Registers `upstream` as a service of the same name and routes every
    /// path to it (route `main`); returns the config version.
    pub async fn route_all_to(&self, upstream: &Upstream) -> u64 {
        let name = &upstream.name;
        self.apply(&format!("/v1/services/{name}"), upstream.service(name))
            .await;
        self.apply(
            "/v1/routes/main",
            serde_json::json!({"match": {"path_prefix": "/"}, "destination": {"service": name}}),
        )
        .await
    }

    /// Waits until every connected node acknowledged `version` for every type.
    pub async fn until_converged(&self, version: u64) {
        eventually(
            Duration::from_secs(10),
            &format!("nodes to acknowledge version {version}"),
            || self.converged(version),
        )
        .await;
    }

    pub async fn version(&self) -> u64 {
        let body: Value = self
            .get("/v1/config/version")
            .await
            .json()
            .await
            .expect("json");
        body["version"].as_u64().expect("version")
    }

    pub async fn nodes(&self) -> Value {
        self.get("/v1/status/nodes")
            .await
            .json()
            .await
            .expect("json")
    }

    /// Every connected node has acknowledged `version` for every type it
    /// takes: the four Envoy types, or `auth` for ext-authz.
    pub async fn converged(&self, version: u64) -> bool {
        let status = self.nodes().await;
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        !nodes.is_empty()
            && nodes.iter().all(|n| {
                node_types(n).iter().all(|t| {
                    n["types"][t]["acked_version"].as_str() == Some(version.to_string().as_str())
                })
            })
    }

    /// Waits until a NACK holds the newest version back; returns the status.
    pub async fn until_held_back(&self) -> Value {
        eventually(
            Duration::from_secs(10),
            "a rejection to hold the newest version back",
            || async { self.nodes().await["held_back"] == serde_json::json!(true) },
        )
        .await;
        self.nodes().await
    }

    /// No node connected here rejected any config.
    pub async fn assert_no_nacks(&self) {
        let status = self.nodes().await;
        assert_eq!(
            status["rejections"].as_array().map(Vec::len),
            Some(0),
            "rejections: {}",
            status["rejections"]
        );
        for node in status["nodes"].as_array().into_iter().flatten() {
            for t in node_types(node) {
                assert_eq!(
                    node["types"][t]["nacks"].as_u64(),
                    Some(0),
                    "node {} rejected {t}: {}",
                    node["id"],
                    node["types"][t]["last_nack"]
                );
            }
        }
    }

    /// The process id (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit code (None: killed by a signal).
    pub async fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child).await
    }

    /// Kills the process at once (as a crash would).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_tail(&format!("control plane {}", self.admin), &self.log, 60);
        }
    }
}

/// The xDS types a node in `/v1/status/nodes` subscribes to.
fn node_types(node: &Value) -> Vec<&'static str> {
    if node["types"].get("auth").is_some() {
        vec!["auth"]
    } else if node["types"].get("ratelimit").is_some() {
        vec!["ratelimit"]
    } else if node["types"].get("broker").is_some() {
        vec!["broker"]
    } else {
        vec!["cds", "eds", "lds", "rds"]
    }
}
