use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use gatehouse_ratelimit_service::store::{Store, memory::MemoryStore, redis::RedisStore};

/// Gatehouse ratelimit-service: Envoy's rate limit (envoy.service.ratelimit.v3) gRPC server.
#[derive(Parser)]
#[command(name = "gatehouse-ratelimit", version)]
struct Args {
    /// Address for gRPC ShouldRateLimit and the HTTP /healthz, /readyz and /metrics.
    #[arg(long, env = "GATEHOUSE_LISTEN_ADDR", default_value = "127.0.0.1:18002")]
    listen_addr: SocketAddr,

    /// The control plane's xDS address.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_URL",
        default_value = "http://127.0.0.1:18000"
    )]
    xds_url: String,

    /// Node id reported to the control plane (shown in its status).
    #[arg(long, env = "GATEHOUSE_NODE_ID", default_value = "ratelimit")]
    node_id: String,

    #[command(flatten)]
    xds_token: gatehouse_xds_client::TokenArgs,

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

    /// Longest wait for in-flight decisions on shutdown.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE_MS", default_value_t = 2000)]
    shutdown_grace_ms: u64,

    /// Threads deciding: 1 (the default) runs everything on one thread, the
    /// least CPU per decision (each costs microseconds, the rest is waiting
    /// on Redis), leaving the other cores to Envoy; more is a work-stealing
    /// pool of that many threads; 0 is one per CPU.
    #[arg(long, env = "GATEHOUSE_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gatehouse_service_kit::runtime(args.worker_threads)?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    gatehouse_service_kit::init_logging();
    let listener = tokio::net::TcpListener::bind(args.listen_addr).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %listener.local_addr()?,
        worker_threads = args.worker_threads,
        redis_lease_max = args.redis_lease_max,
        xds = %args.xds_url,
        store = match (&args.redis_url, args.redis_cluster) {
            (None, _) => "memory",
            (Some(_), false) => "redis",
            (Some(_), true) => "redis cluster",
        },
        "listening"
    );
    let settings = gatehouse_ratelimit_service::Settings {
        xds_endpoint: args.xds_url,
        node_id: args.node_id,
        xds_token: args.xds_token.token().map_err(anyhow::Error::msg)?,
        store: match &args.redis_url {
            Some(url) => {
                let timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
                let redis = if args.redis_cluster {
                    let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
                    RedisStore::cluster(&seeds, timeout)?
                } else {
                    RedisStore::new(url, timeout)?
                }
                .with_leases(args.redis_lease_max);
                if let Err(e) = redis.warm_up(Duration::from_secs(2)).await {
                    tracing::warn!(error = %e, "Redis not ready at start: deciding degraded until it is");
                }
                Store::redis(redis)
            }
            None => Store::Memory(MemoryStore::default()),
        },
    };
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    gatehouse_service_kit::run_until_signal(
        |stop| {
            tokio::spawn(gatehouse_ratelimit_service::serve(
                listener,
                settings,
                async {
                    let _ = stop.await;
                },
            ))
        },
        grace,
    )
    .await?;
    Ok(())
}
