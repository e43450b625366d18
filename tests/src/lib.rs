//! End-to-end harness: real Envoy, the real Gatehouse binaries and real HTTP
//! upstreams, all on loopback ephemeral ports.
//!
//! Every process gets its own directory under the system temp dir, readiness
//! is awaited (never slept for), and when a test panics each process prints
//! its log tail and Envoy its `/config_dump`, so a failure explains itself.

pub mod load;
pub mod redis;
pub mod tokens;

pub use reqwest;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::process::{Child, Command};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test run (databases, node ids, directories).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A fresh directory for one process's files.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A Gatehouse binary from the same target directory as the running test
/// (`target/<profile>/deps/…`) or benchmark (`target/<profile>/…`).
pub fn gatehouse_bin(name: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("GATEHOUSE_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir).join(name)],
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .map(|dir| {
                let mut list = vec![dir.join(name)];
                if let Some(parent) = dir.parent() {
                    list.push(parent.join(name));
                }
                list
            })
            .unwrap_or_default(),
    };
    candidates
        .iter()
        .find(|bin| bin.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!("{name} not found in {candidates:?}: build the binaries first (cargo build --workspace --bins)")
        })
}

/// Envoy from `GATEHOUSE_ENVOY`, the project venv, or `PATH`.
pub fn envoy_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEHOUSE_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("envoy")
}

