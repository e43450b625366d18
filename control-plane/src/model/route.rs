//! Routes: which requests match (path, method, host, headers), where they
//! go (one service or a weighted split), and how the path is rewritten.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ApiVersion, Cors, DirectResponse, Fault, FieldError, HeaderRules, Kind, MAX_TIMEOUT_MS, Mirror,
    NAME_PATTERN, Redirect, Reference, Resource, Retries, RouteAuth, RoutePriority, WebSocket,
    check_name, check_re2_regex, is_dns_name, is_header_name,
};

/// A route: which requests it matches and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
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
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Where requests go; absent only with `redirect` or `direct_response`.
    #[serde(default, skip_serializing_if = "Destination::is_empty")]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Who may call the route; absent means public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
    /// Failed requests tried again on another endpoint (`retry.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// `high` routes use the services' high-priority circuit breakers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<RoutePriority>,
    /// Best effort: shed first when the gateway is overloaded (Envoy's
    /// adaptive concurrency; not for `priority: high` routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_shedding: bool,
    /// Cross-origin requests from browsers (`cors.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Headers set, added or removed on the request and the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
    /// The Host header the upstream receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// The Host header becomes the DNS name of the endpoint chosen (for
    /// services with DNS-named endpoints).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_rewrite_to_endpoint: bool,
    /// A stream with no activity this long is closed (Envoy's default 5 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u32>,
    /// Instead of a destination: answer with a redirect (`actions.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Instead of a destination: answer directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// A copy of a share of the requests to another service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Injected delays and aborts, for chaos drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Larger request bodies are refused with 413 (the body is buffered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
    /// WebSocket upgrades allowed on this route (off elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocket>,
    /// Served over TLS only: a cleartext request gets 403 `tls_required`
    /// (never a redirect: its credentials already crossed in the clear).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// The API version this route serves, and its deprecation and sunset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ApiVersion>,
    /// Served only on these gateways' listeners (empty: on the default
    /// listener and every gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// JSON/HTTP transcoded to a gRPC API, and gRPC-Web (a `grpc` service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<super::grpc_api::RouteGrpc>,
}

/// Exactly one of the path matchers, plus optional method, host and header conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"))]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"))]
    pub path_exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions: `name` plus one of `exact`, `regex`,
    /// `present: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// The path condition of a route, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch<'a> {
    Prefix(&'a str),
    Exact(&'a str),
    Regex(&'a str),
}

impl RouteMatch {
    /// The single path matcher; `None` only for an invalid (unvalidated) route.
    pub fn path(&self) -> Option<PathMatch<'_>> {
        match (&self.path_prefix, &self.path_exact, &self.path_regex) {
            (Some(p), None, None) => Some(PathMatch::Prefix(p)),
            (None, Some(p), None) => Some(PathMatch::Exact(p)),
            (None, None, Some(p)) => Some(PathMatch::Regex(p)),
            _ => None,
        }
    }
}

/// A request header condition: exactly one of `exact`, `prefix`, `regex`, `present`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// Where matched requests go: one service, or a weighted split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted: Vec<WeightedService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedService {
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub service: String,
    pub weight: u32,
}

impl Destination {
    pub fn is_empty(&self) -> bool {
        self.service.is_none() && self.weighted.is_empty()
    }

    /// Every service the destination names, in order.
    pub fn services(&self) -> Vec<&str> {
        match &self.service {
            Some(service) => vec![service.as_str()],
            None => self.weighted.iter().map(|w| w.service.as_str()).collect(),
        }
    }
}

