//! Gatehouse control-plane benchmarks against a real Envoy (see BENCHMARKS.md).
//!
//! - `propagation`: time from an admin write returning to Envoy serving the
//!   new route, over N changes.
//! - `scale`: 10,000 routes over 1,000 services: snapshot build time, time
//!   until a fresh Envoy acknowledges everything, control-plane RSS, and the
//!   propagation of one change at that size.
//! - `auth`: ext-authz in process, over gRPC, and through Envoy beside a
//!   no-op ext_authz server and Envoy's own `jwt_authn` (see [`auth`]).
//! - `ratelimit`: in-process decisions per second (see [`ratelimit`]).
//! - `writes`: sustained admin writes per second (see [`writes`]).
//! - `observability`: what tracing and the JSON access log cost on the
//!   hot path (see [`observability`]).
//! - `resilience`: the hot-path cost of resilience, and how fast a failing
//!   endpoint is ejected (see [`resilience`]).
//! - `broker`: message delivery delay through Envoy and the broker (see
//!   [`broker`]).
//!
//! Build in release mode so the binaries measured are the release ones:
//! `cargo build --release --workspace --bins && target/release/gatehouse-bench all`.

mod auth;
mod broker;
mod canary;
mod exact;
mod instructions;
mod load;
mod observability;
mod quota;
mod ratelimit;
mod resilience;
mod side_by_side;
mod tls;
mod writes;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gatehouse_control_plane::{
    model::{Destination, Route, RouteMatch, Service},
    store::{DatabaseUrl, Store},
    translate::{self, ProxySettings},
};
use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, XdsVariant, client, eventually, free_port,
    probe, reqwest, scratch_dir,
};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Gatehouse control-plane benchmarks against a real Envoy")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Interleaved `wrk` slices (see `side_by_side.rs`).
#[derive(Debug, clap::Args)]
struct Slices {
    /// Length of each slice.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Admin write → Envoy serving the new route.
    Propagation {
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Check every write with `envoy --mode validate` before commit.
        #[arg(long)]
        validate_with_envoy: bool,
    },
    /// Large configurations: build time, time to ACK, RSS.
    Scale {
        #[arg(long, default_value_t = 10_000)]
        routes: usize,
        #[arg(long, default_value_t = 1_000)]
        services: usize,
    },
    /// Authentication: in process, gRPC Check latency, through Envoy.
    Auth {
        /// Length of each variant's slice in a round (and of the gRPC and
        /// open-loop runs).
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        /// Rounds of closed-loop slices, every variant once per round.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Open-loop rate through Envoy, requests per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
    },
    /// Rate limiting: in-process decisions per second.
    Ratelimit {
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
        /// Duration of the Redis run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent callers in the Redis run.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Propagation and scale, with the issue's sizes.
    All,
    /// Observability: tracing (off, 1 %, 100 %, collector down) and the
    /// JSON access log beside a gateway with neither.
    Observability(Slices),
    /// TLS termination vs plaintext on one route (kept-alive and a new
    /// connection per request), and certificate rotation under load.
    Tls(Slices),
    /// The exact path: an API-key route with a per-consumer exact limit
    /// (ext-authz + ratelimit-service on Redis) beside the same configuration
    /// served by the zero-work fixtures, and the two mixes between them.
    ExactPath(Slices),
    /// Envoy's instructions per request under callgrind (valgrind), route
    /// by route: public, quota policy, JWT verified in Envoy, JWT + quota.
    EnvoyInstructions {
        /// Sequential requests counted per route.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
    /// Canary rollouts: promote → every node, and the analysis' detection
    /// delay for a canary failing 20 % of requests.
    Canary {
        #[arg(long, default_value_t = 10)]
        envoys: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Broker: the delay from a publish to each subscriber, through Envoy.
    Broker {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[arg(long, default_value_t = 300)]
        messages: usize,
        /// Publishes per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Two brokers sharing messages through one Redis.
        #[arg(long)]
        shared: bool,
    },
    /// Quota policies: how close three Envoys sharing one limit (through
    /// three ratelimit-services on one Redis) stay to it, with uneven load.
    QuotaAccuracy {
        /// Load before the measurement (Envoys report every 5 s).
        #[arg(long, default_value_t = 15)]
        warm_up: u64,
        /// The measured span.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Resilience: its hot-path cost beside a plain route, and the time to
    /// eject an endpoint that starts failing half its requests.
    Resilience(Slices),
    /// Sustained admin writes per second: 1, 10 and 100 parallel clients,
    /// with and without Envoy validation, on SQLite and Postgres.
    Writes {
        /// Length of each cell's run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds over the whole table.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        clients: Vec<usize>,
    },
    /// Rate limiting over gRPC, straight at ratelimit-service: closed loop
    /// (throughput), then open loop (latency), beside a no-op RLS.
    RatelimitGrpc {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent callers in the closed loop.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Open-loop rate, decisions per second (the issue's throughput target).
        #[arg(long, default_value_t = 25_000)]
        rate: u32,
    },
    /// Rate limiting through Envoy, beside a no-op RLS and local_ratelimit.
    RatelimitEnvoy {
        /// Length of each variant's slice in a round.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        /// Rounds of closed-loop slices, every variant once per round.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Only these variants, comma-separated: bare, floor,
        /// floor-headers, memory, redis, leases, quota, local (default: all).
        /// Fewer variants put the slices compared closer together in time.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// (internal) The no-op rate limit service the benchmark compares with.
    #[command(hide = true)]
    NoopRls {
        #[arg(long)]
        port: u16,
        /// Answer with a status per descriptor and `RateLimit-*` headers.
        #[arg(long)]
        with_headers: bool,
        /// The same runtime setting as Gatehouse's services, so the floor
        /// stands in the same position.
        #[arg(long, env = "GATEHOUSE_WORKER_THREADS", default_value_t = 1)]
        worker_threads: usize,
    },
    /// (internal) The no-op ext_authz server the auth benchmark compares with.
    #[command(hide = true)]
    NoopAuthz {
        #[arg(long)]
        port: u16,
        /// Answer as Gatehouse does for an API key: identity headers, the
        /// key header removed, consumer and plan as dynamic metadata.
        #[arg(long)]
        with_identity: bool,
        /// ext-authz's runtime setting (see `NoopRls`).
        #[arg(long, env = "GATEHOUSE_WORKER_THREADS", default_value_t = 0)]
        worker_threads: usize,
    },
}

fn main() {
    let command = Args::parse().command;
    let service_runtime =
        |threads| gatehouse_service_kit::runtime(threads).expect("the no-op server's runtime");
    match command {
        Command::NoopAuthz {
            port,
            with_identity,
            worker_threads,
        } => service_runtime(worker_threads).block_on(auth::serve_noop(port, with_identity)),
        Command::NoopRls {
            port,
            with_headers,
            worker_threads,
        } => service_runtime(worker_threads).block_on(ratelimit::serve_noop(port, with_headers)),
        command => tokio::runtime::Runtime::new()
            .expect("the benchmark's runtime")
            .block_on(run(command)),
    }
}

async fn run(command: Command) {
    match command {
        Command::Propagation {
            changes,
            validate_with_envoy,
        } => propagation(changes, validate_with_envoy).await,
        Command::Scale { routes, services } => scale(routes, services).await,
        Command::NoopAuthz { .. } | Command::NoopRls { .. } => {
            unreachable!("served on their own runtime")
        }
        Command::RatelimitGrpc {
            seconds,
            concurrency,
            rate,
        } => ratelimit::grpc(seconds, concurrency, rate).await,
        Command::RatelimitEnvoy {
            seconds,
            rounds,
            connections,
            only,
        } => ratelimit::through_envoy(seconds, rounds, connections, &only).await,
        Command::Ratelimit {
            requests,
            seconds,
            concurrency,
        } => ratelimit::run(requests, seconds, concurrency).await,
        Command::Auth {
            seconds,
            rounds,
            connections,
            rate,
        } => {
            auth::run(auth::Settings {
                seconds,
                rounds,
                connections,
                rate,
            })
            .await
        }
        Command::Resilience(s) => resilience::run(s.seconds, s.rounds, s.connections).await,
        Command::Observability(s) => {
            observability::run(s.seconds, s.rounds, s.connections).await;
        }
        Command::QuotaAccuracy { warm_up, seconds } => quota::run(warm_up, seconds).await,
        Command::Canary { envoys, rounds } => canary::run(envoys, rounds).await,
        Command::Tls(s) => tls::run(s.seconds, s.rounds, s.connections).await,
        Command::ExactPath(s) => exact::run(s.seconds, s.rounds, s.connections).await,
        Command::EnvoyInstructions { requests } => instructions::run(requests).await,
        Command::Broker {
            subscribers,
            messages,
            rate,
            shared,
        } => broker::run(subscribers, messages, rate, shared).await,
        Command::Writes {
            seconds,
            rounds,
            clients,
        } => {
            writes::run(writes::Settings {
                seconds,
                rounds,
                clients,
            })
            .await
        }
        Command::All => {
            propagation(200, false).await;
            propagation(50, true).await;
            scale(10_000, 1_000).await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Applies route `name`: `/{name}` to the service `up`, under `auth` when
/// given.
pub(crate) async fn route_to_up(cp: &ControlPlane, name: &str, auth: Option<serde_json::Value>) {
    let mut route = serde_json::json!({"match": {"path_prefix": format!("/{name}")},
                                       "destination": {"service": "up"}});
    if let Some(auth) = auth {
        route["auth"] = auth;
    }
    cp.apply(&format!("/v1/routes/{name}"), route).await;
}

/// A new API key of the consumer `bench`, as the request header carrying it.
pub(crate) async fn bench_key_header(cp: &ControlPlane) -> (String, String) {
    let created: serde_json::Value = cp
        .post("/v1/consumers/bench/keys", serde_json::json!({}))
        .await
        .json()
        .await
        .expect("key");
    let key = created["key"].as_str().expect("key").to_owned();
    ("x-api-key".to_owned(), key)
}

/// A control plane (its options set by `configure`) and an Envoy it drives
/// over SotW, with `upstream` as the service `up`.
pub(crate) async fn gateway_with(
    upstream: &Upstream,
    configure: impl FnOnce(&mut ControlPlaneOptions),
) -> (ControlPlane, Envoy) {
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    configure(&mut options);
    let cp = ControlPlane::start(options).await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    cp.apply("/v1/services/up", upstream.service("up")).await;
    (cp, envoy)
}

/// A statically configured Envoy (for Envoy's own filters, compared with
/// ours under the same settings): one listener on `proxy_port` in front of
/// `upstream`, with `routes` before the catch-all route and `filters`
/// before the router (both YAML, already indented).
fn static_envoy(
    proxy_port: u16,
    upstream: std::net::SocketAddr,
    routes: &str,
    filters: &str,
) -> String {
    static_bootstrap(
        &[static_listener(proxy_port, routes, filters)],
        upstream,
        "",
    )
}

/// One listener of [`static_bootstrap`]: on `port`, `routes` before the
/// catch-all route to `upstream`, `filters` before the router.
fn static_listener(port: u16, routes: &str, filters: &str) -> String {
    format!(
        r#"  - name: http-{port}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: static_{port}
          use_remote_address: true
          normalize_path: true
          merge_slashes: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// A static Envoy: `listeners` ([`static_listener`]), the `upstream`
/// cluster and `clusters` (YAML list items, already indented).
fn static_bootstrap(
    listeners: &[String],
    upstream: std::net::SocketAddr,
    clusters: &str,
) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
{listeners}  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}}}]}}]
{clusters}"#,
        listeners = listeners.concat(),
        upstream_port = upstream.port()
    )
}

fn us(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 10.0 {
        format!("{:.0} ns", micros * 1000.0)
    } else {
        format!("{micros:.0} µs")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Polls `url` until it answers 200 and returns how long that took.
async fn time_until_served(http: &reqwest::Client, url: &str, started: Instant) -> Duration {
    loop {
        if probe(http, url).await.0 == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never served"
        );
    }
}

async fn propagation(changes: usize, validate_with_envoy: bool) {
    for variant in [XdsVariant::StateOfTheWorld, XdsVariant::Delta] {
        let proxy_port = free_port();
        let cp = ControlPlane::start(ControlPlaneOptions {
            validate_with_envoy,
            ..ControlPlaneOptions::new(proxy_port)
        })
        .await;
        let envoy = Envoy::start(cp.xds, proxy_port, variant).await;
        let upstream = Upstream::start("up").await;
        cp.apply("/v1/services/up", upstream.service("up")).await;
        let http = client();
        let mut samples = Vec::with_capacity(changes);
        let mut writes = Vec::with_capacity(changes);
        for i in 0..changes {
            let body = json!({"match": {"path_exact": format!("/p{i}")}, "destination": {"service": "up"}});
            let sent = Instant::now();
            cp.apply(&format!("/v1/routes/r{i}"), body).await;
            let returned = Instant::now();
            writes.push(returned - sent);
            samples.push(time_until_served(&http, &envoy.url(&format!("/p{i}")), returned).await);
        }
        samples.sort_unstable();
        writes.sort_unstable();
        println!(
            "write (validate with Envoy: {validate_with_envoy}): p50 {} p99 {}",
            ms(percentile(&writes, 0.5)),
            ms(percentile(&writes, 0.99)),
        );
        println!(
            "propagation {variant:?}: {changes} changes, write-returned → served p50 {} p90 {} p99 {} max {}",
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.9)),
            ms(percentile(&samples, 0.99)),
            ms(percentile(&samples, 1.0)),
        );
        cp.assert_no_nacks().await;
    }
}

fn service(name: String, port: u32) -> Service {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "endpoints": [{"host": "127.0.0.1", "port": port}],
        "connect_timeout_ms": 1000,
    }))
    .expect("a valid service")
}

