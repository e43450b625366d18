//! Command-line and environment configuration (every flag has a `GATEHOUSE_*` variable).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser};

mod tls;
pub use tls::{TlsArgs, XdsIdentity};

use gatehouse_service_kit::{TelemetryArgs, parse_sampling_percent};

use crate::{
    secret::{MIN_BOOTSTRAP_LEN, Secret},
    store::DatabaseUrl,
    sync::SyncSettings,
    telemetry::LogFormat,
    translate::{
        ExtAuthzSettings, ProxySettings, RateLimitSettings, access_log::AccessLogFormat,
        shedding::SheddingSettings, tracing::TracingSettings,
    },
};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "gatehouse-control-plane",
    version,
    about = "Gatehouse control plane: admin API, configuration store and xDS server"
)]
pub struct Config {
    /// Admin REST API address.
    #[arg(long, env = "GATEHOUSE_ADMIN_ADDR", default_value = "127.0.0.1:8001")]
    pub admin_addr: SocketAddr,

    /// xDS (ADS) gRPC address Envoys connect to.
    #[arg(long, env = "GATEHOUSE_XDS_ADDR", default_value = "127.0.0.1:18000")]
    pub xds_addr: SocketAddr,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Bootstrap admin token (role admin, name "bootstrap"); at least 32 characters.
    /// With it, every admin API call needs a token. Required to bind the admin
    /// API to a non-loopback address.
    #[arg(
        long,
        env = "GATEHOUSE_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<Secret>,

