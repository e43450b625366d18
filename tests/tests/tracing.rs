//! Traces through a real Envoy into a real OTLP receiver (issue 21): Envoy
//! continues a sampled `traceparent` and hands the trace to ext-authz,
//! ratelimit-service and the upstream, whose spans join it; sampling 0
//! starts none; a collector that is down changes nothing for requests.

use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Stack, Upstream, client,
    otlp::{OtlpReceiver, ReceivedSpan},
    probe,
};
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

async fn traced_stack(receiver: &OtlpReceiver, sampling: &str) -> (Stack, Upstream) {
    traced_stack_with(receiver, sampling, &[]).await
}

async fn traced_stack_with(
    receiver: &OtlpReceiver,
    sampling: &str,
    extra: &[&str],
) -> (Stack, Upstream) {
    let endpoint = receiver.endpoint();
    let sampling = sampling.to_owned();
    let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    let g = Stack::new()
        .configure(move |o| {
            o.validate_with_envoy = true;
            o.args.extend([
                "--otlp-endpoint".into(),
                endpoint,
                "--trace-sampling-percent".into(),
                sampling,
            ]);
            o.args.extend(extra);
        })
        .start()
        .await;
    let upstream = Upstream::start("traced").await;
    g.cp.apply("/v1/services/traced", upstream.service("traced"))
        .await;
    let version =
        g.cp.apply(
            "/v1/routes/traced",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "traced"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    (g, upstream)
}

fn upstream_traceparent(upstream: &Upstream) -> Option<String> {
    upstream.received().last().and_then(|r| {
        r.headers
            .iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v.clone())
    })
}

#[tokio::test]
async fn envoy_continues_a_trace_and_hands_it_to_the_upstream() {
    let receiver = OtlpReceiver::start().await;
    let (g, upstream) = traced_stack(&receiver, "0").await;
    let http = client();
    let response = http
        .get(g.envoy.url("/orders"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    // The upstream's request carries the same trace, under Envoy's span.
    let traceparent = upstream_traceparent(&upstream).expect("traceparent upstream");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.get(1), Some(&TRACE_ID), "{traceparent}");
    assert_ne!(
        parts.get(2),
        Some(&PARENT_ID),
        "Envoy's own span is the parent"
    );
    // Envoy exports its spans of that trace; the server span's parent is
    // the client's, and the upstream's parent is one of Envoy's spans.
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            spans.iter().any(|s| s.trace_id == TRACE_ID)
        })
        .await;
    let trace: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert!(!trace.is_empty(), "Envoy's spans: {spans:#?}");
    assert!(trace.iter().all(|s| s.service == "gatehouse-envoy"));
    assert!(
        trace.iter().any(|s| s.parent_span_id == PARENT_ID),
        "a span under the client's: {trace:#?}"
    );
    assert!(
        trace
            .iter()
            .any(|s| Some(&s.span_id.as_str()) == parts.get(2)),
        "the upstream's parent is Envoy's span: {trace:#?}"
    );
    assert!(
        trace.iter().any(|s| s.name.contains("traced")),
        "spans are named after the route: {trace:#?}"
    );
}

