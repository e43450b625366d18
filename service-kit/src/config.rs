//! The command line both services share: where to listen, where the control
//! plane is and as whom to subscribe, threads, shutdown grace and log
//! format. Each service flattens [`CommonArgs`] into its own arguments and
//! gives its defaults ([`Defaults`]); [`parse`] exits 64 with a one-line
//! reason on an invalid configuration.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use gatehouse_xds_client::{TokenArgs, TokenError, XdsToken};

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    #[value(alias = "plain")]
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags every Gatehouse service takes (flatten into its arguments).
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Address for gRPC and the HTTP /healthz, /readyz and /metrics.
    #[arg(long, env = "GATEHOUSE_LISTEN_ADDR")]
    pub listen_addr: SocketAddr,

    /// The control plane's xDS address.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_URL",
        default_value = "http://127.0.0.1:18000"
    )]
    pub xds_url: String,

    /// Node id reported to the control plane (shown in its status).
    #[arg(long, env = "GATEHOUSE_NODE_ID")]
    pub node_id: String,

    #[command(flatten)]
    pub xds_token: TokenArgs,

    /// Threads serving requests: 1 runs everything on one thread (the least
    /// CPU per request); more is a work-stealing pool of that many; 0 is one
    /// per CPU.
    #[arg(long, env = "GATEHOUSE_WORKER_THREADS")]
    pub worker_threads: usize,

    /// Longest wait for requests in flight on shutdown.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE_MS", default_value_t = 2000)]
    pub shutdown_grace_ms: u64,

    /// Security events (auth failures, rate-limit hits): after the first of
    /// a kind, the rest are summarised once per this interval.
    #[arg(long, env = "GATEHOUSE_EVENT_SUMMARY_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub event_summary_ms: u64,

    /// Log format: text or json (filter with RUST_LOG).
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub telemetry: crate::TelemetryArgs,
}

impl CommonArgs {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The xDS token from the flag, the environment or the file.
    pub fn xds_token(&self) -> Result<Option<XdsToken>, TokenError> {
        self.xds_token.token()
    }

    /// The CA of an `https://` xDS URL (`--xds-ca-file`).
    pub fn xds_ca(&self) -> Result<Option<gatehouse_xds_client::XdsCa>, TokenError> {
        self.xds_token.ca()
    }
}

/// A service's own defaults for the common flags.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub listen_addr: &'static str,
    pub node_id: &'static str,
    pub worker_threads: &'static str,
}

impl Defaults {
    /// Listen address, node id, worker threads.
    pub const fn new(
        listen_addr: &'static str,
        node_id: &'static str,
        worker_threads: &'static str,
    ) -> Self {
        Self {
            listen_addr,
            node_id,
            worker_threads,
        }
    }
}

/// Parses the command line and environment into `A` with `defaults`. Help
/// and version print and exit 0; anything invalid prints one line naming the
/// flag and exits 64 (EX_USAGE).
pub fn parse<A: Parser>(defaults: &Defaults) -> A {
    match try_parse_from(defaults, std::env::args_os()) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => exit_invalid(&first_line(&e.to_string())),
    }
}

/// [`parse`] over given arguments, for tests.
pub fn try_parse_from<A: Parser, I, T>(defaults: &Defaults, args: I) -> Result<A, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = A::command()
        .mut_arg("listen_addr", |a| {
            a.default_value(defaults.listen_addr).required(false)
        })
        .mut_arg("node_id", |a| {
            a.default_value(defaults.node_id).required(false)
        })
        .mut_arg("worker_threads", |a| {
            a.default_value(defaults.worker_threads).required(false)
        });
    let mut matches = command.try_get_matches_from(args)?;
    A::from_arg_matches_mut(&mut matches)
}

/// Prints `reason` on one line and exits 64 (EX_USAGE: invalid configuration).
pub fn exit_invalid(reason: &str) -> ! {
    eprintln!("invalid configuration: {reason}");
    std::process::exit(64)
}

fn first_line(message: &str) -> String {
    message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    const DEFAULTS: Defaults = Defaults {
        listen_addr: "127.0.0.1:18009",
        node_id: "test",
        worker_threads: "1",
    };

    #[test]
    fn each_service_gives_its_defaults() {
        let args: Args = try_parse_from(&DEFAULTS, ["svc"]).expect("defaults parse");
        assert_eq!(args.common.listen_addr.port(), 18009);
        assert_eq!(args.common.node_id, "test");
        assert_eq!(args.common.worker_threads, 1);
        assert_eq!(args.common.log_format, LogFormat::Text);
        let json: Args = try_parse_from(&DEFAULTS, ["svc", "--log-format", "json"]).expect("json");
        assert_eq!(json.common.log_format, LogFormat::Json);
    }

    #[test]
    fn an_invalid_flag_is_one_line_naming_it() {
        let e = try_parse_from::<Args, _, _>(&DEFAULTS, ["svc", "--listen-addr", "nowhere"])
            .expect_err("invalid address");
        let line = first_line(&e.to_string());
        assert!(line.contains("--listen-addr"), "{line}");
        assert!(!line.contains('\n'));
    }
}
