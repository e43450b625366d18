//! Consumers: who calls the APIs, with their plan, roles and metadata.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    CONSUMER_NAME_PATTERN, MAX_METADATA, TOKEN_PATTERN, check_tokens, is_token, token_message,
};
use crate::model::{FieldError, Kind, Resource};

/// Someone who calls the APIs: the identity behind a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[schemars(regex(pattern = CONSUMER_NAME_PATTERN))]
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
    /// Free-text tier (free, pro, enterprise...) used by rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOKEN_PATTERN))]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Client certificates that identify this consumer on `mtls` routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateIdentity>,
}

/// A client certificate, by its public key or one of its names; Envoy has
/// verified it against the gateway's CA before ext-authz looks it up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateIdentity {
    /// Hex SHA-256 of the certificate's SubjectPublicKeyInfo
    /// (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub spki_sha256: Option<String>,
    /// A URI SAN, such as a SPIFFE id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A DNS SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// Scopes the certificate grants (checked against a route's `scopes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl CertificateIdentity {
    /// The lookup key ext-authz matches: `spki:<hex>`, `uri:<uri>` or `dns:<name>`.
    pub fn key(&self) -> Option<String> {
        match (&self.spki_sha256, &self.uri, &self.dns) {
            (Some(spki), None, None) => Some(format!("spki:{spki}")),
            (None, Some(uri), None) => Some(format!("uri:{uri}")),
            (None, None, Some(dns)) => Some(format!("dns:{}", dns.to_ascii_lowercase())),
            _ => None,
        }
    }

    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        if self.key().is_none() {
            errors.push(FieldError::new(
                field,
                "give exactly one of spki_sha256, uri or dns",
            ));
        }
        if let Some(spki) = &self.spki_sha256
            && (spki.len() != 64
                || !spki
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        {
            errors.push(FieldError::new(
                format!("{field}.spki_sha256"),
                "must be 64 lowercase hex digits",
            ));
        }
        if let Some(uri) = &self.uri
            && (!uri.contains(':')
                || uri.len() > 2048
                || uri.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            errors.push(FieldError::new(
                format!("{field}.uri"),
                "must be an absolute URI (scheme:...) without spaces",
            ));
        }
        if let Some(dns) = &self.dns
            && !crate::model::is_dns_name(dns)
        {
            errors.push(FieldError::new(
                format!("{field}.dns"),
                "must be a DNS name",
            ));
        }
        check_tokens(&format!("{field}.scopes"), &self.scopes, errors);
    }
}

impl Resource for Consumer {
    const KIND: Kind = Kind::Consumer;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn is_valid_name(name: &str) -> bool {
        is_consumer_name(name)
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_consumer_name(&self.name) {
            errors.push(FieldError::new(
                "name",
                "must be 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            ));
        }
        if let Some(plan) = &self.plan
            && !is_token(plan)
        {
            errors.push(FieldError::new("plan", token_message()));
        }
        check_tokens("roles", &self.roles, &mut errors);
        if self.metadata.len() > MAX_METADATA {
            errors.push(FieldError::new(
                "metadata",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        for (key, value) in &self.metadata {
            if key.is_empty() || key.len() > 64 || value.len() > 1024 {
                errors.push(FieldError::new(
                    format!("metadata.{key}"),
                    "keys must be 1-64 bytes and values at most 1024 bytes",
                ));
            }
        }
        if self.certificates.len() > MAX_METADATA {
            errors.push(FieldError::new(
                "certificates",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        for (i, identity) in self.certificates.iter().enumerate() {
            identity.validate(&format!("certificates[{i}]"), &mut errors);
        }
        errors
    }
}

pub fn is_consumer_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn consumer_names_and_tokens() {
        let consumer = Consumer {
            owner: None,
            labels: Default::default(),
            shared: false,
            name: "alice@example.com".into(),
            plan: Some("pro".into()),
            roles: vec!["admin".into(), "admin".into(), "has space".into()],
            metadata: BTreeMap::new(),
            certificates: vec![
                CertificateIdentity {
                    uri: Some("spiffe://example.org/alice".into()),
                    ..Default::default()
                },
                CertificateIdentity {
                    uri: Some("spiffe://x".into()),
                    dns: Some("a.example".into()),
                    ..Default::default()
                },
                CertificateIdentity {
                    spki_sha256: Some("AB".into()),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            fields(consumer.validate()),
            vec![
                "roles[1]",
                "roles[2]",
                "certificates[1]",
                "certificates[2].spki_sha256"
            ]
        );
        assert_eq!(
            consumer.certificates[0].key().as_deref(),
            Some("uri:spiffe://example.org/alice")
        );
        assert!(!is_consumer_name("../etc"));
        assert!(!is_consumer_name(""));
    }
}