    /// File holding the bootstrap admin token.
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Shared secret every xDS client (Envoy, ext-authz, ratelimit-service)
    /// must present as `authorization: Bearer …`. Without one (and without
    /// --xds-insecure) the control plane generates one into
    /// `<data-dir>/xds-token` and keeps it across restarts.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_TOKEN",
        hide_env_values = true,
        conflicts_with = "xds_token_file"
    )]
    pub xds_token: Option<Secret>,

    /// File holding the xDS token.
    #[arg(long, env = "GATEHOUSE_XDS_TOKEN_FILE")]
    pub xds_token_file: Option<PathBuf>,

    /// Serve xDS to whoever can reach the port, without a token (anyone who
    /// can connect could then read the configuration and hold back the
    /// fleet by refusing versions).
    #[arg(
        long,
        env = "GATEHOUSE_XDS_INSECURE",
        conflicts_with_all = ["xds_token", "xds_token_file"]
    )]
    pub xds_insecure: bool,

    /// How often the store's version is checked (catches changes made by other replicas).
    #[arg(long, env = "GATEHOUSE_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// Least time between two snapshot builds: a change after a quiet spell
    /// is built at once, the changes of a burst coalesce into one more build.
    #[arg(long, env = "GATEHOUSE_DEBOUNCE_MS", default_value_t = 5)]
    pub debounce_ms: u64,

    /// xDS connections served at once (each Envoy and service uses one);
    /// more are closed on accept.
    #[arg(long, env = "GATEHOUSE_XDS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub xds_max_connections: usize,

    /// Days of hourly usage rows (requests per route and consumer, `GET
    /// /v1/usage`) kept; older ones are dropped.
    #[arg(long, env = "GATEHOUSE_USAGE_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub usage_retention_days: u32,

    /// Admin API connections served at once; more are closed on accept.
    #[arg(long, env = "GATEHOUSE_ADMIN_MAX_CONNECTIONS", default_value_t = 4096)]
    pub admin_max_connections: usize,

    /// Time a client has to send a request's head to the admin API (and
    /// that a kept-alive connection may stay idle) before it is closed.
    #[arg(
        long,
        env = "GATEHOUSE_ADMIN_HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub admin_header_timeout_ms: u64,

    /// Longest wait for open connections and streams to finish on shutdown.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE_MS", default_value_t = 5000)]
    pub shutdown_grace_ms: u64,

    /// Log format: text or json (filter with RUST_LOG).
    #[arg(
        long,
        env = "GATEHOUSE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Envoy binary that checks every change before it is committed
    /// (`envoy --mode validate` on the translated config): `auto` uses
    /// `envoy` from PATH when there is one, `off` checks by translation only.
    #[arg(long, env = "GATEHOUSE_VALIDATE_WITH_ENVOY", default_value = "auto")]
    pub validate_with_envoy: String,

    /// Write the bound addresses as JSON to this file once serving (for supervisors and tests).
    #[arg(long, env = "GATEHOUSE_ADDR_FILE", hide = true)]
    pub addr_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Database URL: postgres://… (production) or sqlite://… . Defaults to SQLite in --data-dir.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// Directory for the embedded SQLite database.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = ".gatehouse")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Address Envoy's HTTP listener binds (served to Envoy over LDS).
    #[arg(long, env = "GATEHOUSE_PROXY_ADDR", default_value = "0.0.0.0:8000")]
    pub proxy_addr: SocketAddr,

    /// Fleets (Envoy node clusters) that open the default listener,
    /// comma-separated; empty: every Envoy.
    #[arg(long, env = "GATEHOUSE_PROXY_FLEETS", value_delimiter = ',', value_parser = parse_fleet)]
    pub proxy_fleets: Vec<String>,

    /// File Envoy writes its access log to, one line per request
    /// (`/dev/stdout`: Envoy's standard output; `off`: none).
    #[arg(long, env = "GATEHOUSE_ACCESS_LOG", default_value = "/dev/stdout")]
    pub access_log: String,

    /// Envoy streams a usage log (route, consumer, status, bytes of every
    /// routed request) to ext-authz, which counts usage per route and
    /// consumer; `off` sends none.
    #[arg(long, env = "GATEHOUSE_USAGE_LOG", value_enum, default_value_t = Switch::On)]
    pub usage_log: Switch,

    /// Envoy also exports its access log as OpenTelemetry log records to
    /// the `--otlp-endpoint` collector (batched, off the request's path).
    #[arg(long, env = "GATEHOUSE_ACCESS_LOG_OTLP", value_enum, default_value_t = Switch::Off)]
    pub access_log_otlp: Switch,

    /// Access log lines as JSON objects or as text.
    #[arg(long, env = "GATEHOUSE_ACCESS_LOG_FORMAT", value_enum, default_value_t = AccessLogFormatArg::Json)]
    pub access_log_format: AccessLogFormatArg,

    /// Where Envoy reaches ext-authz (gRPC), served to Envoy as a cluster.
    #[arg(
        long,
        env = "GATEHOUSE_EXT_AUTHZ_ADDR",
        default_value = "127.0.0.1:18001"
    )]
    pub ext_authz_addr: SocketAddr,

    /// How long Envoy waits for ext-authz before the route's failure mode applies.
    #[arg(long, env = "GATEHOUSE_EXT_AUTHZ_TIMEOUT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub ext_authz_timeout_ms: u32,

    /// Status Envoy answers a fail-closed protected route with when ext-authz
    /// cannot be reached or fails.
    #[arg(long, env = "GATEHOUSE_EXT_AUTHZ_STATUS_ON_ERROR", default_value_t = 503,
          value_parser = clap::value_parser!(u16).range(400..=599))]
    pub ext_authz_status_on_error: u16,

    /// Where Envoy reaches ratelimit-service (gRPC), served to Envoy as a cluster.
    #[arg(
        long,
        env = "GATEHOUSE_RATELIMIT_ADDR",
        default_value = "127.0.0.1:18002"
    )]
    pub ratelimit_addr: SocketAddr,

    /// How long Envoy waits for ratelimit-service before letting the request through.
    #[arg(long, env = "GATEHOUSE_RATELIMIT_TIMEOUT_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub ratelimit_timeout_ms: u32,

    /// Refuse requests (500) when ratelimit-service itself cannot be reached,
    /// instead of letting them through.
    #[arg(long, env = "GATEHOUSE_RATELIMIT_DENY_WHEN_UNREACHABLE")]
    pub ratelimit_deny_when_unreachable: bool,

    /// Proxies in front of Envoy whose X-Forwarded-For entries are trusted for
    /// the client address (0: the peer address is the client).
    #[arg(long, env = "GATEHOUSE_XFF_TRUSTED_HOPS", default_value_t = 0)]
    pub xff_trusted_hops: u32,

    /// Routes with `load_shedding` are shed while their p90 latency stays
    /// above this (Envoy's adaptive concurrency, fixed target).
    #[arg(long, env = "GATEHOUSE_SHED_TARGET_LATENCY_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub shed_target_latency_ms: u32,

    /// The most requests at once the shedding routes ever get together.
    #[arg(long, env = "GATEHOUSE_SHED_MAX_CONCURRENCY", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub shed_max_concurrency: u32,

    /// Share of requests, in percent, for which Envoy starts a trace (with
    /// `--otlp-endpoint`); requests with a sampled `traceparent` are always traced.
    #[arg(long, env = "GATEHOUSE_TRACE_SAMPLING_PERCENT", default_value = "1",
          value_parser = parse_sampling_percent)]
    pub trace_sampling_percent: u32,
}

/// A feature turned `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `--access-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormatArg {
    Json,
    Text,
}