/// A port that was free a moment ago (for addresses a child process must bind).
///
/// Taken below the kernel's ephemeral range when there is room: a port from
/// that range can be handed to any outgoing connection (parallel tests make
/// many) before the child binds it. Here only another test picking the same
/// port at the same moment can take it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    const LOW: u16 = 20_000;
    if ephemeral_low > LOW + 1_000 {
        let span = u64::from(ephemeral_low - LOW);
        // Each process starts somewhere else in the range.
        let seed = u64::from(std::process::id()).wrapping_mul(7_919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
        for _ in 0..span {
            let offset = (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))) % span;
            let port = LOW + offset as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain blocking GET, usable from `Drop` while a test panics.
fn blocking_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "<unreachable>".into();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

async fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

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
    log: PathBuf,
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
        if let Some(log) = &options.access_log {
            args.push(format!("--access-log={}", log.display()));
        }
        if let Some(token) = &options.admin_token {
            args.push(format!("--admin-token={token}"));
        }
        if let Some(token) = &options.xds_token {
            args.push(format!("--xds-token={token}"));
        }
        if let Some(addr) = &options.ext_authz_addr {
            args.push(format!("--ext-authz-addr={addr}"));
        }
        if let Some(addr) = &options.ratelimit_addr {
            args.push(format!("--ratelimit-addr={addr}"));
        }
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
            eprintln!(
                "----- control plane {} log (tail) -----\n{}",
                self.admin,
                tail(&self.log, 60)
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsVariant {
    StateOfTheWorld,
    Delta,
}

/// A running Envoy configured only by a control plane's ADS.
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
    pub proxy_port: u16,
    pub node_id: String,
    log: PathBuf,
    access_log: Option<PathBuf>,
}

impl Envoy {
    /// The process id (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts Envoy against `xds` and waits until it is initialised (its
    /// listener came over LDS).
    pub async fn start(xds: SocketAddr, proxy_port: u16, variant: XdsVariant) -> Self {
        Self::start_with_access_log(xds, proxy_port, variant, None).await
    }

    pub async fn start_with_access_log(
        xds: SocketAddr,
        proxy_port: u16,
        variant: XdsVariant,
        access_log: Option<PathBuf>,
    ) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        let node_id = unique("envoy");
        let api_type = match variant {
            XdsVariant::StateOfTheWorld => "GRPC",
            XdsVariant::Delta => "DELTA_GRPC",
        };
        let bootstrap = bootstrap_yaml(&node_id, api_type, xds.port());
        Self::start_config(&bootstrap, node_id, dir, proxy_port, access_log).await
    }

    /// Starts Envoy presenting `token` to the control plane (ADS
    /// `initial_metadata`), as `envoy/bootstrap.yaml` shows.
    pub async fn start_with_xds_token(xds: SocketAddr, proxy_port: u16, token: &str) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        let node_id = unique("envoy");
        let grpc = "- envoy_grpc: { cluster_name: gatehouse_xds }";
        let bootstrap = bootstrap_yaml(&node_id, "GRPC", xds.port()).replacen(
            grpc,
            &format!(
                "{grpc}\n        initial_metadata:\n          - {{ key: authorization, value: \"Bearer {token}\" }}"
            ),
            1,
        );
        assert!(
            bootstrap.contains("initial_metadata"),
            "bootstrap template changed shape"
        );
        Self::start_config(&bootstrap, node_id, dir, proxy_port, None).await
    }

    /// Starts Envoy with runtime overrides in its bootstrap (a node configured
    /// differently from the rest of the fleet).
    pub async fn start_with_runtime(
        xds: SocketAddr,
        proxy_port: u16,
        runtime: &[(&str, &str)],
    ) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        let node_id = unique("envoy");
        let mut bootstrap = bootstrap_yaml(&node_id, "GRPC", xds.port());
        bootstrap.push_str(
            "\nlayered_runtime:\n  layers:\n    - name: overrides\n      static_layer:\n",
        );
        for (key, value) in runtime {
            bootstrap.push_str(&format!("        {key}: {value}\n"));
        }
        Self::start_config(&bootstrap, node_id, dir, proxy_port, None).await
    }

    /// Starts Envoy from a complete bootstrap (static configs for benchmarks
    /// comparing Envoy's own filters); its admin port must be 0.
    pub async fn start_static(bootstrap: &str, proxy_port: u16) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        Self::start_config(bootstrap, unique("envoy-static"), dir, proxy_port, None).await
    }

    async fn start_config(
        bootstrap: &str,
        node_id: String,
        dir: PathBuf,
        proxy_port: u16,
        access_log: Option<PathBuf>,
    ) -> Self {
        let config = dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap).expect("write bootstrap");
        let admin_file = dir.join("admin-address");
        let log = dir.join("envoy.log");
        let args = vec![
            "-c".to_string(),
            config.display().to_string(),
            "--disable-hot-restart".into(),
            "--concurrency".into(),
            "1".into(),
            "--log-level".into(),
            "info".into(),
            "--component-log-level".into(),
            "main:warn".into(),
            "--admin-address-path".into(),
            admin_file.display().to_string(),
        ];
        let child = spawn(&envoy_bin(), &args, &log).await;
        let mut envoy = Self {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_port,
            node_id,
            log,
            access_log,
        };
        eventually(Duration::from_secs(30), "Envoy admin address", || {
            let addr = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                envoy.admin = addr;
            }
            async move { addr.is_some() }
        })
        .await;
        envoy.wait_ready().await;
        envoy
    }

    /// Waits (up to 10 s) until `path` answers `status` through this Envoy.
    pub async fn until_status(&self, path: &str, status: u16) {
        let http = client();
        let url = self.url(path);
        eventually(
            Duration::from_secs(10),
            &format!("{path} → {status}"),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move { probe(&http, &url).await.0 == status }
            },
        )
        .await;
    }

    /// Waits until Envoy has finished initialising from xDS.
    pub async fn wait_ready(&self) {
        let client = client();
        let url = format!("http://{}/ready", self.admin);
        eventually(Duration::from_secs(30), "Envoy to become ready", || {
            let request = client.get(&url).send();
            async move { matches!(request.await, Ok(r) if r.status().is_success()) }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy_port)
    }

    pub async fn config_dump(&self) -> Value {
        client()
            .get(format!("http://{}/config_dump", self.admin))
            .send()
            .await
            .expect("envoy admin")
            .json()
            .await
            .expect("config dump json")
    }

    /// Every dynamic resource Envoy holds, with its version and last update
    /// time: equal values mean Envoy's xDS configuration did not change.
    pub async fn dynamic_config(&self) -> Vec<String> {
        let dump = self.config_dump().await;
        let mut entries = Vec::new();
        for config in dump["configs"].as_array().into_iter().flatten() {
            let lists = [
                (
                    "cluster",
                    &config["dynamic_active_clusters"],
                    "/cluster/name",
                ),
                ("listener", &config["dynamic_listeners"], "/name"),
                (
                    "routes",
                    &config["dynamic_route_configs"],
                    "/route_config/name",
                ),
            ];
            for (kind, list, name) in lists {
                for item in list.as_array().into_iter().flatten() {
                    let state = item.get("active_state").unwrap_or(item);
                    entries.push(format!(
                        "{kind} {} version={} updated={}",
                        item.pointer(name)
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        state["version_info"],
                        state["last_updated"],
                    ));
                }
            }
        }
        entries.sort();
        entries
    }

    /// The value of one counter or gauge from Envoy's stats.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let body = client()
            .get(format!("http://{}/stats", self.admin))
            .query(&[("filter", format!("^{}$", regex_escape(name)))])
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }

    /// xDS updates Envoy rejected, from its own counters.
    pub async fn rejected_updates(&self) -> u64 {
        let mut total = 0;
        for name in [
            "cluster_manager.cds.update_rejected",
            "listener_manager.lds.update_rejected",
            "http.gatehouse.rds.gatehouse_http.update_rejected",
        ] {
            total += self.stat(name).await.unwrap_or(0);
        }
        total
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- envoy {} log (tail) -----\n{}",
                self.node_id,
                tail(&self.log, 40)
            );
            if let Some(access) = &self.access_log {
                eprintln!("----- envoy access log (non-200, tail) -----");
                let text = std::fs::read_to_string(access).unwrap_or_default();
                let failed: Vec<&str> = text.lines().filter(|l| !l.contains("\" 200 ")).collect();
                eprintln!("{}", failed[failed.len().saturating_sub(30)..].join("\n"));
            }
            let dump = blocking_get(self.admin, "/config_dump?resource=dynamic_active_clusters");
            eprintln!(
                "----- envoy config_dump (clusters) -----\n{}",
                truncate(&dump, 6000)
            );
            let dump = blocking_get(self.admin, "/config_dump?resource=dynamic_route_configs");
            eprintln!(
                "----- envoy config_dump (routes) -----\n{}",
                truncate(&dump, 6000)
            );
        }
        let _ = self.child.start_kill();
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The repository's `envoy/bootstrap.yaml` with this test's node id, xDS
/// port, xDS variant and an ephemeral admin port.
pub fn bootstrap_yaml(node_id: &str, api_type: &str, xds_port: u16) -> String {
    let template = std::fs::read_to_string(workspace_root().join("envoy/bootstrap.yaml"))
        .expect("envoy/bootstrap.yaml");
    let replaced = template
        .replace("id: gatehouse-envoy-1", &format!("id: {node_id}"))
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 18000", &format!("port_value: {xds_port}"))
        .replace("api_type: GRPC ", &format!("api_type: {api_type} "));
    for expected in [node_id, "port_value: 0", api_type] {
        assert!(
            replaced.contains(expected),
            "bootstrap template changed shape: {expected}"
        );
    }
    replaced
}

