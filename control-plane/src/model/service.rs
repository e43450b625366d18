//! Upstream services: a named set of endpoints (with failover priorities),
//! the protocol spoken to them, how long a connection may take, and how
//! they are protected (`resilience.rs`: health checks, outlier detection,
//! circuit breakers).

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    CircuitBreakers, ConnectionPool, Dns, FieldError, HealthCheck, Kind, LoadBalancing,
    NAME_PATTERN, OutlierDetection, Reference, Resource, UpstreamTls, check_name, is_dns_name,
};

/// Upstream protocol spoken to a service's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
    Grpc,
}

fn default_connect_timeout_ms() -> u32 {
    5_000
}

/// An upstream service: a named set of endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
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
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u32,
    /// Active health checks: unhealthy endpoints get no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Passive: endpoints that keep failing are ejected for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits per priority class; unset ones take the documented defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// How requests are spread over the endpoints (`balancing.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// DNS-named endpoints: how they are resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// HTTPS (and mTLS) to the endpoints (`upstream_tls.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// An IP address or a DNS name.
    pub host: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Failover order: 0 (the default) is primary, 1 the first backup, …;
    /// traffic moves to the next priority when the current one is
    /// unhealthy, and back when it recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

impl Endpoint {
    /// IP endpoints are delivered by EDS; DNS names make the cluster STRICT_DNS.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

pub const MAX_ENDPOINT_WEIGHT: u32 = 10_000;
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;

impl Resource for Service {
    const KIND: Kind = Kind::Service;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    /// The client certificate its TLS presents, if any.
    fn references(&self) -> Vec<Reference> {
        self.tls
            .iter()
            .filter_map(|t| t.client_certificate.clone())
            .map(|name| Reference {
                field: "tls.client_certificate".into(),
                kind: Kind::Certificate,
                name,
            })
            .collect()
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        let mut seen = BTreeSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}]");
            if endpoint.ip().is_none() && !is_dns_name(&endpoint.host) {
                errors.push(FieldError::new(
                    format!("{field}.host"),
                    "must be an IP address or a DNS name",
                ));
            }
            if !(1..=65_535).contains(&endpoint.port) {
                errors.push(FieldError::new(
                    format!("{field}.port"),
                    "must be between 1 and 65535",
                ));
            }
            if let Some(weight) = endpoint.weight
                && !(1..=MAX_ENDPOINT_WEIGHT).contains(&weight)
            {
                errors.push(FieldError::new(
                    format!("{field}.weight"),
                    format!("must be between 1 and {MAX_ENDPOINT_WEIGHT}"),
                ));
            }
            if !seen.insert((endpoint.host.to_ascii_lowercase(), endpoint.port)) {
                errors.push(FieldError::new(field, "duplicate endpoint"));
            }
        }
        let priorities: BTreeSet<u32> = self
            .endpoints
            .iter()
            .map(|e| e.priority.unwrap_or(0))
            .collect();
        if let Some(gap) = (0..priorities.len() as u32).find(|p| !priorities.contains(p)) {
            errors.push(FieldError::new(
                "endpoints",
                format!("priorities must run from 0 without gaps: none has priority {gap}"),
            ));
        }
        if let Some(check) = &self.health_check {
            check.validate("health_check", &mut errors);
        }
        if let Some(outliers) = &self.outlier_detection {
            outliers.validate("outlier_detection", &mut errors);
        }
        if let Some(breakers) = &self.circuit_breakers {
            breakers.validate("circuit_breakers", &mut errors);
        }
        if let Some(lb) = &self.load_balancing {
            lb.validate(&mut errors);
        }
        if let Some(pool) = &self.connection_pool {
            let http2 = matches!(self.protocol, Protocol::Http2 | Protocol::Grpc);
            pool.validate(http2, &mut errors);
        }
        if let Some(tls) = &self.tls {
            tls.validate(&mut errors);
        }
        if let Some(dns) = &self.dns {
            dns.validate(self.endpoints.iter().any(|e| e.ip().is_none()), &mut errors);
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.connect_timeout_ms) {
            errors.push(FieldError::new(
                "connect_timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn service_validation() {
        let s: Service = serde_json::from_value(serde_json::json!({
            "name": "svc",
            "endpoints": [{"host": "10.0.0.1", "port": 0}, {"host": "bad host", "port": 80},
                          {"host": "backend.internal", "port": 8080, "weight": 0}],
            "protocol": "grpc"
        }))
        .expect("json");
        assert_eq!(
            fields(s.validate()),
            vec![
                "endpoints[0].port",
                "endpoints[1].host",
                "endpoints[2].weight"
            ]
        );
    }
}