impl Config {
    pub fn database_url(&self) -> DatabaseUrl {
        self.store
            .database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::sqlite_in(&self.store.data_dir))
    }

    pub fn proxy_settings(&self) -> ProxySettings {
        ProxySettings {
            listen: self.proxy.proxy_addr,
            access_log_path: (self.proxy.access_log != "off")
                .then(|| self.proxy.access_log.clone()),
            usage_log: self.proxy.usage_log == Switch::On,
            access_log_otlp: self.proxy.access_log_otlp == Switch::On,
            access_log_format: match self.proxy.access_log_format {
                AccessLogFormatArg::Json => AccessLogFormat::Json,
                AccessLogFormatArg::Text => AccessLogFormat::Text,
            },
            ext_authz: ExtAuthzSettings {
                address: self.proxy.ext_authz_addr,
                timeout_ms: self.proxy.ext_authz_timeout_ms,
                status_on_error: self.proxy.ext_authz_status_on_error,
            },
            ratelimit: RateLimitSettings {
                address: self.proxy.ratelimit_addr,
                timeout_ms: self.proxy.ratelimit_timeout_ms,
                deny_when_unreachable: self.proxy.ratelimit_deny_when_unreachable,
            },
            xff_trusted_hops: self.proxy.xff_trusted_hops,
            default_fleets: self.proxy.proxy_fleets.clone(),
            shedding: SheddingSettings {
                target_latency_ms: self.proxy.shed_target_latency_ms,
                max_concurrency: self.proxy.shed_max_concurrency,
            },
            tracing: self
                .telemetry
                .otlp_endpoint
                .clone()
                .map(|collector| TracingSettings {
                    collector,
                    sampling_ppm: self.proxy.trace_sampling_percent,
                }),
        }
    }

    pub fn sync_settings(&self) -> SyncSettings {
        SyncSettings {
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(10)),
            debounce: Duration::from_millis(self.debounce_ms),
        }
    }

    /// Flags that only make sense together.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.proxy.access_log_otlp == Switch::On && self.telemetry.otlp_endpoint.is_none() {
            return Err(ConfigError::OtlpLogsWithoutCollector);
        }
        Ok(())
    }

    /// The bootstrap admin token from the flag, the environment or the file.
    pub fn bootstrap_token(&self) -> Result<Option<Secret>, ConfigError> {
        let token = secret(
            &self.admin_token,
            &self.admin_token_file,
            "--admin-token-file",
            "the bootstrap admin token",
        )?;
        if token.is_none() && !self.admin_addr.ip().is_loopback() {
            return Err(ConfigError::OpenAdmin(self.admin_addr));
        }
        Ok(token)
    }

    /// The token xDS clients must present, from the flag, the environment or
    /// the file; only printable ASCII, as it travels in gRPC metadata.
    pub fn xds_token(&self) -> Result<Option<Secret>, ConfigError> {
        let token = secret(
            &self.xds_token,
            &self.xds_token_file,
            "--xds-token-file",
            "the xDS token",
        )?;
        if let Some(token) = &token
            && !token.expose().bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::XdsTokenNotAscii);
        }
        Ok(token)
    }

    /// The token xDS clients must present: the configured one, or, unless
    /// `--xds-insecure`, the one generated into the data directory on the
    /// first start (created readable by its owner only, then reused).
    pub fn xds_token_or_generated(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(token) = self.xds_token()? {
            return Ok(Some(token));
        }
        if self.xds_insecure {
            return Ok(None);
        }
        let path = self.store.data_dir.join(GENERATED_XDS_TOKEN);
        let failed = |source| ConfigError::SecretFile {
            flag: "the generated xDS token",
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.store.data_dir).map_err(failed)?;
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        match file.open(&path) {
            Ok(mut file) => {
                let token = crate::secret::issue_xds_token().map_err(|e| failed(e.into()))?;
                std::io::Write::write_all(&mut file, token.expose().as_bytes()).map_err(failed)?;
                tracing::info!(
                    path = %path.display(),
                    "generated the xDS token: Envoy and the services present it (see README, xDS security)"
                );
                Ok(Some(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let token = std::fs::read_to_string(&path).map_err(failed)?;
                let token = Secret::new(token.trim().to_owned());
                if token.expose().is_empty()
                    || !token.expose().bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ConfigError::XdsTokenNotAscii);
                }
                Ok(Some(token))
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// The Envoy binary that validates changes before commit, if any.
    pub fn envoy_validator(&self) -> Result<Option<PathBuf>, ConfigError> {
        match self.validate_with_envoy.as_str() {
            "off" => Ok(None),
            "auto" => Ok(std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("envoy"))
                    .find(|candidate| candidate.is_file())
            })),
            path => {
                let path = PathBuf::from(path);
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(ConfigError::NoEnvoy(path))
                }
            }
        }
    }

    /// What one admin API client may hold.
    pub fn admin_limits(&self) -> gatehouse_service_kit::HttpLimits {
        gatehouse_service_kit::HttpLimits {
            max_connections: self.admin_max_connections.max(1),
            header_read_timeout: Duration::from_millis(self.admin_header_timeout_ms.max(1)),
            ..Default::default()
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Where the generated xDS token is kept, in the data directory.
pub const GENERATED_XDS_TOKEN: &str = "xds-token";

/// A configuration the control plane refuses to start with (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to serve the admin API on {0} without authentication: set GATEHOUSE_ADMIN_TOKEN \
         or --admin-token-file, or bind to a loopback address"
    )]
    OpenAdmin(std::net::SocketAddr),
    #[error("the xDS token must be printable ASCII without spaces")]
    XdsTokenNotAscii,
    #[error("--validate-with-envoy {}: no such file (use a path to envoy, auto or off)", .0.display())]
    NoEnvoy(PathBuf),
    #[error("cannot read {flag} {}: {source}", path.display())]
    SecretFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} must be at least {MIN_BOOTSTRAP_LEN} characters")]
    ShortSecret(&'static str),
    /// The xDS certificate or the key-encryption key cannot be used.
    #[error("{0}")]
    XdsTls(String),
    #[error("--access-log-otlp on needs --otlp-endpoint (the collector to send the records to)")]
    OtlpLogsWithoutCollector,
}