#[tokio::test]
async fn sampling_zero_starts_no_trace_and_a_full_rate_starts_one_per_request() {
    let receiver = OtlpReceiver::start().await;
    let (g, _upstream) = traced_stack(&receiver, "0").await;
    let http = client();
    for _ in 0..10 {
        assert_eq!(probe(&http, &g.envoy.url("/quiet")).await.0, 200);
    }
    // An unsampled parent is followed too: no spans.
    let unsampled = http
        .get(g.envoy.url("/quiet"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-00"))
        .send()
        .await
        .expect("answered");
    assert_eq!(unsampled.status(), 200);
    // Envoy flushes every 5 s: wait past one flush.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let envoy = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.service == "gatehouse-envoy")
            .cloned()
            .collect()
    };
    assert!(
        envoy(&receiver.spans()).is_empty(),
        "{:#?}",
        receiver.spans()
    );

    let full = OtlpReceiver::start().await;
    let (g, _upstream) = traced_stack(&full, "100").await;
    for _ in 0..5 {
        assert_eq!(probe(&http, &g.envoy.url("/loud")).await.0, 200);
    }
    let spans = full
        .wait_for(Duration::from_secs(15), |spans| {
            let traces: std::collections::BTreeSet<_> =
                envoy(spans).into_iter().map(|s| s.trace_id).collect();
            traces.len() >= 5
        })
        .await;
    let traces: std::collections::BTreeSet<_> =
        envoy(&spans).into_iter().map(|s| s.trace_id).collect();
    assert_eq!(traces.len(), 5, "one trace per request: {spans:#?}");
}

/// With the collector stopped, traced requests through Envoy and ext-authz
/// are answered as before; the spans ext-authz could not export are counted.
#[tokio::test]
async fn a_collector_that_is_down_changes_nothing_for_requests() {
    let mut receiver = OtlpReceiver::start().await;
    let (g, key) = authenticated_stack(&receiver, false).await;
    receiver.stop();
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(sampled_order(&g, &key).await, 200);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "200 requests took {took:?} with the collector down"
    );
    let dropped = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("gatehouse_ext_authz_trace_spans_dropped_total "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    gatehouse_e2e::eventually(Duration::from_secs(20), "dropped spans counted", || async {
        dropped(&g.ext_authz().metrics().await) > 0
    })
    .await;
}

/// ext-authz (and ratelimit-service when `limited`) exporting to
/// `receiver`, the `orders` route behind an API key; Envoy starts traces
/// only for sampled parents. Returns alice's key.
async fn authenticated_stack(receiver: &OtlpReceiver, limited: bool) -> (Stack, String) {
    let endpoint = receiver.endpoint();
    let (cp_endpoint, rl_endpoint) = (endpoint.clone(), endpoint.clone());
    let mut builder = Stack::new()
        .ext_authz(&[("GATEHOUSE_OTLP_ENDPOINT", endpoint.as_str())])
        .orders()
        .configure(move |o| {
            o.args.extend([
                "--otlp-endpoint".into(),
                cp_endpoint,
                "--trace-sampling-percent".into(),
                "0".into(),
            ]);
        });
    if limited {
        builder = builder.ratelimit(&["--otlp-endpoint", rl_endpoint.as_str()]);
    }
    let g = builder.start().await;
    let key = g.cp.consumer_key("alice").await;
    g.cp.api_key_route("orders", "/orders", "orders").await;
    (g, key)
}

/// GET /orders with `key` under the sampled trace `TRACE_ID`: the status.
async fn sampled_order(g: &Stack, key: &str) -> u16 {
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    g.envoy
        .send(
            "/orders",
            &[("x-api-key", key), ("traceparent", &traceparent)],
        )
        .await
        .status
}

/// One request through API-key authentication and a rate limit: one trace
/// holds Envoy's, ext-authz's and ratelimit-service's spans, each service's
/// span under one of Envoy's, with the decision as attributes.
#[tokio::test]
async fn one_trace_holds_envoy_ext_authz_and_ratelimit_spans() {
    let receiver = OtlpReceiver::start().await;
    let (g, key) = authenticated_stack(&receiver, true).await;
    g.cp.per_consumer_limit(100, "orders").await;
    g.envoy
        .until_answer("/orders", &[("x-api-key", &key)], 200)
        .await;

    assert_eq!(sampled_order(&g, &key).await, 200);
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            let services: std::collections::BTreeSet<_> = spans
                .iter()
                .filter(|s| s.trace_id == TRACE_ID)
                .map(|s| s.service.as_str())
                .collect();
            services.len() >= 3
        })
        .await;
    let trace: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let of = |service: &str| {
        trace
            .iter()
            .find(|s| s.service == service)
            .unwrap_or_else(|| panic!("no {service} span in {trace:#?}"))
    };
    let envoy_ids: Vec<&str> = trace
        .iter()
        .filter(|s| s.service == "gatehouse-envoy")
        .map(|s| s.span_id.as_str())
        .collect();
    let authz = of("gatehouse-ext-authz");
    assert!(
        envoy_ids.contains(&authz.parent_span_id.as_str()),
        "{trace:#?}"
    );
    // Its log lines name the trace (the span's `trace_id` field).
    assert_eq!(
        authz.attributes.get("trace_id").map(String::as_str),
        Some(TRACE_ID)
    );
    assert_eq!(
        authz
            .attributes
            .get("gatehouse.auth.result")
            .map(String::as_str),
        Some("allow")
    );
    assert_eq!(
        authz
            .attributes
            .get("gatehouse.auth.method")
            .map(String::as_str),
        Some("api_key")
    );
    assert_eq!(
        authz
            .attributes
            .get("gatehouse.consumer")
            .map(String::as_str),
        Some("alice")
    );
    assert!(
        !format!("{trace:?}").contains(&key),
        "the API key never reaches a span"
    );
    let limit = of("gatehouse-ratelimit");
    assert!(
        envoy_ids.contains(&limit.parent_span_id.as_str()),
        "{trace:#?}"
    );
    assert_eq!(
        limit
            .attributes
            .get("gatehouse.ratelimit.result")
            .map(String::as_str),
        Some("ok")
    );
    assert!(
        limit
            .attributes
            .get("gatehouse.ratelimit.policies")
            .is_some_and(|p| p.contains("per-consumer")),
        "{limit:#?}"
    );
}

/// `--access-log-otlp on`: Envoy's access log also reaches the collector as
/// OTLP log records, the JSON log's fields as attributes, with the trace id
/// of a traced request and no query string.
#[tokio::test]
async fn the_access_log_reaches_the_collector_as_log_records() {
    let receiver = OtlpReceiver::start().await;
    let (g, _upstream) = traced_stack_with(&receiver, "0", &["--access-log-otlp", "on"]).await;
    let response = client()
        .get(g.envoy.url("/orders/7?api_key=gk_secret_in_query"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let found = || {
        receiver
            .logs()
            .into_iter()
            .find(|l| l.attributes.get("path").map(String::as_str) == Some("/orders/7"))
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while found().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = found().unwrap_or_else(|| panic!("no record: {:#?}", receiver.logs()));
    assert_eq!(record.attributes["route"], "traced");
    assert_eq!(record.attributes["status"], "200");
    assert_eq!(record.attributes["method"], "GET");
    assert_eq!(record.attributes["trace_id"], TRACE_ID);
    assert_eq!(record.body, "GET /orders/7 200");
    assert!(
        !format!("{record:?}").contains("gk_secret_in_query"),
        "{record:?}"
    );
}

/// Log records need a collector: without `--otlp-endpoint` the control
/// plane refuses to start (exit 64), naming both flags.
#[tokio::test]
async fn otlp_log_records_without_a_collector_are_a_configuration_error() {
    let out = tokio::process::Command::new(gatehouse_e2e::gatehouse_bin("gatehouse-control-plane"))
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--xds-addr",
            "127.0.0.1:0",
            "--access-log-otlp",
            "on",
            "--data-dir",
        ])
        .arg(gatehouse_e2e::scratch_dir("gatehouse_otlp_logs"))
        .output()
        .await
        .expect("control plane runs");
    assert_eq!(out.status.code(), Some(64));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("--access-log-otlp") && log.contains("--otlp-endpoint"),
        "{log}"
    );
}
