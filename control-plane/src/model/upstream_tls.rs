//! HTTPS and mTLS to a service's endpoints. Translated in
//! `translate/upstream_tls.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, NAME_PATTERN, check_name, is_dns_name};

/// TLS to the endpoints. Files are paths on the Envoy hosts, as
/// certificates' are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The server name sent (SNI); default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// CA bundle the endpoints' certificates must chain to (default: the
    /// system bundle, `/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// DNS names the endpoint's certificate must carry (one is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_subject_alt_names: Vec<String>,
    /// mTLS: the `certificates` resource presented to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub client_certificate: Option<String>,
}

/// Where Envoy hosts keep the system's CA bundle (Debian, Ubuntu, Alpine).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl UpstreamTls {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        if let Some(sni) = &self.sni
            && !is_dns_name(sni)
        {
            errors.push(FieldError::new("tls.sni", "must be a DNS name"));
        }
        if let Some(path) = &self.ca_file
            && (!path.starts_with('/') || path.contains('\0'))
        {
            errors.push(FieldError::new("tls.ca_file", "must be an absolute path"));
        }
        for (i, name) in self.verify_subject_alt_names.iter().enumerate() {
            if !is_dns_name(name) {
                errors.push(FieldError::new(
                    format!("tls.verify_subject_alt_names[{i}]"),
                    "must be a DNS name",
                ));
            }
        }
        if let Some(name) = &self.client_certificate {
            check_name(name, "tls.client_certificate", errors);
        }
    }
}