/// A real HTTP upstream that answers every request with its own name.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        use axum::{extract::Request, http::HeaderValue, response::IntoResponse};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let (counter, label) = (hits.clone(), name.to_owned());
        let app = axum::Router::new().fallback(move |request: Request| {
            let (counter, label) = (counter.clone(), label.clone());
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let headers: serde_json::Map<String, Value> = request
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            Value::String(v.to_str().unwrap_or_default().to_owned()),
                        )
                    })
                    .collect();
                let body = serde_json::json!({
                    "upstream": label,
                    "path": request.uri().path(),
                    "query": request.uri().query(),
                    "method": request.method().as_str(),
                    "headers": headers,
                });
                let mut response = axum::Json(body).into_response();
                if let Ok(value) = HeaderValue::from_str(&label) {
                    response.headers_mut().insert("x-upstream", value);
                }
                response
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            name: name.to_owned(),
            addr,
            hits,
            task,
        }
    }

    /// The admin API body of a service pointing at this upstream.
    pub fn service(&self, name: &str) -> Value {
        serde_json::json!({
            "name": name,
            "endpoints": [{"host": "127.0.0.1", "port": self.addr.port()}],
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which upstream answered a GET through the proxy: (status, upstream name).
pub async fn probe(client: &reqwest::Client, url: &str) -> (u16, Option<String>) {
    match client.get(url).send().await {
        Ok(response) => {
            let upstream = response
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (response.status().as_u16(), upstream)
        }
        Err(_) => (0, None),
    }
}

/// A fresh Postgres database for one test, on the server named by
/// `GATEHOUSE_TEST_POSTGRES_URL` (default: the local trust-auth server).
pub async fn postgres_database() -> String {
    let admin = std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = unique("gh_e2e");
    let status = tokio::process::Command::new("psql")
        .arg(&admin)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .status()
        .await
        .expect("psql available");
    assert!(status.success(), "cannot create database {name} on {admin}");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// The xDS types a node in `/v1/status/nodes` subscribes to.
fn node_types(node: &Value) -> Vec<&'static str> {
    if node["types"].get("auth").is_some() {
        vec!["auth"]
    } else if node["types"].get("ratelimit").is_some() {
        vec!["ratelimit"]
    } else {
        vec!["cds", "eds", "lds", "rds"]
    }
}

/// libfaketime (Debian's `faketime` package).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A running Gatehouse service (ext-authz or ratelimit-service) subscribed
/// to a control plane.
pub struct Sidecar {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
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
        let child = Command::new(gatehouse_bin(binary))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!("--xds-url=http://{xds}"))
            .arg(format!("--node-id={}", unique(binary)))
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,gatehouse_ext_authz=debug")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("start gatehouse-ext-authz");
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

/// Sends SIGTERM to `child` and waits for its exit code (None: killed by a
/// signal).
async fn terminate(child: &mut Child) -> Option<i32> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    child.wait().await.ok().and_then(|s| s.code())
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} (tail) -----\n{}",
                self.log.display(),
                tail(&self.log, 40)
            );
        }
        let _ = self.child.start_kill();
    }
}
