//! Tracing in Envoy: every listener's connection manager continues a W3C
//! trace (`traceparent`) or starts one for a share of requests, and exports
//! its spans over OTLP/gRPC through the `gatehouse_otlp` cluster to the
//! collector given to the control plane (`--otlp-endpoint`); off without
//! one. Envoy hands the trace on to ext-authz, ratelimit-service and the
//! upstream, so their spans join the same trace.

use gatehouse_proto::{cluster, core, hcm, http_types, otel_samplers, to_any, trace};
use gatehouse_service_kit::OtlpEndpoint;

use super::cluster::grpc_cluster_at;

pub const OTLP_CLUSTER: &str = "gatehouse_otlp";
/// The `service.name` of Envoy's spans.
pub const ENVOY_SERVICE_NAME: &str = "gatehouse-envoy";

/// Where Envoy sends spans and how many new traces it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    pub collector: OtlpEndpoint,
    /// Share of requests without a sampled parent that start a trace, in
    /// millionths (10,000 = 1 %). A sampled `traceparent` is always followed.
    pub sampling_ppm: u32,
}

pub fn otlp_cluster(settings: &TracingSettings) -> cluster::Cluster {
    grpc_cluster_at(
        OTLP_CLUSTER,
        &settings.collector.host,
        settings.collector.port,
    )
}

/// The connection manager's tracing: OpenTelemetry, spans named after the
/// route (its decorator, in `route.rs`).
pub fn http_tracing(settings: &TracingSettings) -> hcm::http_connection_manager::Tracing {
    use trace::tracing::http::ConfigType;
    let config = trace::OpenTelemetryConfig {
        grpc_service: Some(super::grpc_service(OTLP_CLUSTER, Some(1_000))),
        service_name: ENVOY_SERVICE_NAME.into(),
        sampler: Some(sampler(settings.sampling_ppm)),
        ..Default::default()
    };
    hcm::http_connection_manager::Tracing {
        // Every request reaches the sampler, which decides.
        random_sampling: Some(http_types::Percent { value: 100.0 }),
        provider: Some(trace::tracing::Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(ConfigType::TypedConfig(to_any(&config))),
        }),
        // One span per request, named by the route's decorator: an upstream
        // span, a formatted name and header tags cost CPU on every request,
        // sampled or not (see BENCHMARKS.md). The upstream still receives a
        // traceparent, under this span; ext-authz's span carries the consumer.
        ..Default::default()
    }
}

/// OpenTelemetry's parent-based sampling: a request with a `traceparent`
/// follows its sampled flag; one without starts a trace at the given rate
/// (by trace id, so every hop of a trace decides alike).
fn sampler(ppm: u32) -> core::TypedExtensionConfig {
    let ratio = otel_samplers::TraceIdRatioBasedSamplerConfig {
        sampling_percentage: Some(http_types::FractionalPercent {
            numerator: ppm,
            denominator: http_types::fractional_percent::DenominatorType::Million as i32,
        }),
    };
    let parent_based = otel_samplers::ParentBasedSamplerConfig {
        wrapped_sampler: Some(core::TypedExtensionConfig {
            name: "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based".into(),
            typed_config: Some(to_any(&ratio)),
        }),
    };
    core::TypedExtensionConfig {
        name: "envoy.tracers.opentelemetry.samplers.parent_based".into(),
        typed_config: Some(to_any(&parent_based)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_go_to_the_collector_cluster_at_the_sampling_rate() {
        let settings = TracingSettings {
            collector: "collector:4317".parse().expect("endpoint"),
            sampling_ppm: 10_000,
        };
        let t = http_tracing(&settings);
        assert_eq!(t.random_sampling.map(|p| p.value), Some(100.0));
        let c = otlp_cluster(&settings);
        assert_eq!(c.name, OTLP_CLUSTER);
    }
}