pub const MAX_WEIGHT: u32 = 1_000_000;
/// At most this many weighted destinations: keeps the total far below
/// Envoy's 32-bit limit on the sum of weights.
pub const MAX_WEIGHTED_SERVICES: usize = 100;
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl Resource for Route {
    const KIND: Kind = Kind::Route;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        self.validate_match(&mut errors);
        self.validate_action(&mut errors);
        self.validate_extras(&mut errors);
        if let Some(version) = &self.version {
            version.validate(&mut errors);
        }
        for (i, gateway) in self.gateways.iter().enumerate() {
            check_name(gateway, &format!("gateways[{i}]"), &mut errors);
        }
        if let Some(grpc) = &self.grpc {
            grpc.validate(&mut errors);
        }
        self.validate_rewrite(&mut errors);
        self.validate_websocket(&mut errors);
        if let Some(auth) = &self.auth {
            auth.validate(&mut errors);
        }
        if let Some(cors) = &self.cors {
            cors.validate(&mut errors);
        }
        if let Some(headers) = &self.headers {
            headers.validate(&mut errors);
        }
        if let Some(retries) = &self.retries {
            let timeout = self.timeout_ms.filter(|t| *t > 0);
            retries.validate("retries", timeout, &mut errors);
        }
        if self.load_shedding && self.priority == Some(RoutePriority::High) {
            errors.push(FieldError::new(
                "load_shedding",
                "high-priority routes are never shed: remove one of load_shedding and priority: high",
            ));
        }
        if let Some(timeout) = self.timeout_ms
            && timeout > MAX_TIMEOUT_MS
        {
            errors.push(FieldError::new(
                "timeout_ms",
                format!("must be at most {MAX_TIMEOUT_MS} (0 disables the timeout)"),
            ));
        }
        errors
    }

    fn references(&self) -> Vec<Reference> {
        let mut references = self.destination_references();
        if let Some(mirror) = &self.mirror {
            references.push(Reference {
                field: "mirror.service".into(),
                kind: Kind::Service,
                name: mirror.service.clone(),
            });
        }
        if let Some(api) = self.grpc.as_ref().and_then(|g| g.transcode.as_ref()) {
            references.push(Reference {
                field: "grpc.transcode".into(),
                kind: Kind::GrpcApi,
                name: api.clone(),
            });
        }
        references.extend(self.gateways.iter().enumerate().map(|(i, g)| Reference {
            field: format!("gateways[{i}]"),
            kind: Kind::Gateway,
            name: g.clone(),
        }));
        references
    }
}

impl Route {
    fn destination_references(&self) -> Vec<Reference> {
        let d = &self.destination;
        match &d.service {
            Some(service) => vec![Reference {
                field: "destination.service".into(),
                kind: Kind::Service,
                name: service.clone(),
            }],
            None => d
                .weighted
                .iter()
                .enumerate()
                .map(|(i, w)| Reference {
                    field: format!("destination.weighted[{i}].service"),
                    kind: Kind::Service,
                    name: w.service.clone(),
                })
                .collect(),
        }
    }
}

impl Route {
    fn validate_match(&self, errors: &mut Vec<FieldError>) {
        let m = &self.matches;
        let set = [
            ("match.path_prefix", &m.path_prefix),
            ("match.path_exact", &m.path_exact),
            ("match.path_regex", &m.path_regex),
        ];
        let given: Vec<_> = set.iter().filter(|(_, v)| v.is_some()).collect();
        if given.len() != 1 {
            errors.push(FieldError::new(
                "match",
                "exactly one of path_prefix, path_exact, path_regex is required",
            ));
        }
        for (field, value) in given {
            let Some(value) = value else { continue };
            if *field == "match.path_regex" {
                if let Err(e) = check_re2_regex(value) {
                    errors.push(FieldError::new(*field, e));
                }
            } else if let Err(e) = check_path(value) {
                errors.push(FieldError::new(*field, e));
            }
        }
        let mut methods = BTreeSet::new();
        for (i, method) in m.methods.iter().enumerate() {
            if !METHODS.contains(&method.as_str()) {
                errors.push(FieldError::new(
                    format!("match.methods[{i}]"),
                    format!("must be one of {}", METHODS.join(", ")),
                ));
            } else if !methods.insert(method) {
                errors.push(FieldError::new(
                    format!("match.methods[{i}]"),
                    "duplicate method",
                ));
            }
        }
        for (i, host) in m.hosts.iter().enumerate() {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if host.to_ascii_lowercase() != *host || !is_dns_name(bare) {
                errors.push(FieldError::new(
                    format!("match.hosts[{i}]"),
                    "must be a lower-case DNS name, optionally starting with '*.'",
                ));
            }
        }
        for (i, header) in m.headers.iter().enumerate() {
            let field = format!("match.headers[{i}]");
            if !is_header_name(&header.name) {
                errors.push(FieldError::new(
                    format!("{field}.name"),
                    "must be a lower-case HTTP header name",
                ));
            }
            let conditions = [
                header.exact.is_some(),
                header.prefix.is_some(),
                header.regex.is_some(),
                header.present.is_some(),
            ];
            if conditions.iter().filter(|c| **c).count() != 1 {
                errors.push(FieldError::new(
                    field.clone(),
                    "exactly one of exact, prefix, regex, present is required",
                ));
            }
            if header.present == Some(false) {
                errors.push(FieldError::new(
                    format!("{field}.present"),
                    "must be true (use invert for absence)",
                ));
            }
            if let Some(regex) = &header.regex
                && let Err(e) = check_re2_regex(regex)
            {
                errors.push(FieldError::new(format!("{field}.regex"), e));
            }
        }
    }

