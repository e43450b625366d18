//! gRPC APIs: a protobuf descriptor set (`protoc --include_imports
//! --descriptor_set_out`, base64) and the services of it a route may
//! expose as JSON/HTTP (Envoy's gRPC-JSON transcoder) and to browsers
//! (gRPC-Web). The set must decode and name every listed service.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use prost::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Kind, NAME_PATTERN, Resource, check_name};

/// Largest descriptor set accepted (base64 text).
const MAX_DESCRIPTOR_LEN: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcApi {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The team it belongs to (`/v1/owners`); absent: the operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub owner: Option<String>,
    /// Free key/value labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: crate::model::Labels,
    /// Other owners' resources may refer to it (set by the operators).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// A `google.protobuf.FileDescriptorSet`, base64: its methods' HTTP
    /// mappings (`google.api.http` options) are what clients call.
    pub descriptor_set: String,
    /// Fully qualified services exposed (`orders.v1.Orders`).
    #[schemars(length(min = 1, max = 64))]
    pub services: Vec<String>,
}

/// A route's gRPC protocol translation: JSON/HTTP to the API's services
/// (the gRPC-JSON transcoder), and gRPC-Web for browsers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteGrpc {
    /// The `grpc_apis` resource whose services the route exposes as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcode: Option<String>,
    /// Accept gRPC-Web (`application/grpc-web…`) from browsers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub web: bool,
}

impl RouteGrpc {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        if let Some(api) = &self.transcode {
            check_name(api, "grpc.transcode", errors);
        }
        if self.transcode.is_none() && !self.web {
            errors.push(FieldError::new(
                "grpc",
                "name an API to `transcode`, or set `web`",
            ));
        }
    }
}

impl GrpcApi {
    /// The descriptor set's bytes (valid once `validate` passed).
    pub fn descriptor_bytes(&self) -> Vec<u8> {
        STANDARD
            .decode(self.descriptor_set.trim())
            .unwrap_or_default()
    }
}

/// Every service (`package.Service`) a descriptor set defines.
pub fn services_of(bytes: &[u8]) -> Result<Vec<String>, String> {
    let set = prost_types::FileDescriptorSet::decode(bytes)
        .map_err(|e| format!("is not a FileDescriptorSet: {e}"))?;
    Ok(set
        .file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.iter().map(move |s| {
                if package.is_empty() {
                    s.name().to_owned()
                } else {
                    format!("{package}.{}", s.name())
                }
            })
        })
        .collect())
}

impl Resource for GrpcApi {
    const KIND: Kind = Kind::GrpcApi;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if self.services.is_empty() || self.services.len() > 64 {
            errors.push(FieldError::new("services", "list 1 to 64 services"));
        }
        if self.descriptor_set.len() > MAX_DESCRIPTOR_LEN {
            errors.push(FieldError::new(
                "descriptor_set",
                format!("must be at most {MAX_DESCRIPTOR_LEN} bytes of base64"),
            ));
            return errors;
        }
        let bytes = match STANDARD.decode(self.descriptor_set.trim()) {
            Ok(bytes) => bytes,
            Err(_) => {
                errors.push(FieldError::new("descriptor_set", "is not base64"));
                return errors;
            }
        };
        match services_of(&bytes) {
            Err(e) => errors.push(FieldError::new("descriptor_set", e)),
            Ok(defined) => {
                for (i, service) in self.services.iter().enumerate() {
                    if !defined.contains(service) {
                        errors.push(FieldError::new(
                            format!("services[{i}]"),
                            format!(
                                "{service:?} is not in the descriptor set (it defines: {})",
                                defined.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> String {
        let file = prost_types::FileDescriptorProto {
            name: Some("orders.proto".into()),
            package: Some("orders.v1".into()),
            service: vec![prost_types::ServiceDescriptorProto {
                name: Some("Orders".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        STANDARD.encode(prost_types::FileDescriptorSet { file: vec![file] }.encode_to_vec())
    }

    fn api(descriptor_set: String, services: &[&str]) -> GrpcApi {
        GrpcApi {
            name: "orders".into(),
            owner: None,
            labels: Default::default(),
            shared: false,
            descriptor_set,
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fields(api: &GrpcApi) -> Vec<String> {
        api.validate().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_set_must_decode_and_define_every_service() {
        assert!(fields(&api(set(), &["orders.v1.Orders"])).is_empty());
        assert_eq!(fields(&api(set(), &["orders.v1.Nope"])), ["services[0]"]);
        assert_eq!(fields(&api("%%%".into(), &["a.B"])), ["descriptor_set"]);
        assert_eq!(
            fields(&api(STANDARD.encode([0xff, 0xff, 0xff]), &["a.B"])),
            ["descriptor_set"]
        );
        assert_eq!(fields(&api(set(), &[])), ["services"]);
    }
}