fn parse_fleet(value: &str) -> Result<String, String> {
    if crate::model::gateway::is_fleet(value) {
        Ok(value.to_owned())
    } else {
        Err("a fleet is an Envoy node cluster: 1-63 letters, digits, '.', '_' or '-'".into())
    }
}

/// A secret from its flag (or environment variable) or its file, at least
/// `MIN_BOOTSTRAP_LEN` characters.
fn secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    file_flag: &'static str,
    what: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    let token = match (value, file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                flag: file_flag,
                path: path.clone(),
                source,
            })?;
            Some(Secret::new(text.trim().to_owned()))
        }
        (None, None) => None,
    };
    if let Some(token) = &token
        && token.expose().len() < MIN_BOOTSTRAP_LEN
    {
        return Err(ConfigError::ShortSecret(what));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_redaction() {
        let config = Config::try_parse_from([
            "gatehouse-control-plane",
            "--database-url",
            "postgres://u:hunter2@db/gh",
        ])
        .expect("parses");
        assert_eq!(config.admin_addr.port(), 8001);
        assert_eq!(config.xds_addr.port(), 18000);
        assert_eq!(config.proxy.proxy_addr.port(), 8000);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn admin_api_off_loopback_needs_a_token() {
        let parse = |args: &[&str]| {
            Config::try_parse_from([&["gatehouse-control-plane"], args].concat()).expect("parses")
        };
        assert!(
            parse(&["--admin-addr", "0.0.0.0:8001"])
                .bootstrap_token()
                .is_err()
        );
        assert!(
            parse(&["--admin-token", "short"])
                .bootstrap_token()
                .is_err()
        );
        let long = "x".repeat(40);
        let config = parse(&["--admin-addr", "0.0.0.0:8001", "--admin-token", &long]);
        assert!(config.bootstrap_token().expect("valid").is_some());
        assert!(
            !format!("{config:?}").contains(&long),
            "the token is redacted"
        );
        assert!(
            matches!(parse(&[]).bootstrap_token(), Ok(None)),
            "loopback without a token is open"
        );
    }

    #[test]
    fn the_xds_token_is_long_printable_ascii_and_never_printed() {
        let parse = |args: &[&str]| {
            Config::try_parse_from([&["gatehouse-control-plane"], args].concat()).expect("parses")
        };
        assert!(matches!(parse(&[]).xds_token(), Ok(None)));
        assert!(parse(&["--xds-token", "short"]).xds_token().is_err());
        let spaced = format!("{} {}", "x".repeat(20), "y".repeat(20));
        assert!(parse(&["--xds-token", &spaced]).xds_token().is_err());
        let long = "z".repeat(40);
        let config = parse(&["--xds-token", &long]);
        assert!(config.xds_token().expect("valid").is_some());
        assert!(!format!("{config:?}").contains(&long), "redacted");

        let file = std::env::temp_dir().join(format!("gatehouse-xds-token-{}", std::process::id()));
        std::fs::write(&file, format!("{long}\n")).expect("write");
        let from_file = parse(&["--xds-token-file", &file.display().to_string()]).xds_token();
        assert_eq!(
            from_file.expect("valid").map(|t| t.expose().to_owned()),
            Some(long)
        );
        let _ = std::fs::remove_file(&file);
        assert!(
            parse(&["--xds-token-file", "/nonexistent/token"])
                .xds_token()
                .is_err()
        );
    }
}
