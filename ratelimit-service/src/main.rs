//! `gatehouse-ratelimit`: parses its flags, then runs the service.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use gatehouse_ratelimit_service::counters::{Counters, memory::MemoryStore, redis::RedisStore};
use gatehouse_service_kit::{CommonArgs, Defaults, StartError, Started};

/// Gatehouse ratelimit-service: Envoy's rate limit (envoy.service.ratelimit.v3) gRPC server.
#[derive(Parser)]
#[command(name = "gatehouse-ratelimit", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Redis for counters shared by every instance (redis://…); without it,
    /// counters are in memory (one instance).
    #[arg(long, env = "GATEHOUSE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// Treat --redis-url as Redis Cluster seed nodes, comma-separated
    /// (redis://a:6379,redis://b:6379).
    #[arg(long, env = "GATEHOUSE_REDIS_CLUSTER")]
    redis_cluster: bool,

    /// Longest wait for Redis per decision before the limit's failure mode applies.
    #[arg(long, env = "GATEHOUSE_REDIS_TIMEOUT_MS", default_value_t = 5)]
    redis_timeout_ms: u64,

    /// Redis only: take up to this many hits of a busy counter (a window's
    /// count or a bucket's tokens) from Redis ahead of use, at most an eighth
    /// of what it has left, and spend them here without a Redis round trip.
    /// Instances together still never admit more than the limit; hits
    /// unspent after a second go back to Redis. 0 asks Redis on every
    /// request.
    #[arg(long, env = "GATEHOUSE_REDIS_LEASE_MAX", default_value_t = 100)]
    redis_lease_max: u64,
}

/// One thread by default: each decision costs microseconds and the rest is
/// waiting on Redis, so one thread spends the least CPU per decision and
/// leaves the other cores to Envoy.
const DEFAULTS: Defaults = Defaults::new("127.0.0.1:18002", "ratelimit", "1");

fn main() -> ExitCode {
    let args: Args = gatehouse_service_kit::config::parse(&DEFAULTS);
    let Args {
        common,
        redis_url,
        redis_cluster,
        redis_timeout_ms,
        redis_lease_max,
    } = args;
    gatehouse_service_kit::run::main(
        common,
        "gatehouse-ratelimit",
        move |started: Started| async move {
            let counters = match &redis_url {
                None => Counters::Memory(MemoryStore::default()),
                Some(url) => {
                    let timeout = Duration::from_millis(redis_timeout_ms.max(1));
                    let redis = if redis_cluster {
                        let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
                        RedisStore::cluster(&seeds, timeout)
                    } else {
                        RedisStore::new(url, timeout)
                    }
                    .map_err(|e| StartError::Config(format!("--redis-url: {e}")))?
                    .with_leases(redis_lease_max);
                    if let Err(e) = redis.warm_up(Duration::from_secs(2)).await {
                        tracing::warn!(error = %e, "Redis not ready at start: deciding degraded until it is");
                    }
                    Counters::redis(redis)
                }
            };
            tracing::info!(
                counters = match (&redis_url, redis_cluster) {
                    (None, _) => "memory",
                    (Some(_), false) => "redis",
                    (Some(_), true) => "redis cluster",
                },
                redis_lease_max,
                "counters"
            );
            let settings = gatehouse_ratelimit_service::Settings {
                xds_endpoint: started.xds_url,
                node_id: started.node_id,
                xds_token: started.xds_token,
                xds_ca: started.xds_ca,
                counters,
                quota_redis: redis_url.map(|url| gatehouse_ratelimit_service::QuotaRedis {
                    url,
                    cluster: redis_cluster,
                }),
                event_summary: started.event_summary,
            };
            let shutdown = started.stop.cancelled_owned();
            let server = gatehouse_ratelimit_service::serve(started.listener, settings, shutdown);
            Ok(tokio::spawn(server))
        },
    )
}
