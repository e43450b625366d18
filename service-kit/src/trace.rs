//! Logs and spans for every Gatehouse binary: `tracing` events to standard
//! error (text or JSON), and, with `--otlp-endpoint`, spans exported over
//! OTLP/gRPC by a batch processor on its own thread: a request never waits
//! for the collector, and a collector that is down costs dropped spans,
//! counted in `gatehouse_trace_spans_dropped_total`.
//!
//! A request's span continues the trace its caller sent (W3C `traceparent`
//! in the gRPC metadata, as Envoy sends it to ext-authz and the rate-limit
//! service); an unsampled or absent parent costs one header lookup and no
//! span at all.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{LogFormat, OtlpEndpoint};

static EXPORTING: AtomicBool = AtomicBool::new(false);
static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans that never reached the collector (it was down, slow or refused).
pub fn spans_dropped() -> u64 {
    SPANS_DROPPED.load(Ordering::Relaxed)
}

/// Which traces a binary records besides those its callers sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Only continue sampled traces (ext-authz, ratelimit-service: Envoy
    /// decides).
    Never,
    /// Also start one for each operation without a parent (the control
    /// plane's admin writes, which are rare).
    Always,
}

/// Keeps the span pipeline; flushes what is buffered when dropped.
#[must_use = "spans are flushed when this is dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(2));
        }
    }
}

/// Counts the spans of every batch that failed to export.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            SPANS_DROPPED.fetch_add(spans, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Logging from `RUST_LOG` (default `info`) in `format`, plus span export
/// to `otlp` as `service` when given. Call inside the Tokio runtime.
pub fn init(
    format: LogFormat,
    otlp: Option<&OtlpEndpoint>,
    service: &'static str,
    roots: Roots,
) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let text = (format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let (provider, export_error) = match otlp.map(|o| provider(o, service, roots)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let spans = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(spans)
        .init();
    if let Some(e) = export_error {
        tracing::error!(error = %e, "cannot export spans; tracing is off");
    }
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Telemetry { provider }
}

fn provider(
    otlp: &OtlpEndpoint,
    service: &'static str,
    roots: Roots,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.url())
        .with_timeout(Duration::from_secs(2))
        .build()?;
    let root = match roots {
        Roots::Never => Sampler::AlwaysOff,
        Roots::Always => Sampler::AlwaysOn,
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Counted(exporter))
        .with_sampler(Sampler::ParentBased(Box::new(root)))
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The span for one gRPC request, under the caller's sampled trace; a
/// disabled span (free) when spans are not exported or the caller's trace
/// is not sampled. A `trace_id` field the span declares is filled in, so
/// every log line inside it names the trace.
pub fn server_span(
    metadata: &tonic::metadata::MetadataMap,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    if !EXPORTING.load(Ordering::Relaxed) || metadata.get("traceparent").is_none() {
        return tracing::Span::none();
    }
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    if !parent.span().span_context().is_sampled() {
        return tracing::Span::none();
    }
    let trace_id = parent.span().span_context().trace_id().to_string();
    let span = make();
    span.record("trace_id", trace_id.as_str());
    let _ = span.set_parent(parent);
    span
}

/// `trace_spans_dropped_total` in a service's registry: read from the
/// process-wide count at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct DroppedSpans;

impl DroppedSpans {
    pub fn register(registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "trace_spans_dropped",
            "Spans that never reached the OpenTelemetry collector (down, slow or refusing)",
            DroppedSpans,
        );
    }
}

impl prometheus_client::encoding::EncodeMetric for DroppedSpans {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &spans_dropped(),
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}
