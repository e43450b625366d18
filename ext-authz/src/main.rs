//! `gatehouse-ext-authz`: parses its flags, then runs the service.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use gatehouse_service_kit::{CommonArgs, Defaults, Started};

/// Gatehouse ext-authz: Envoy's ext_authz (envoy.service.auth.v3) gRPC server.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-ext-authz", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// How often API key use (for "last used") is reported to the control plane.
    #[arg(
        long,
        env = "GATEHOUSE_USAGE_REPORT_INTERVAL_MS",
        default_value_t = 10_000
    )]
    usage_report_interval_ms: u64,

    /// Most consumers with their own label in the usage metrics
    /// (`gatehouse_ext_authz_usage_*`); later ones count as "other". The
    /// control plane's usage rows (`GET /v1/usage`) name every consumer.
    #[arg(long, env = "GATEHOUSE_USAGE_METRIC_CONSUMERS", default_value_t = 100)]
    usage_metric_consumers: usize,
}

/// A pool of one thread per CPU by default, so a token whose signature is
/// being verified (hundreds of microseconds) does not hold up other checks.
const DEFAULTS: Defaults = Defaults::new("127.0.0.1:18001", "ext-authz", "0");

fn main() -> ExitCode {
    let args: Args = gatehouse_service_kit::config::parse(&DEFAULTS);
    let interval = Duration::from_millis(args.usage_report_interval_ms);
    let usage_consumers = args.usage_metric_consumers;
    gatehouse_service_kit::run::main(
        args.common,
        "gatehouse-ext-authz",
        |started: Started| async move {
            let settings = gatehouse_ext_authz::Settings {
                xds_endpoint: started.xds_url,
                node_id: started.node_id,
                xds_token: started.xds_token,
                xds_ca: started.xds_ca,
                usage_report_interval: interval,
                event_summary: started.event_summary,
                usage_consumers,
            };
            let shutdown = started.stop.cancelled_owned();
            Ok(tokio::spawn(gatehouse_ext_authz::serve(
                started.listener,
                settings,
                shutdown,
            )))
        },
    )
}
