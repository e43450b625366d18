//! Gateways: listeners Envoy opens besides the default one from
//! `--proxy-addr`. An `https` gateway serves a default certificate and more
//! by SNI, with a minimum TLS version, cipher suites and HSTS; an `http`
//! gateway can redirect everything to HTTPS. Certificates are in
//! `certificate.rs`.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Kind, NAME_PATTERN, Reference, Resource, check_name, is_dns_name};

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
    /// The fleet whose Envoys open it: their node `cluster` (absent: every
    /// Envoy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub fleet: Option<String>,
    /// IP address Envoy binds.
    #[serde(default = "any_address")]
    pub address: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default)]
    pub protocol: GatewayProtocol,
    /// The certificate an `https` gateway serves to clients whose SNI names
    /// none of `sni` (required there, refused for `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// More certificates, chosen by the server name the client sends (SNI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniCertificate>,
    /// Oldest TLS version accepted (`https`): 1.2 (default) or 1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites offered, in BoringSSL's names (`https`; empty:
    /// Envoy's defaults). TLS 1.3's suites are not configurable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// `Strict-Transport-Security: max-age=<this>; includeSubDomains` on
    /// every response (`https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 63072000))]
    pub hsts_max_age_s: Option<u32>,
    /// Ask for (or require) client certificates signed by a CA of the
    /// bundle (`https`); `mtls` routes map them to consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<ClientCertificates>,
    /// `http` only: answer every request with a redirect to HTTPS on this
    /// port (443: no port in the location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub redirect_to_https_port: Option<u32>,
}

/// Client certificates a gateway asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificates {
    /// `request`: a client may present one (routes decide); `require`: the
    /// handshake fails without one. Either way a certificate presented must
    /// be signed by a CA of `ca_pem`.
    pub mode: ClientCertificateMode,
    /// PEM CA certificates that sign client certificates.
    pub ca_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificateMode {
    Request,
    Require,
}

/// A certificate served to clients asking for one of `server_names`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Host names (`api.example.com`) or one-label wildcards (`*.example.com`).
    #[schemars(length(min = 1, max = 64))]
    pub server_names: Vec<String>,
    pub certificate: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

/// The TLS 1.2 cipher suites a gateway may name (BoringSSL's, forward secret).
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// A fleet name: an Envoy node `cluster` value.
pub fn is_fleet(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Gateway {
    fn validate_tls(&self, errors: &mut Vec<FieldError>) {
        let https = self.protocol == GatewayProtocol::Https;
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, entry) in self.sni.iter().enumerate() {
            if entry.server_names.is_empty() || entry.server_names.len() > 64 {
                errors.push(FieldError::new(
                    format!("sni[{i}].server_names"),
                    "must list 1 to 64 names",
                ));
            }
            for (j, name) in entry.server_names.iter().enumerate() {
                let field = format!("sni[{i}].server_names[{j}]");
                let host = name.strip_prefix("*.").unwrap_or(name);
                if !is_dns_name(host) || host.is_empty() || name != &name.to_ascii_lowercase() {
                    errors.push(FieldError::new(
                        field,
                        "must be a lowercase host name or *.<host name>",
                    ));
                } else if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                    errors.push(FieldError::new(
                        field,
                        format!("{name:?} is already served by sni[{first}]"),
                    ));
                } else {
                    seen.push((name, i));
                }
            }
        }
        for (i, suite) in self.cipher_suites.iter().enumerate() {
            if !CIPHER_SUITES.contains(&suite.as_str()) {
                errors.push(FieldError::new(
                    format!("cipher_suites[{i}]"),
                    format!("must be one of {}", CIPHER_SUITES.join(", ")),
                ));
            }
        }
        if let Some(client) = &self.client_certificates
            && let Err(e) = super::certificate::chain_info(&client.ca_pem)
        {
            errors.push(FieldError::new("client_certificates.ca_pem", e));
        }
        if !https {
            let set = [
                ("client_certificates", self.client_certificates.is_some()),
                ("sni", !self.sni.is_empty()),
                ("tls_min_version", self.tls_min_version.is_some()),
                ("cipher_suites", !self.cipher_suites.is_empty()),
                ("hsts_max_age_s", self.hsts_max_age_s.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, set)| *set) {
                errors.push(FieldError::new(*field, "only an https gateway takes it"));
            }
        }
        if https && self.redirect_to_https_port.is_some() {
            errors.push(FieldError::new(
                "redirect_to_https_port",
                "only an http gateway redirects to HTTPS",
            ));
        }
        if let Some(port) = self.redirect_to_https_port
            && !(1..=65535).contains(&port)
        {
            errors.push(FieldError::new(
                "redirect_to_https_port",
                "must be between 1 and 65535",
            ));
        }
        if let Some(age) = self.hsts_max_age_s
            && !(1..=63_072_000).contains(&age)
        {
            errors.push(FieldError::new(
                "hsts_max_age_s",
                "must be between 1 and 63072000 (two years)",
            ));
        }
    }

    /// Every certificate the gateway serves: the default, then by SNI.
    pub fn certificates(&self) -> impl Iterator<Item = &str> {
        self.certificate
            .iter()
            .map(String::as_str)
            .chain(self.sni.iter().map(|s| s.certificate.as_str()))
    }
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
        self.validate_tls(&mut errors);
        if let Some(fleet) = &self.fleet
            && !is_fleet(fleet)
        {
            errors.push(FieldError::new(
                "fleet",
                "must be an Envoy node cluster: 1-63 letters, digits, '.', '_' or '-'",
            ));
        }
        errors
    }

    fn references(&self) -> Vec<Reference> {
        let sni = self.sni.iter().enumerate().map(|(i, s)| Reference {
            field: format!("sni[{i}].certificate"),
            kind: Kind::Certificate,
            name: s.certificate.clone(),
        });
        self.certificate
            .iter()
            .map(|name| Reference {
                field: "certificate".into(),
                kind: Kind::Certificate,
                name: name.clone(),
            })
            .chain(sni)
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

    #[test]
    fn sni_names_are_host_names_served_once() {
        let g: Gateway = serde_json::from_value(serde_json::json!({
            "name": "tls", "port": 8443, "protocol": "https", "certificate": "edge",
            "sni": [
                {"server_names": ["api.example.com", "*.example.com"], "certificate": "a"},
                {"server_names": ["api.example.com", "Bad.example.com", "*"], "certificate": "b"},
            ],
            "cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "RC4-MD5"],
            "tls_min_version": "1.3", "hsts_max_age_s": 0
        }))
        .expect("json");
        assert_eq!(
            fields(g.validate()),
            [
                "sni[1].server_names[0]",
                "sni[1].server_names[1]",
                "sni[1].server_names[2]",
                "cipher_suites[1]",
                "hsts_max_age_s"
            ]
        );
        assert_eq!(g.certificates().collect::<Vec<_>>(), ["edge", "a", "b"]);
        assert_eq!(g.references()[2].field, "sni[1].certificate");
        let plain: Gateway = serde_json::from_value(serde_json::json!({
            "name": "plain", "port": 8080, "redirect_to_https_port": 443,
            "sni": [{"server_names": ["a.example.com"], "certificate": "a"}]
        }))
        .expect("json");
        assert_eq!(
            fields(plain.validate()),
            ["sni", "certificate"].map(String::from)[..1]
        );
    }
}
