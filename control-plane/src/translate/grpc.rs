//! gRPC protocol translation on routes: Envoy's gRPC-JSON transcoder and
//! gRPC-Web filters sit in every chain, off; a route with `grpc` switches
//! them on for itself. A transcoding route carries its API's descriptor set
//! and services in the transcoder's per-route configuration, with auto
//! mapping (`POST /<package>.<Service>/<Method>` with a JSON body, besides
//! any `google.api.http` mappings the descriptors declare) and gRPC errors
//! turned into HTTP statuses.

use gatehouse_proto::{grpc_json_transcoder as transcoder, grpc_web, hcm, route, to_any};

use crate::model::{ConfigState, Route};

pub const TRANSCODER_FILTER: &str = "envoy.filters.http.grpc_json_transcoder";
pub const GRPC_WEB_FILTER: &str = "envoy.filters.http.grpc_web";

/// An empty descriptor set: the filter's configuration where no route
/// enables it (Envoy requires one).
fn idle_transcoder() -> transcoder::GrpcJsonTranscoder {
    transcoder::GrpcJsonTranscoder {
        descriptor_set: Some(
            transcoder::grpc_json_transcoder::DescriptorSet::ProtoDescriptorBin(Vec::new()),
        ),
        ..Default::default()
    }
}

/// Both filters, off by default.
pub fn filters() -> [hcm::HttpFilter; 2] {
    [
        hcm::HttpFilter {
            name: GRPC_WEB_FILTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
                &grpc_web::GrpcWeb::default(),
            ))),
            disabled: true,
            ..Default::default()
        },
        hcm::HttpFilter {
            name: TRANSCODER_FILTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
                &idle_transcoder(),
            ))),
            disabled: true,
            ..Default::default()
        },
    ]
}

/// Switches the filters on for a route with `grpc`.
pub fn apply(r: &Route, state: &ConfigState, envoy: &mut route::Route) {
    let Some(grpc) = &r.grpc else { return };
    if grpc.web {
        super::enable_filter(envoy, GRPC_WEB_FILTER);
    }
    let Some(api) = grpc.transcode.as_ref().and_then(|a| state.grpc_apis.get(a)) else {
        return;
    };
    let config = transcoder::GrpcJsonTranscoder {
        descriptor_set: Some(
            transcoder::grpc_json_transcoder::DescriptorSet::ProtoDescriptorBin(
                api.descriptor_bytes(),
            ),
        ),
        services: api.services.clone(),
        auto_mapping: true,
        convert_grpc_status: true,
        print_options: Some(transcoder::grpc_json_transcoder::PrintOptions {
            always_print_primitive_fields: true,
            preserve_proto_field_names: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let enabled = route::FilterConfig {
        config: Some(to_any(&config)),
        ..Default::default()
    };
    envoy
        .typed_per_filter_config
        .insert(TRANSCODER_FILTER.into(), to_any(&enabled));
}
