//! Gateways (listeners Envoy opens besides the default one from
//! `--proxy-addr`) and TLS certificates, which are held by reference: a
//! certificate names PEM files on the Envoy hosts, so private keys never pass
//! through Gatehouse, its store, its API or the xDS stream.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Kind, NAME_PATTERN, Reference, Resource, check_name};

const MAX_PATH_LEN: usize = 4096;

/// A certificate chain and its key, as files on every Envoy host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
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
    /// Absolute path of the PEM certificate chain on the Envoy hosts.
    pub cert_chain_file: String,
    /// Absolute path of the PEM private key on the Envoy hosts.
    pub private_key_file: String,
}

fn check_path(path: &str, field: &str, errors: &mut Vec<FieldError>) {
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN || path.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            format!("must be an absolute file path of at most {MAX_PATH_LEN} characters"),
        ));
    }
}

impl Resource for Certificate {
    const KIND: Kind = Kind::Certificate;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        check_path(&self.cert_chain_file, "cert_chain_file", &mut errors);
        check_path(&self.private_key_file, "private_key_file", &mut errors);
        errors
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayProtocol {
    #[default]
    Http,
    /// TLS with `certificate`; HTTP/2 and HTTP/1.1 by ALPN.
    Https,
}

fn any_address() -> String {
    "0.0.0.0".into()
}

/// One more listener, serving the same routes as the default one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
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
    /// IP address Envoy binds.
    #[serde(default = "any_address")]
    pub address: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default)]
    pub protocol: GatewayProtocol,
    /// The certificate an `https` gateway serves (required there, refused for `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl Resource for Gateway {
    const KIND: Kind = Kind::Gateway;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if self.address.parse::<IpAddr>().is_err() {
            errors.push(FieldError::new("address", "must be an IP address"));
        }
        if !(1..=65535).contains(&self.port) {
            errors.push(FieldError::new("port", "must be between 1 and 65535"));
        }
        match (self.protocol, &self.certificate) {
            (GatewayProtocol::Https, None) => {
                errors.push(FieldError::new(
                    "certificate",
                    "an https gateway needs a certificate",
                ));
            }
            (GatewayProtocol::Http, Some(_)) => {
                errors.push(FieldError::new(
                    "certificate",
                    "only an https gateway takes a certificate",
                ));
            }
            _ => {}
        }
        errors
    }

    fn references(&self) -> Vec<Reference> {
        self.certificate
            .iter()
            .map(|name| Reference {
                field: "certificate".into(),
                kind: Kind::Certificate,
                name: name.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn certificates_are_absolute_paths() {
        let c: Certificate = serde_json::from_value(serde_json::json!({
            "name": "edge", "cert_chain_file": "certs/edge.pem", "private_key_file": "/k\n"
        }))
        .expect("json");
        assert_eq!(
            fields(c.validate()),
            ["cert_chain_file", "private_key_file"]
        );
    }

    #[test]
    fn gateways_need_a_certificate_exactly_when_https() {
        let gateway = |json| serde_json::from_value::<Gateway>(json).expect("json");
        let https = gateway(serde_json::json!({"name": "tls", "port": 8443, "protocol": "https"}));
        assert_eq!(fields(https.validate()), ["certificate"]);
        let http = gateway(serde_json::json!({
            "name": "plain", "address": "::1", "port": 0, "certificate": "edge"
        }));
        assert_eq!(fields(http.validate()), ["port", "certificate"]);
        let ok = gateway(serde_json::json!({
            "name": "tls", "port": 8443, "protocol": "https", "certificate": "edge"
        }));
        assert!(ok.validate().is_empty());
        assert_eq!(ok.address, "0.0.0.0");
        assert_eq!(ok.references()[0].kind, Kind::Certificate);
    }
}
