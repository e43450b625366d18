//! A real Envoy configured only by a control plane's ADS (or a static
//! bootstrap, for benchmarks): start, readiness, requests through it, its
//! admin interface; on a failing test, its log and config dump.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde_json::Value;
use tokio::process::Child;

use crate::{
    process::{
        blocking_get, client, envoy_bin, eventually, print_tail, scratch_dir, spawn, unique,
        workspace_root,
    },
    upstream::probe,
};

/// A response through Envoy: status, headers and JSON body (the test
/// upstream echoes the request's path, query and headers; `Null` when the
/// body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A request header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XdsVariant {
    #[default]
    StateOfTheWorld,
    Delta,
}

/// A running Envoy configured only by a control plane's ADS.
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
    pub proxy_port: u16,
    pub node_id: String,
    pub log: PathBuf,
    pub access_log: Option<PathBuf>,
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
        let placeholder = "Bearer ${GATEHOUSE_XDS_TOKEN}";
        let bootstrap = bootstrap_yaml(&node_id, "GRPC", xds.port());
        assert!(
            bootstrap.contains(placeholder),
            "bootstrap template changed shape"
        );
        let bootstrap = bootstrap.replace(placeholder, &format!("Bearer {token}"));
        Self::start_config(&bootstrap, node_id, dir, proxy_port, None).await
    }

    /// Starts Envoy of `fleet` (its node cluster) reaching the control
    /// plane over TLS (verified against `ca` for the name `localhost`) with
    /// `token`, as `envoy/bootstrap.yaml` shows in its comments.
    pub async fn start_with_xds_tls(
        xds: SocketAddr,
        proxy_port: u16,
        token: &str,
        ca: &std::path::Path,
        fleet: &str,
    ) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        let node_id = unique("envoy");
        let bootstrap = xds_tls_bootstrap(&bootstrap_yaml(&node_id, "GRPC", xds.port()), ca)
            .replace("Bearer ${GATEHOUSE_XDS_TOKEN}", &format!("Bearer {token}"))
            .replace("  cluster: gatehouse\n", &format!("  cluster: {fleet}\n"));
        Self::start_config(&bootstrap, node_id, dir, proxy_port, None).await
    }

    /// Starts Envoy as node `node_id` over an mTLS xDS port: TLS verified
    /// against `ca`, presenting the client certificate `cert`/`key`.
    pub async fn start_with_xds_mtls(
        xds: SocketAddr,
        proxy_port: u16,
        token: &str,
        ca: &std::path::Path,
        (node_id, cert, key): (&str, &std::path::Path, &std::path::Path),
    ) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        let bootstrap = xds_tls_bootstrap(&bootstrap_yaml(node_id, "GRPC", xds.port()), ca)
            .replace("Bearer ${GATEHOUSE_XDS_TOKEN}", &format!("Bearer {token}"));
        let anchor = "          common_tls_context:\n            alpn_protocols: [h2]\n";
        assert!(bootstrap.contains(anchor), "TLS bootstrap changed shape");
        let bootstrap = bootstrap.replace(
            anchor,
            &format!(
                "{anchor}            tls_certificates:\n              - certificate_chain: {{ filename: {} }}\n                private_key: {{ filename: {} }}\n",
                cert.display(),
                key.display()
            ),
        );
        Self::start_config(&bootstrap, node_id.to_owned(), dir, proxy_port, None).await
    }

    /// Starts Envoy in `fleet`: its node `cluster`.
    pub async fn start_in_fleet(xds: SocketAddr, proxy_port: u16, fleet: &str) -> Self {
        let dir = scratch_dir("gatehouse_envoy");
        let node_id = unique("envoy");
        let bootstrap = bootstrap_yaml(&node_id, "GRPC", xds.port());
        assert!(
            bootstrap.contains("  cluster: gatehouse\n"),
            "bootstrap template changed shape"
        );
        let bootstrap =
            bootstrap.replace("  cluster: gatehouse\n", &format!("  cluster: {fleet}\n"));
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

    /// A GET through this Envoy with `headers`.
    pub async fn send(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = client().get(self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("proxy reachable");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Waits (up to 10 s) until a GET of `path` with `headers` answers `status`.
    pub async fn until_answer(&self, path: &str, headers: &[(&str, &str)], status: u16) {
        eventually(
            Duration::from_secs(10),
            &format!("GET {path} → {status}"),
            || async { self.send(path, headers).await.status == status },
        )
        .await;
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

    /// Kills Envoy (SIGKILL) and waits for it to be gone: a node leaving
    /// the fleet without a goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
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
            print_tail(&format!("envoy {}", self.node_id), &self.log, 40);
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

/// `bootstrap` with TLS on its xDS cluster, verifying the control plane's
/// certificate against `ca` for `localhost`.
pub fn xds_tls_bootstrap(bootstrap: &str, ca: &std::path::Path) -> String {
    let cluster = "    - name: gatehouse_xds\n      type: STRICT_DNS\n";
    assert!(
        bootstrap.contains(cluster),
        "bootstrap template changed shape"
    );
    let socket = format!(
        "{cluster}      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: localhost
          common_tls_context:
            alpn_protocols: [h2]
            validation_context:
              trusted_ca: {{ filename: {} }}
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: {{ exact: localhost }}
",
        ca.display()
    );
    bootstrap.replace(cluster, &socket)
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
        .replace("api_type: GRPC ", &format!("api_type: {api_type} "))
        // Canary analysis within a test's patience.
        .replace("stats_flush_interval: 5s", "stats_flush_interval: 1s");
    for expected in [node_id, "port_value: 0", api_type] {
        assert!(
            replaced.contains(expected),
            "bootstrap template changed shape: {expected}"
        );
    }
    replaced
}
