//! Gatehouse control plane: the admin REST API over a configuration store,
//! translated into versioned snapshots and streamed over ADS to every Envoy.
//!
//! Data flow: admin write ([`admin`]) → transaction in the [`store`] (version
//! bump, `NOTIFY`) → [`sync`] loads the whole state → pure [`translate`] into
//! a checked [`xds::Snapshot`] → every ADS stream ([`xds::server`]) pushes what
//! changed, make-before-break.

pub mod admin;
pub mod admission;
pub mod clock;
pub mod config;
pub mod fleet_stats;
pub mod keyring;
pub mod model;
pub mod secret;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod translate;
pub mod usage;
pub mod xds;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use gatehouse_service_kit::why_ended;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::{
    config::Config,
    store::{Store, StoreError},
    sync::{ConfigSource, SyncSettings},
    telemetry::Metrics,
    translate::ProxySettings,
    xds::{Rollout, XdsServer, status::NodeRegistry},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] config::ConfigError),
    #[error("cannot create data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    #[error("{0} server failed: {1}")]
    Serve(&'static str, String),
}

impl StartError {
    /// Bad configuration (exit 64, like sysexits' EX_USAGE) versus a runtime failure.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Config(_) | StartError::DataDir(..) | StartError::Invalid(_)
        )
    }
}

/// A control plane with its listeners bound, ready to run.
pub struct ControlPlane {
    admin: TcpListener,
    xds: TcpListener,
    store: Store,
    /// What the sync loop reads: the store, unless a test swaps it.
    source: Arc<dyn ConfigSource>,
    proxy: ProxySettings,
    sync: SyncSettings,
    metrics: Metrics,
    bootstrap_token: Option<admin::auth::Secret>,
    xds_token: xds::auth::NodeToken,
    admin_limits: gatehouse_service_kit::HttpLimits,
    xds_max_connections: usize,
    usage_retention: Duration,
    /// TLS on the xDS port.
    xds_tls: Option<config::XdsIdentity>,
    /// xDS streams are encrypted and authenticated (TLS and a token).
    xds_secure: bool,
}

