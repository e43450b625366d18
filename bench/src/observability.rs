//! What observability costs on the hot path (issue 21): the same plain
//! route through separate gateways that differ only in tracing, the access
//! log and the usage log, in interleaved `wrk` slices: nothing on; the JSON
//! access log alone; the usage log to a running ext-authz (the default);
//! sampling 1 % plus the JSON log (target: at least 97 % of nothing-on);
//! sampling 100 % plus the log; and sampling 100 % with the collector
//! stopped (the exporter must not slow requests; Envoy counts what it
//! drops).

use gatehouse_e2e::{Stack, Upstream, otlp::OtlpReceiver, scratch_dir};
use serde_json::json;

use crate::side_by_side::{self, Variant};

/// A gateway with `args` for its control plane and, with `log`, a JSON
/// access log in a file, routing `/plain` to `up`. The usage log is off
/// unless `usage`, which runs ext-authz to receive it.
async fn gateway(up: &Upstream, mut args: Vec<String>, log: bool, usage: bool) -> Stack {
    let path = scratch_dir("gatehouse_bench_access").join("access.log");
    if !usage {
        args.extend(["--usage-log".into(), "off".into()]);
    }
    let mut stack = Stack::new().configure(move |o| {
        o.args.extend(args);
        if log {
            o.access_log = Some(path);
        }
    });
    if usage {
        stack = stack.ext_authz(&[]);
    }
    let g = stack.start().await;
    g.cp.apply("/v1/services/plain", up.service("plain")).await;
    let version =
        g.cp.apply(
            "/v1/routes/plain",
            json!({"match": {"path_prefix": "/plain"}, "destination": {"service": "plain"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    g.envoy.until_status("/plain", 200).await;
    g
}

fn tracing(endpoint: &str, percent: &str) -> Vec<String> {
    vec![
        "--otlp-endpoint".into(),
        endpoint.into(),
        "--trace-sampling-percent".into(),
        percent.into(),
    ]
}

pub async fn run(seconds: u64, rounds: usize, connections: u32) {
    let up = Upstream::start("up").await;
    let collector = OtlpReceiver::start().await;
    let mut stopped = OtlpReceiver::start().await;
    let down = stopped.endpoint();
    stopped.stop();
    let endpoint = collector.endpoint();
    let gateways = [
        ("nothing on", gateway(&up, Vec::new(), false, false).await),
        (
            "JSON access log",
            gateway(&up, Vec::new(), true, false).await,
        ),
        (
            "usage log to ext-authz",
            gateway(&up, Vec::new(), false, true).await,
        ),
        (
            "1 % traced + JSON log",
            gateway(&up, tracing(&endpoint, "1"), true, false).await,
        ),
        (
            "100 % traced + JSON log",
            gateway(&up, tracing(&endpoint, "100"), true, false).await,
        ),
        (
            "100 % traced, collector down",
            gateway(&up, tracing(&down, "100"), false, false).await,
        ),
    ];
    let none = Vec::new();
    let variants: Vec<Variant> = gateways
        .iter()
        .map(|(name, g)| Variant {
            name,
            url: g.envoy.url("/plain"),
            headers: &none,
            processes: vec![
                ("envoy", g.envoy.pid()),
                ("ext-authz", g.ext.as_ref().and_then(|e| e.pid())),
            ],
        })
        .collect();
    println!(
        "observability on the hot path ({rounds} rounds of {seconds} s, {connections} connections):"
    );
    let measured = side_by_side::interleaved(&variants, rounds, seconds, connections).await;
    measured.print();
    for (name, _) in &gateways[1..] {
        measured.print_ratio(name, "nothing on");
    }
    let spans = collector.spans().len();
    println!("spans received by the collector: {spans}");
    for (name, g) in &gateways[3..] {
        let dropped = g
            .envoy
            .stat("tracing.opentelemetry.spans_dropped")
            .await
            .unwrap_or_default();
        let sent = g
            .envoy
            .stat("tracing.opentelemetry.spans_sent")
            .await
            .unwrap_or_default();
        println!("{name}: Envoy sent {sent} spans, dropped {dropped}");
    }
}
