//! The check every change passes before it is committed: the resulting
//! configuration must translate into a consistent snapshot, and, when an
//! Envoy binary is configured, that Envoy must accept the translated
//! resources (`envoy --mode validate`), so a version nodes would NACK is
//! refused at the API instead of reaching the fleet.
//!
//! Envoy validates a static rendering of the snapshot: EDS clusters carry
//! their endpoints inline and the listener its route configuration, which
//! also makes Envoy check that every route's cluster exists; TLS is left out,
//! as certificate files are on the Envoy hosts. Gatehouse's own
//! resource types are checked by translation only. A rendering identical to
//! the last one Envoy accepted is not validated again (API key changes, a
//! dry run followed by the same apply).

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_core::future::BoxFuture;
use gatehouse_proto::{bootstrap, cluster, core, endpoint, hcm, listener, route, to_any};
use prost::Message;
use tracing::{debug, info};

use crate::{
    clock::now_ms,
    model::ConfigState,
    model::FieldError,
    store::{Admission, AdmissionError, Prepared},
    translate::{self, ProxySettings},
    xds::snapshot::{ResourceType, Snapshot, fnv1a},
};

/// How long one `envoy --mode validate` may take.
const ENVOY_DEADLINE: Duration = Duration::from_secs(30);

/// Translation, then (optionally) a real Envoy.
pub struct Gate {
    proxy: ProxySettings,
    envoy: Option<EnvoyValidator>,
}

impl Gate {
    pub fn new(proxy: ProxySettings, envoy: Option<PathBuf>) -> Self {
        Self {
            proxy,
            envoy: envoy.map(EnvoyValidator::new),
        }
    }
}

impl Admission for Gate {
    /// Hands back the snapshot it translated and checked: the sync loop
    /// serves it once the change commits, without translating again.
    fn admit<'a>(
        &'a self,
        state: &'a ConfigState,
    ) -> BoxFuture<'a, Result<Option<Prepared>, AdmissionError>> {
        let span = tracing::info_span!("admission");
        Box::pin(tracing::Instrument::instrument(
            async move {
                let snapshot = tracing::info_span!("translate")
                    .in_scope(|| translate::snapshot(state, &self.proxy, now_ms()))
                    .map_err(|e| {
                        AdmissionError::Refused(vec![FieldError::new(
                            "config",
                            format!(
                                "does not translate into a consistent Envoy configuration: {e}"
                            ),
                        )])
                    })?;
                if let Some(envoy) = &self.envoy {
                    envoy.validate(&snapshot).await?;
                }
                Ok(Some(Arc::new(snapshot) as Prepared))
            },
            span,
        ))
    }
}

/// Runs `envoy --mode validate` on static renderings of snapshots.
pub struct EnvoyValidator {
    binary: PathBuf,
    /// Fingerprint of the last rendering Envoy accepted.
    accepted: Mutex<Option<u64>>,
    runs: AtomicU64,
}

impl EnvoyValidator {
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            accepted: Mutex::new(None),
            runs: AtomicU64::new(0),
        }
    }

    #[tracing::instrument(name = "envoy.validate", skip_all)]
    pub async fn validate(&self, snapshot: &Snapshot) -> Result<(), AdmissionError> {
        let rendered = static_bootstrap(snapshot)
            .map_err(|e| AdmissionError::Unavailable(format!("cannot render for Envoy: {e}")))?
            .encode_to_vec();
        let fingerprint = fnv1a(&rendered);
        let accepted = || self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        if *accepted() == Some(fingerprint) {
            return Ok(());
        }
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        // Envoy picks the format from the extension: `.pb` is binary.
        let path = std::env::temp_dir().join(format!(
            "gatehouse-validate-{}-{run}.pb",
            std::process::id()
        ));
        let started = Instant::now();
        let outcome = self.run(&path, &rendered).await;
        let _ = tokio::fs::remove_file(&path).await;
        debug!(elapsed = ?started.elapsed(), ok = outcome.is_ok(), "Envoy validation");
        if outcome.is_ok() {
            *accepted() = Some(fingerprint);
        }
        outcome
    }

    async fn run(&self, path: &std::path::Path, rendered: &[u8]) -> Result<(), AdmissionError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            AdmissionError::Unavailable(format!("Envoy validation {what}: {e}"))
        };
        tokio::fs::write(path, rendered)
            .await
            .map_err(|e| unavailable("cannot write its input", &e))?;
        let command = tokio::process::Command::new(&self.binary)
            .args(["--mode", "validate", "--disable-hot-restart", "-l", "error"])
            .args(["--log-format", "%v", "-c"])
            .arg(path)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(ENVOY_DEADLINE, command)
            .await
            .map_err(|e| unavailable("timed out", &e))?
            .map_err(|e| unavailable(&format!("cannot run {}", self.binary.display()), &e))?;
        if output.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        match rejection(&text) {
            Some(reason) => {
                info!(reason, "Envoy rejects the configuration; not committed");
                Err(AdmissionError::Refused(vec![FieldError::new(
                    "config",
                    format!("Envoy rejects the translated configuration: {reason}"),
                )]))
            }
            None => Err(unavailable(
                "failed",
                &format!("exit {}: {}", output.status, text.trim()),
            )),
        }
    }
}