fn route(i: usize, services: usize) -> Route {
    Route {
        owner: None,
        labels: Default::default(),
        shared: false,
        name: format!("r{i}"),
        matches: RouteMatch {
            path_prefix: Some(format!("/r{i}/")),
            hosts: vec![format!("tenant{}.example.com", i % 100)],
            ..Default::default()
        },
        destination: Destination {
            service: Some(format!("s{}", i % services)),
            weighted: Vec::new(),
        },
        strip_prefix: false,
        prefix_rewrite: None,
        timeout_ms: Some(5000),
        auth: None,
        retries: None,
        priority: None,
        load_shedding: false,
        cors: None,
        headers: None,
        host_rewrite: None,
        host_rewrite_to_endpoint: false,
        idle_timeout_ms: None,
        redirect: None,
        direct_response: None,
        mirror: None,
        fault: None,
        max_body_bytes: None,
        websocket: None,
        require_tls: false,
        version: None,
        gateways: Vec::new(),
        grpc: None,
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn scale(routes: usize, services: usize) {
    let upstream = Upstream::start("up").await;
    let port = u32::from(upstream.addr.port());
    let dir = scratch_dir("gatehouse_bench_scale");
    let store = Store::connect_lazy(&DatabaseUrl::sqlite_in(&dir)).expect("store");
    store.migrate().await.expect("migrate");
    let started = Instant::now();
    for s in 0..services {
        store
            .create(&service(format!("s{s}"), port))
            .await
            .expect("service");
    }
    for r in 0..routes {
        store.create(&route(r, services)).await.expect("route");
    }
    println!(
        "scale: stored {services} services and {routes} routes in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Snapshot build, in process: load the whole store and translate it.
    let mut builds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let state = store.load().await.expect("load");
        let loaded = started.elapsed();
        let snapshot =
            translate::snapshot(&state, &ProxySettings::default(), 0).expect("consistent");
        builds.push((loaded, started.elapsed()));
        drop(snapshot);
    }
    builds.sort_unstable_by_key(|b| b.1);
    let (load, total) = builds[builds.len() / 2];
    println!(
        "scale: snapshot build (median of 5) {} total, of which store load {}",
        ms(total),
        ms(load)
    );

    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.data_dir = Some(dir);
    let cp = ControlPlane::start(options).await;
    for variant in [XdsVariant::StateOfTheWorld, XdsVariant::Delta] {
        let version = cp.version().await;
        let connected = Instant::now();
        let envoy = Envoy::start(cp.xds, proxy_port, variant).await;
        eventually(Duration::from_secs(60), "Envoy to ACK everything", || {
            cp.converged(version)
        })
        .await;
        let acked = connected.elapsed();
        let rss = cp.pid().and_then(rss_kib).unwrap_or(0);
        println!(
            "scale {variant:?}: fresh Envoy start → all types ACKed in {}; control-plane RSS {:.1} MiB",
            ms(acked),
            rss as f64 / 1024.0
        );
        // One change at this size: write → Envoy serving it.
        let http = client();
        let body = json!({"match": {"path_prefix": "/new/", "hosts": ["tenant1.example.com"]},
                          "destination": {"service": "s1"}});
        let name = format!("new-{variant:?}").to_lowercase();
        cp.apply(&format!("/v1/routes/{name}"), body).await;
        let returned = Instant::now();
        loop {
            let response = http
                .get(envoy.url("/new/x"))
                .header("host", "tenant1.example.com")
                .send()
                .await;
            if matches!(response, Ok(r) if r.status() == 200) {
                break;
            }
            assert!(
                returned.elapsed() < Duration::from_secs(30),
                "change never served"
            );
        }
        println!(
            "scale {variant:?}: one route change at this size served {} after the write returned",
            ms(returned.elapsed())
        );
        let _ = cp.delete(&format!("/v1/routes/{name}")).await;
        cp.assert_no_nacks().await;
        drop(envoy);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rss = cp.pid().and_then(rss_kib).unwrap_or(0);
    println!(
        "scale: control-plane RSS at the end {:.1} MiB",
        rss as f64 / 1024.0
    );
}
