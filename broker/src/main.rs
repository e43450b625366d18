//! `gatehouse-broker`: parses its flags, then runs the broker.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use gatehouse_service_kit::{CommonArgs, Defaults, StartError, Started};

/// Gatehouse broker: topics over WebSocket, behind the gateway.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-broker", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Messages queued per connection; past it a topic's `slow_consumer`
    /// rule disconnects the client or drops its oldest message.
    #[arg(long, env = "GATEHOUSE_QUEUE_SIZE", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    queue_size: u32,

    /// Open WebSocket connections per consumer (more get 429).
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS_PER_CONSUMER", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections_per_consumer: u32,

    /// Topic names one connection may subscribe to.
    #[arg(long, env = "GATEHOUSE_MAX_SUBSCRIPTIONS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_subscriptions: u32,

    /// Time between pings to each client; one silent for two is dropped.
    #[arg(long, env = "GATEHOUSE_PING_INTERVAL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    ping_interval_ms: u64,

    /// Topic names held in memory at once (with their kept messages).
    #[arg(long, env = "GATEHOUSE_MAX_TOPIC_NAMES", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_topic_names: u32,

    /// Share messages with the other instances on this Redis (streams keep
    /// them, pub/sub fans them out); without it, one instance in memory.
    #[arg(long, env = "GATEHOUSE_REDIS_URL")]
    redis_url: Option<String>,
}

/// A pool of one thread per CPU: fan-out writes to many sockets.
const DEFAULTS: Defaults = Defaults::new("127.0.0.1:18003", "broker", "0");

fn main() -> ExitCode {
    let args: Args = gatehouse_service_kit::config::parse(&DEFAULTS);
    let limits = gatehouse_broker::Limits {
        queue: args.queue_size as usize,
        connections_per_consumer: args.max_connections_per_consumer as usize,
        max_subscriptions: args.max_subscriptions as usize,
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        max_topic_names: args.max_topic_names as usize,
    };
    let redis_url = args.redis_url;
    gatehouse_service_kit::run::main(
        args.common,
        "gatehouse-broker",
        move |started: Started| async move {
            let shared = match redis_url.as_deref() {
                None => None,
                Some(url) => Some(std::sync::Arc::new(
                    gatehouse_broker::shared::RedisLog::new(url)
                        .map_err(|e| StartError::Config(format!("--redis-url: {e}")))?,
                )),
            };
            tracing::info!(
                messages = if shared.is_some() { "redis" } else { "memory" },
                "broker"
            );
            let settings = gatehouse_broker::Settings {
                xds_endpoint: started.xds_url,
                node_id: started.node_id,
                xds_token: started.xds_token,
                xds_ca: started.xds_ca,
                limits,
                shared,
            };
            let shutdown = started.stop.cancelled_owned();
            Ok(tokio::spawn(gatehouse_broker::serve(
                started.listener,
                settings,
                shutdown,
            )))
        },
    )
}