impl ControlPlane {
    /// Binds the configured addresses. The store is connected lazily: a
    /// control plane whose database is down starts, and serves nothing to
    /// Envoy until it can read a complete configuration.
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        config.check()?;
        let bootstrap_token = config.bootstrap_token()?;
        let xds_token = config.xds_token_or_generated()?;
        if xds_token.is_none() {
            tracing::warn!(
                addr = %config.xds_addr,
                "--xds-insecure: xDS is served to anyone who can reach it, without a token"
            );
        }
        if config.store.database_url.is_none() {
            std::fs::create_dir_all(&config.store.data_dir)
                .map_err(|e| StartError::DataDir(config.store.data_dir.clone(), e))?;
        }
        let envoy = config.envoy_validator()?;
        match &envoy {
            Some(path) => {
                tracing::info!(envoy = %path.display(), "changes are validated by Envoy before commit")
            }
            None => tracing::info!(
                "changes are checked by translation only (no Envoy to validate with)"
            ),
        }
        let xds_tls = config.tls.xds_identity()?;
        let xds_secure = xds_tls.is_some() && xds_token.is_some();
        let keyring = config.tls.keyring()?;
        match (&xds_tls, &keyring) {
            (Some(_), _) => tracing::info!(secure = xds_secure, "xDS is served over TLS"),
            (None, Some(_)) => tracing::warn!(
                "a key-encryption key is set but the xDS port is plaintext: uploaded private \
                 keys are refused (--xds-tls-cert-file)"
            ),
            (None, None) => {}
        }
        let store = Store::connect_lazy(&config.database_url())?
            .with_admission(admission::gate(config.proxy_settings(), envoy))
            .with_keys(store::KeyPolicy {
                keyring,
                deliverable: xds_secure,
            });
        // Connection bounds, not descriptors, decide how many are served.
        gatehouse_service_kit::raise_open_files_limit();
        gatehouse_service_kit::alloc::return_freed_memory();
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })
        };
        Ok(Self {
            admin: bind("admin", config.admin_addr).await?,
            xds: bind("xDS", config.xds_addr).await?,
            source: Arc::new(store.clone()),
            store,
            proxy: config.proxy_settings(),
            sync: config.sync_settings(),
            metrics: Metrics::default(),
            bootstrap_token,
            xds_token: xds::auth::NodeToken::new(xds_token),
            admin_limits: config.admin_limits(),
            xds_max_connections: config.xds_max_connections,
            usage_retention: Duration::from_secs(u64::from(config.usage_retention_days) * 86_400),
            xds_tls,
            xds_secure,
        })
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    pub fn xds_addr(&self) -> Option<SocketAddr> {
        self.xds.local_addr().ok()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What the sync loop reads instead of the store: for tests that break
    /// the path from the store to Envoy.
    #[doc(hidden)]
    pub fn with_config_source(mut self, source: Arc<dyn ConfigSource>) -> Self {
        self.source = source;
        self
    }

    /// Serves until `shutdown` resolves or a server fails, then drains for at
    /// most `grace`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), StartError> {
        let token = CancellationToken::new();
        let nodes = NodeRegistry::default();
        let rollout = Rollout::default().with_refusal_log(Arc::new(self.store.clone()));
        let mut sync = tokio::spawn(sync::run(
            self.source,
            self.proxy,
            self.sync,
            rollout.clone(),
            self.metrics.clone(),
            token.clone(),
        ));
        let admin_app = admin::app(admin::AdminState {
            store: self.store.clone(),
            nodes: nodes.clone(),
            metrics: self.metrics.clone(),
            rollout: rollout.clone(),
            bootstrap_token: self.bootstrap_token,
        });
        let mut admin = tokio::spawn({
            let served = gatehouse_service_kit::serve_http(
                self.admin,
                admin_app,
                self.admin_limits,
                token.clone().cancelled_owned(),
            );
            async move {
                served.await;
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let fleet_stats = fleet_stats::FleetStats::default();
        let mut analysis = tokio::spawn(fleet_stats::analyse(
            fleet_stats.clone(),
            rollout.clone(),
            token.clone(),
        ));
        let xds_token = self.xds_token.clone().with_node_tokens(rollout.clone());
        let xds_service = XdsServer::new(rollout, nodes, self.metrics.clone(), token.clone())
            .secure(self.xds_secure);
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = &self.xds_tls {
            let identity =
                tonic::transport::Identity::from_pem(&identity.cert_pem, identity.key_pem.expose());
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &self.xds_tls.as_ref().and_then(|t| t.client_ca_pem.clone()) {
                // Every client presents a certificate from this bundle.
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder
                .tls_config(tls)
                .map_err(|e| StartError::Serve("xDS TLS", e.to_string()))?;
        }
        let mut xds = tokio::spawn(
            builder
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .max_concurrent_streams(xds::limits::MAX_STREAMS_PER_CONNECTION)
                .add_service(InterceptedService::new(
                    xds_service.into_service(),
                    xds_token.clone(),
                ))
                .add_service(InterceptedService::new(
                    usage::KeyUsageService::server(self.store.clone()),
                    xds_token.clone(),
                ))
                .add_service(InterceptedService::new(
                    usage::TrafficUsageService::server(self.store.clone(), self.usage_retention),
                    xds_token.clone(),
                ))
                .add_service(InterceptedService::new(
                    fleet_stats.server(),
                    xds_token.clone(),
                ))
                .serve_with_incoming_shutdown(
                    xds::limits::bounded(self.xds, self.xds_max_connections),
                    token.clone().cancelled_owned(),
                ),
        );
        // Any task that ends before shutdown stops the process: a control
        // plane whose sync loop died would leave Envoy on a frozen config.
        let failure = tokio::select! {
            _ = shutdown => None,
            r = &mut sync => Some(StartError::Serve("sync", why_ended(r))),
            r = &mut admin => Some(StartError::Serve("admin", why_ended(r))),
            r = &mut xds => Some(StartError::Serve("xDS", why_ended(r))),
            r = &mut analysis => Some(StartError::Serve("canary analysis", why_ended(r.map(Ok::<(), std::convert::Infallible>)))),
        };
        tracing::info!("shutting down");
        token.cancel();
        let drain = async {
            if !sync.is_finished() {
                let _ = sync.await;
            }
            if !admin.is_finished() {
                let _ = admin.await;
            }
            if !xds.is_finished() {
                let _ = xds.await;
            }
            if !analysis.is_finished() {
                let _ = analysis.await;
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                ?grace,
                "shutdown deadline passed; closing remaining connections"
            );
        }
        failure.map_or(Ok(()), Err)
    }
}
