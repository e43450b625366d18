//! Envoy's access log: one JSON object per request (or the text line), to a
//! file or Envoy's standard output, and optionally as OTLP log records to
//! the collector. Envoy buffers it and writes from its
//! own flush thread, never on the request's path. No credential reaches it:
//! the path is logged without its query (where `api_key` may be), and no
//! header that carries a key or token is named.

use gatehouse_proto::{
    accesslog, core, file_access_log, otel_access_log, otel_common, protobuf, to_any,
};

/// How each access log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line (`ACCESS_LOG_FIELDS`).
    #[default]
    Json,
    /// The human-readable line (`ACCESS_LOG_TEXT`).
    Text,
}

/// The JSON access log's fields and the Envoy command each comes from.
pub const ACCESS_LOG_FIELDS: &[(&str, &str)] = &[
    ("timestamp", "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%"),
    ("trace_id", "%TRACE_ID%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("consumer", "%REQ(X-GATEHOUSE-CONSUMER)%"),
    ("route", "%ROUTE_NAME%"),
    ("service", "%UPSTREAM_CLUSTER%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%PATH(NQ:ORIG_OR_PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("status", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("details", "%RESPONSE_CODE_DETAILS%"),
    ("duration_ms", "%DURATION%"),
    ("upstream_ms", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("bytes_in", "%BYTES_RECEIVED%"),
    ("bytes_out", "%BYTES_SENT%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("client_ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
];

/// The text line; the response flags say why Envoy failed a request.
pub const ACCESS_LOG_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %PATH(NQ:ORIG_OR_PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% route=%ROUTE_NAME% upstream=%UPSTREAM_CLUSTER% %DURATION%ms trace=%TRACE_ID%\n";

/// The file access logger writing to `path` (`/dev/stdout` for Envoy's
/// standard output).
pub fn access_log(path: &str, format: AccessLogFormat) -> accesslog::AccessLog {
    use core::{data_source::Specifier, substitution_format_string::Format};
    use file_access_log::file_access_log::AccessLogFormat as LogFormat;

    let format = match format {
        AccessLogFormat::Json => core::SubstitutionFormatString {
            format: Some(Format::JsonFormat(protobuf::Struct {
                fields: ACCESS_LOG_FIELDS
                    .iter()
                    .map(|(name, command)| {
                        (
                            (*name).to_owned(),
                            protobuf::Value {
                                kind: Some(protobuf::value::Kind::StringValue(
                                    (*command).to_owned(),
                                )),
                            },
                        )
                    })
                    .collect(),
            })),
            ..Default::default()
        },
        AccessLogFormat::Text => core::SubstitutionFormatString {
            format: Some(Format::TextFormatSource(core::DataSource {
                specifier: Some(Specifier::InlineString(ACCESS_LOG_TEXT.into())),
                ..Default::default()
            })),
            ..Default::default()
        },
    };
    let file = file_access_log::FileAccessLog {
        path: path.to_owned(),
        access_log_format: Some(LogFormat::LogFormat(format)),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(to_any(
            &file,
        ))),
        ..Default::default()
    }
}

/// The body of each OTLP log record (the fields are its attributes).
pub const OTLP_LOG_BODY: &str = "%REQ(:METHOD)% %PATH(NQ:ORIG_OR_PATH)% %RESPONSE_CODE%";

/// The access log as OpenTelemetry log records, exported over OTLP/gRPC to
/// the collector through `cluster` (Envoy batches them and flushes every
/// second): the JSON log's fields as attributes.
pub fn otlp_access_log(cluster: &str) -> accesslog::AccessLog {
    use otel_common::{AnyValue, KeyValue, KeyValueList, any_value::Value};
    let text = |s: &str| AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    };
    let config = otel_access_log::OpenTelemetryAccessLogConfig {
        grpc_service: Some(super::grpc_service(cluster, Some(1_000))),
        log_name: "gatehouse_access".into(),
        body: Some(text(OTLP_LOG_BODY)),
        attributes: Some(KeyValueList {
            values: ACCESS_LOG_FIELDS
                .iter()
                .filter(|(name, _)| *name != "timestamp")
                .map(|(name, command)| KeyValue {
                    key: (*name).to_owned(),
                    value: Some(text(command)),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.open_telemetry".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(to_any(
            &config,
        ))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_field_can_carry_a_credential() {
        for (name, command) in ACCESS_LOG_FIELDS {
            let upper = command.to_ascii_uppercase();
            for secret in ["AUTHORIZATION", "X-API-KEY", "COOKIE", "%PATH%", "(:PATH)"] {
                assert!(!upper.contains(secret), "{name} logs {secret}");
            }
        }
    }
}