    /// Exactly one of a destination, a redirect, a direct response; what
    /// only proxying uses goes with the destination alone.
    fn validate_action(&self, errors: &mut Vec<FieldError>) {
        let answers = match (&self.redirect, &self.direct_response) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "redirect",
                    "a route answers with a redirect or a direct response, not both",
                ));
                return;
            }
            (Some(redirect), None) => {
                redirect.validate(errors);
                "redirect"
            }
            (None, Some(direct)) => {
                direct.validate(errors);
                "direct_response"
            }
            (None, None) => return self.validate_destination(errors),
        };
        for (field, set) in [
            ("destination", !self.destination.is_empty()),
            ("retries", self.retries.is_some()),
            ("mirror", self.mirror.is_some()),
            ("host_rewrite", self.host_rewrite.is_some()),
            ("host_rewrite_to_endpoint", self.host_rewrite_to_endpoint),
            ("prefix_rewrite", self.prefix_rewrite.is_some()),
            ("strip_prefix", self.strip_prefix),
            ("load_shedding", self.load_shedding),
        ] {
            if set {
                errors.push(FieldError::new(
                    field,
                    format!("not with {answers}: nothing is proxied"),
                ));
            }
        }
    }

    fn validate_destination(&self, errors: &mut Vec<FieldError>) {
        let d = &self.destination;
        match (&d.service, d.weighted.is_empty()) {
            (Some(service), true) => check_name(service, "destination.service", errors),
            (None, false) => {
                if d.weighted.len() > MAX_WEIGHTED_SERVICES {
                    errors.push(FieldError::new(
                        "destination.weighted",
                        format!("at most {MAX_WEIGHTED_SERVICES} services"),
                    ));
                }
                let mut seen = BTreeSet::new();
                let mut total: u64 = 0;
                for (i, w) in d.weighted.iter().enumerate() {
                    check_name(
                        &w.service,
                        &format!("destination.weighted[{i}].service"),
                        errors,
                    );
                    if w.weight > MAX_WEIGHT {
                        errors.push(FieldError::new(
                            format!("destination.weighted[{i}].weight"),
                            format!("must be at most {MAX_WEIGHT}"),
                        ));
                    }
                    if !seen.insert(&w.service) {
                        errors.push(FieldError::new(
                            format!("destination.weighted[{i}].service"),
                            "service listed twice",
                        ));
                    }
                    total += u64::from(w.weight);
                }
                if total == 0 {
                    errors.push(FieldError::new(
                        "destination.weighted",
                        "weights must sum to more than 0",
                    ));
                }
            }
            _ => errors.push(FieldError::new(
                "destination",
                "exactly one of service, weighted is required",
            )),
        }
    }

    fn validate_rewrite(&self, errors: &mut Vec<FieldError>) {
        let is_prefix = self.matches.path_prefix.is_some();
        if self.strip_prefix && !is_prefix {
            errors.push(FieldError::new(
                "strip_prefix",
                "only applies to routes matching match.path_prefix",
            ));
        }
        if let Some(rewrite) = &self.prefix_rewrite {
            if self.strip_prefix {
                errors.push(FieldError::new(
                    "prefix_rewrite",
                    "cannot be combined with strip_prefix",
                ));
            }
            if self.matches.path_regex.is_some() {
                errors.push(FieldError::new(
                    "prefix_rewrite",
                    "only applies to routes matching match.path_prefix or match.path_exact",
                ));
            }
            if let Err(e) = check_path(rewrite) {
                errors.push(FieldError::new("prefix_rewrite", e));
            }
        }
    }
}

const MAX_PATH_LEN: usize = 1024;

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("must be at most {MAX_PATH_LEN} characters"));
    }
    if path.contains(['?', '#']) || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("must not contain '?', '#', spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