/// Envoy's reason from its validate-mode output, if it rejected the config.
fn rejection(output: &str) -> Option<String> {
    const MARKER: &str = "error initializing configuration '";
    output.lines().find_map(|line| {
        let rest = &line[line.find(MARKER)? + MARKER.len()..];
        // The path is followed by `': ` and Envoy's reason.
        let reason = &rest[rest.find("': ")? + 3..];
        Some(reason.trim().to_owned())
    })
}

/// The snapshot's Envoy resources as one static bootstrap.
fn static_bootstrap(snapshot: &Snapshot) -> Result<bootstrap::Bootstrap, prost::DecodeError> {
    use cluster::cluster::{ClusterDiscoveryType, DiscoveryType};

    let decode = |kind: ResourceType| {
        snapshot
            .resources(kind)
            .values()
            .map(|r| r.resource.value.as_slice())
            .collect::<Vec<_>>()
    };
    let mut clusters = Vec::new();
    for bytes in decode(ResourceType::Cluster) {
        let mut c = cluster::Cluster::decode(bytes)?;
        // Upstream TLS files (CA bundles, client certificates) are on the
        // Envoy hosts too.
        c.transport_socket = None;
        if snapshot.is_eds_cluster(&c.name) {
            let assignment = snapshot
                .resources(ResourceType::Endpoint)
                .get(&c.name)
                .map(|r| endpoint::ClusterLoadAssignment::decode(r.resource.value.as_slice()))
                .transpose()?;
            c.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            c.eds_cluster_config = None;
            c.load_assignment = assignment;
        }
        clusters.push(c);
    }
    let routes = snapshot.resources(ResourceType::Route);
    let extension_configs = snapshot.resources(ResourceType::ExtensionConfig);
    let mut listeners = Vec::new();
    for bytes in decode(ResourceType::Listener) {
        let mut l = listener::Listener::decode(bytes)?;
        for chain in &mut l.filter_chains {
            // Certificate files live on the Envoy hosts, not here: an Envoy
            // that cannot read them NACKs, and the rollout holds back.
            chain.transport_socket = None;
            for filter in &mut chain.filters {
                let Some(listener::filter::ConfigType::TypedConfig(any)) = &mut filter.config_type
                else {
                    continue;
                };
                let mut manager = hcm::HttpConnectionManager::decode(any.value.as_slice())?;
                use hcm::http_connection_manager::RouteSpecifier;
                if let Some(RouteSpecifier::Rds(rds)) = &manager.route_specifier {
                    let config = routes
                        .get(&rds.route_config_name)
                        .map(|r| route::RouteConfiguration::decode(r.resource.value.as_slice()))
                        .transpose()?
                        .unwrap_or_default();
                    manager.route_specifier = Some(RouteSpecifier::RouteConfig(config));
                }
                // Filter configurations delivered over ECDS, inlined.
                for filter in &mut manager.http_filters {
                    use hcm::http_filter::ConfigType;
                    if !matches!(filter.config_type, Some(ConfigType::ConfigDiscovery(_))) {
                        continue;
                    }
                    let config = extension_configs
                        .get(&filter.name)
                        .map(|r| core::TypedExtensionConfig::decode(r.resource.value.as_slice()))
                        .transpose()?
                        .and_then(|c| c.typed_config);
                    filter.config_type = config.map(ConfigType::TypedConfig);
                }
                *any = to_any(&manager);
            }
        }
        listeners.push(l);
    }
    Ok(bootstrap::Bootstrap {
        static_resources: Some(bootstrap::bootstrap::StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Shared handle, as the store keeps it.
pub fn gate(proxy: ProxySettings, envoy: Option<PathBuf>) -> Arc<dyn Admission> {
    Arc::new(Gate::new(proxy, envoy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_reasons_are_read_from_its_output() {
        let out = "[critical][main] error initializing configuration '/tmp/x.pb': \
                   invalid character class range: \\p{ASCII_Hex_Digit}\n";
        assert_eq!(
            rejection(out).as_deref(),
            Some("invalid character class range: \\p{ASCII_Hex_Digit}")
        );
        assert_eq!(rejection("configuration '/tmp/x.pb' OK"), None);
    }
}
