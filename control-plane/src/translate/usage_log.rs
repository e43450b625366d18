//! Envoy's usage log: every routed request's route, consumer, status and
//! bytes, streamed by Envoy's gRPC access logger (buffered, flushed every
//! second, never on the request's path) to ext-authz, which counts usage per
//! route and consumer. The consumer is the identity header ext-authz or
//! `jwt_authn` sets, or ext-authz's metadata on a 403; Envoy removes any
//! identity header a client sends before its filters run, so a request
//! refused early is never counted for someone else.

use gatehouse_proto::{
    accesslog, core, early_header_mutation, grpc_access_log, mutation_rules, protobuf, to_any,
};

use super::auth::{EXT_AUTHZ_CLUSTER, IDENTITY_HEADERS};

/// The usage log's name in Envoy's stream (`log_name`).
pub const USAGE_LOG: &str = "gatehouse_usage";

/// The gRPC access logger sending routed requests to ext-authz.
pub fn usage_log() -> accesslog::AccessLog {
    let config = grpc_access_log::HttpGrpcAccessLogConfig {
        common_config: Some(grpc_access_log::CommonGrpcAccessLogConfig {
            log_name: USAGE_LOG.into(),
            grpc_service: Some(super::grpc_service(EXT_AUTHZ_CLUSTER, None)),
            transport_api_version: core::ApiVersion::V3 as i32,
            buffer_flush_interval: Some(protobuf::Duration {
                seconds: 1,
                nanos: 0,
            }),
            buffer_size_bytes: Some(protobuf::UInt32Value { value: 64 * 1024 }),
            ..Default::default()
        }),
        additional_request_headers_to_log: vec![IDENTITY_HEADERS[0].into()],
        ..Default::default()
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.http_grpc".into(),
        // Requests no route matched (scanners' 404s) are not usage.
        filter: Some(super::cel("xds.route_name != ''".into())),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(to_any(
            &config,
        ))),
    }
}

/// Removes the identity headers a client sends, before route selection
/// and every filter: only ext-authz and `jwt_authn` set them (and the
/// quota headers, which only a route sets).
pub fn identity_headers_removed() -> core::TypedExtensionConfig {
    let mutation = early_header_mutation::HeaderMutation {
        mutations: IDENTITY_HEADERS
            .iter()
            .chain(&[super::quota::QUOTA_HEADER, super::quota::QUOTA_ROUTE_HEADER])
            .map(|h| mutation_rules::HeaderMutation {
                action: Some(mutation_rules::header_mutation::Action::Remove(
                    (*h).to_owned(),
                )),
            })
            .collect(),
    };
    core::TypedExtensionConfig {
        name: "gatehouse.identity_headers".into(),
        typed_config: Some(to_any(&mutation)),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_usage_log_goes_to_ext_authz_with_the_consumer_header() {
        let log = usage_log();
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = log.config_type else {
            panic!("typed config");
        };
        let config = grpc_access_log::HttpGrpcAccessLogConfig::decode(any.value.as_slice())
            .expect("decodes");
        let common = config.common_config.expect("common");
        assert_eq!(common.log_name, USAGE_LOG);
        assert_eq!(
            config.additional_request_headers_to_log,
            ["x-gatehouse-consumer"]
        );
        assert!(log.filter.is_some(), "only routed requests");
    }

    #[test]
    fn every_identity_header_is_removed_early() {
        let config = identity_headers_removed();
        let mutation = early_header_mutation::HeaderMutation::decode(
            config.typed_config.expect("typed").value.as_slice(),
        )
        .expect("decodes");
        assert_eq!(mutation.mutations.len(), IDENTITY_HEADERS.len() + 2);
    }
}
