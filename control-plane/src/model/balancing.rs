//! How a service's requests are spread over its endpoints, how connections
//! to them are pooled, and how DNS names are resolved. Translated in
//! `translate/balancing.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, is_header_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    #[serde(default)]
    pub policy: LbPolicy,
    /// `ring_hash` and `maglev`: what keeps a client on one endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// `round_robin` and `least_request`: a new endpoint's share grows over
    /// this long instead of arriving all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_ms: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

/// The hash key: exactly one of these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie; Envoy sets it (with `ttl_s`) when the client has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookie>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_ip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashCookie {
    pub name: String,
    pub ttl_s: u32,
}

/// Connections to the endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPool {
    /// An idle upstream connection is closed after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u32>,
    /// A connection is replaced after this many requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2 and gRPC services: a PING this often detects dead connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keepalive_ms: Option<u32>,
}

/// How DNS-named endpoints are resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// How often names are resolved again (Envoy's default: 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u32>,
    /// Resolve again when the record's TTL runs out instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub respect_ttl: bool,
    #[serde(default)]
    pub family: DnsFamily,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DnsFamily {
    /// IPv4 when the name has one, else IPv6.
    #[default]
    V4Preferred,
    V4Only,
    V6Only,
    /// IPv6 when the name has one, else IPv4.
    Auto,
    /// Every address, of both families.
    All,
}

const MAX_MS: u32 = 3_600_000;

impl LoadBalancing {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        let hashing = matches!(self.policy, LbPolicy::RingHash | LbPolicy::Maglev);
        match (&self.hash_on, hashing) {
            (None, true) => errors.push(FieldError::new(
                "load_balancing.hash_on",
                "ring_hash and maglev need a hash key",
            )),
            (Some(_), false) => errors.push(FieldError::new(
                "load_balancing.hash_on",
                "only for ring_hash and maglev",
            )),
            (Some(hash), true) => hash.validate(errors),
            (None, false) => {}
        }
        if let Some(ms) = self.slow_start_ms {
            if !matches!(self.policy, LbPolicy::RoundRobin | LbPolicy::LeastRequest) {
                errors.push(FieldError::new(
                    "load_balancing.slow_start_ms",
                    "only for round_robin and least_request",
                ));
            } else if !(1..=MAX_MS).contains(&ms) {
                errors.push(FieldError::new(
                    "load_balancing.slow_start_ms",
                    format!("must be between 1 and {MAX_MS}"),
                ));
            }
        }
    }
}

impl HashOn {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        let set = usize::from(self.header.is_some())
            + usize::from(self.cookie.is_some())
            + usize::from(self.client_ip)
            + usize::from(self.query_parameter.is_some());
        if set != 1 {
            errors.push(FieldError::new(
                "load_balancing.hash_on",
                "exactly one of header, cookie, client_ip, query_parameter",
            ));
        }
        if let Some(header) = &self.header
            && !is_header_name(header)
        {
            errors.push(FieldError::new(
                "load_balancing.hash_on.header",
                "must be a lower-case header name",
            ));
        }
        if let Some(cookie) = &self.cookie {
            if cookie.name.is_empty()
                || !cookie
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                errors.push(FieldError::new(
                    "load_balancing.hash_on.cookie.name",
                    "letters, digits, - _ .",
                ));
            }
            if !(1..=31_536_000).contains(&cookie.ttl_s) {
                errors.push(FieldError::new(
                    "load_balancing.hash_on.cookie.ttl_s",
                    "must be between 1 and 31536000 (a year)",
                ));
            }
        }
        if let Some(name) = &self.query_parameter
            && (name.is_empty()
                || name.len() > 128
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || c == '&' || c == '='))
        {
            errors.push(FieldError::new(
                "load_balancing.hash_on.query_parameter",
                "a parameter name, without spaces, & or =",
            ));
        }
    }
}

impl ConnectionPool {
    pub fn validate(&self, http2: bool, errors: &mut Vec<FieldError>) {
        for (name, value) in [
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("http2_keepalive_ms", self.http2_keepalive_ms),
        ] {
            if value.is_some_and(|ms| !(1..=MAX_MS).contains(&ms)) {
                errors.push(FieldError::new(
                    format!("connection_pool.{name}"),
                    format!("must be between 1 and {MAX_MS}"),
                ));
            }
        }
        if self.max_requests_per_connection == Some(0) {
            errors.push(FieldError::new(
                "connection_pool.max_requests_per_connection",
                "must be at least 1",
            ));
        }
        if self.http2_keepalive_ms.is_some() && !http2 {
            errors.push(FieldError::new(
                "connection_pool.http2_keepalive_ms",
                "only for http2 and grpc services",
            ));
        }
    }
}

impl Dns {
    pub fn validate(&self, has_names: bool, errors: &mut Vec<FieldError>) {
        if !has_names {
            errors.push(FieldError::new(
                "dns",
                "only for a service with DNS-named endpoints",
            ));
        }
        if self
            .refresh_ms
            .is_some_and(|ms| !(100..=MAX_MS).contains(&ms))
        {
            errors.push(FieldError::new(
                "dns.refresh_ms",
                format!("must be between 100 and {MAX_MS}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hashing_needs_exactly_one_key() {
        let check = |value| {
            let lb: LoadBalancing = serde_json::from_value(value).expect("json");
            let mut errors = Vec::new();
            lb.validate(&mut errors);
            errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert!(check(json!({"policy": "ring_hash", "hash_on": {"header": "x-user"}})).is_empty());
        assert_eq!(
            check(json!({"policy": "maglev"})),
            ["load_balancing.hash_on"]
        );
        assert_eq!(
            check(
                json!({"policy": "ring_hash", "hash_on": {"header": "x-user", "client_ip": true}})
            ),
            ["load_balancing.hash_on"]
        );
        assert_eq!(
            check(json!({"policy": "random", "slow_start_ms": 1000})),
            ["load_balancing.slow_start_ms"]
        );
    }
}
