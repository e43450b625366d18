//! The operator-facing resource model (services, routes, and in [`auth`] who
//! may call them) and its validation.
//!
//! Everything the admin API accepts passes [`Resource::validate`] first, so the
//! store only ever holds specs that translate into configuration Envoy accepts.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub mod auth;
pub mod gateway;
pub mod ratelimit;
pub use auth::{Consumer, IntrospectionProvider, JwtIssuer, RouteAuth};
pub use gateway::{Certificate, Gateway, GatewayProtocol};
pub use ratelimit::{Plan, RateLimitPolicy};

/// The kinds of resource the admin API manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// Ordered by dependency: what a kind refers to comes before it.
pub enum Kind {
    Service,
    Certificate,
    Gateway,
    Consumer,
    JwtIssuer,
    IntrospectionProvider,
    Plan,
    Route,
    RateLimitPolicy,
    /// API keys: managed under their consumer, never in a config document.
    ApiKey,
}

impl Kind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Certificate => "certificate",
            Kind::Gateway => "gateway",
            Kind::Consumer => "consumer",
            Kind::JwtIssuer => "jwt_issuer",
            Kind::IntrospectionProvider => "introspection_provider",
            Kind::Plan => "plan",
            Kind::Route => "route",
            Kind::RateLimitPolicy => "rate_limit_policy",
            Kind::ApiKey => "api_key",
        }
    }

    /// The collection name in the admin API path (`/v1/{plural}`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Certificate => "certificates",
            Kind::Gateway => "gateways",
            Kind::Consumer => "consumers",
            Kind::JwtIssuer => "jwt-issuers",
            Kind::IntrospectionProvider => "introspection-providers",
            Kind::Plan => "plans",
            Kind::Route => "routes",
            Kind::RateLimitPolicy => "rate-limit-policies",
            Kind::ApiKey => "keys",
        }
    }

    pub fn parse(stored: &str) -> Option<Kind> {
        match stored {
            "service" => Some(Kind::Service),
            "certificate" => Some(Kind::Certificate),
            "gateway" => Some(Kind::Gateway),
            "consumer" => Some(Kind::Consumer),
            "jwt_issuer" => Some(Kind::JwtIssuer),
            "introspection_provider" => Some(Kind::IntrospectionProvider),
            "plan" => Some(Kind::Plan),
            "route" => Some(Kind::Route),
            "rate_limit_policy" => Some(Kind::RateLimitPolicy),
            "api_key" => Some(Kind::ApiKey),
            _ => None,
        }
    }
}

/// One problem with a submitted resource: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A resource kind the admin API and the store handle generically.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static
{
    const KIND: Kind;

    fn name(&self) -> &str;

    /// Whether `name` is a valid name for this kind (checked on paths too).
    fn is_valid_name(name: &str) -> bool {
        is_dns_label(name)
    }

    /// Checks the resource on its own (references to other resources are
    /// checked by the store, inside the write transaction).
    fn validate(&self) -> Vec<FieldError>;

    /// Other resources this one points at; they must exist.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

/// A pointer from one resource to another, with the field that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub field: String,
    pub kind: Kind,
    pub name: String,
}

/// Every resource in one document: the unit of declarative apply and export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDocument {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_issuers: Vec<JwtIssuer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub introspection_providers: Vec<IntrospectionProvider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<Plan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit_policies: Vec<RateLimitPolicy>,
    /// Certificates by reference: PEM files on the Envoy hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Listeners besides the default one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<Gateway>,
}

impl ConfigDocument {
    /// Validates every resource, with fields prefixed by their place in the
    /// document (`routes[2].match.path_prefix`), and rejects repeated names.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        validate_list("services", &self.services, &mut errors);
        validate_list("routes", &self.routes, &mut errors);
        validate_list("consumers", &self.consumers, &mut errors);
        validate_list("jwt_issuers", &self.jwt_issuers, &mut errors);
        validate_list(
            "introspection_providers",
            &self.introspection_providers,
            &mut errors,
        );
        validate_list("plans", &self.plans, &mut errors);
        validate_list(
            "rate_limit_policies",
            &self.rate_limit_policies,
            &mut errors,
        );
        validate_list("certificates", &self.certificates, &mut errors);
        validate_list("gateways", &self.gateways, &mut errors);
        errors
    }
}

fn validate_list<R: Resource>(list: &str, resources: &[R], errors: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, resource) in resources.iter().enumerate() {
        for e in resource.validate() {
            errors.push(FieldError::new(
                format!("{list}[{i}].{}", e.field),
                e.message,
            ));
        }
        if !names.insert(resource.name()) {
            errors.push(FieldError::new(
                format!("{list}[{i}].name"),
                format!("{} {:?} is listed twice", R::KIND.as_str(), resource.name()),
            ));
        }
    }
}

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
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u32,
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

    fn name(&self) -> &str {
        &self.name
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
        if !(1..=MAX_TIMEOUT_MS).contains(&self.connect_timeout_ms) {
            errors.push(FieldError::new(
                "connect_timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        errors
    }
}

/// A route: which requests it matches and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
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

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        self.validate_match(&mut errors);
        self.validate_destination(&mut errors);
        self.validate_rewrite(&mut errors);
        if let Some(auth) = &self.auth {
            auth.validate(&mut errors);
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

/// Names are DNS labels: lower-case alphanumerics and '-', 1..=63 characters,
/// starting and ending with an alphanumeric.
pub fn check_name(name: &str, field: &str, errors: &mut Vec<FieldError>) {
    if !is_dns_label(name) {
        errors.push(FieldError::new(
            field,
            "must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
        ));
    }
}

/// What [`is_dns_label`] accepts, as a regular expression (for JSON Schemas).
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let lower = label.to_ascii_lowercase();
            is_dns_label(&lower)
        })
}

pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
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

const MAX_REGEX_LEN: usize = 1024;

/// Accepts only what RE2 (Envoy's `safe_regex` engine) accepts: no
/// look-around or back-references (already absent from this syntax) and no
/// class set operations, which only Rust's syntax has.
pub fn check_re2_regex(pattern: &str) -> Result<(), String> {
    use regex_syntax::ast::{self, Visitor};

    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("must be at most {MAX_REGEX_LEN} characters"));
    }
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| format!("invalid regular expression: {}", e.kind()))?;

    struct Re2Only;
    impl Visitor for Re2Only {
        type Output = ();
        type Err = String;
        fn finish(self) -> Result<(), String> {
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), String> {
            match item {
                ast::ClassSetItem::Unicode(class) => re2_unicode_class(class),
                _ => Ok(()),
            }
        }
        fn visit_class_set_binary_op_pre(
            &mut self,
            _op: &ast::ClassSetBinaryOp,
        ) -> Result<(), String> {
            Err("class set operations (&&, --, ~~) are not supported by RE2".into())
        }
        fn visit_pre(&mut self, ast: &ast::Ast) -> Result<(), String> {
            let flags = match ast {
                ast::Ast::Flags(f) => Some(&f.flags),
                ast::Ast::Group(g) => match &g.kind {
                    ast::GroupKind::NonCapturing(flags) => Some(flags),
                    _ => None,
                },
                _ => None,
            };
            for item in flags.map(|f| f.items.as_slice()).unwrap_or_default() {
                if let ast::FlagsItemKind::Flag(
                    ast::Flag::IgnoreWhitespace | ast::Flag::CRLF | ast::Flag::Unicode,
                ) = item.kind
                {
                    return Err("flags x, R and u are not supported by RE2".into());
                }
            }
            if let ast::Ast::ClassUnicode(class) = ast {
                re2_unicode_class(class)?;
            }
            if let ast::Ast::Assertion(a) = ast {
                use ast::AssertionKind::*;
                if !matches!(
                    a.kind,
                    StartLine | EndLine | StartText | EndText | WordBoundary | NotWordBoundary
                ) {
                    return Err("this word boundary assertion is not supported by RE2".into());
                }
            }
            Ok(())
        }
    }
    ast::visit(&parsed, Re2Only)?;
    let size = program_size(&parse_like_re2(pattern)?);
    if size > MAX_RE2_PROGRAM_SIZE {
        return Err(format!(
            "too complex: its RE2 program would have up to {size} instructions, more than \
             Envoy accepts ({MAX_RE2_PROGRAM_SIZE}); simplify it (e.g. fewer repetitions)"
        ));
    }
    Ok(())
}

/// The Unicode classes (`\p{..}`) RE2 knows: general categories and the
/// scripts of the Unicode version Envoy's RE2 carries (found by probing Envoy;
/// Rust's regex syntax also takes binary properties, aliases and newer
/// scripts, which Envoy refuses). Names are case-sensitive in RE2.
pub const RE2_UNICODE_CLASSES: &[&str] = &[
    "Any",
    "C",
    "Cc",
    "Cf",
    "Co",
    "Cs",
    "L",
    "Ll",
    "Lm",
    "Lo",
    "Lt",
    "Lu",
    "M",
    "Mc",
    "Me",
    "Mn",
    "N",
    "Nd",
    "Nl",
    "No",
    "P",
    "Pc",
    "Pd",
    "Pe",
    "Pf",
    "Pi",
    "Po",
    "Ps",
    "S",
    "Sc",
    "Sk",
    "Sm",
    "So",
    "Z",
    "Zl",
    "Zp",
    "Zs",
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Common",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cypro_Minoan",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kawi",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nag_Mundari",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Old_Uyghur",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangsa",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Toto",
    "Ugaritic",
    "Vai",
    "Vithkuqi",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
];

/// RE2 takes `\pL` and `\p{Name}` for the names above, nothing else.
fn re2_unicode_class(class: &regex_syntax::ast::ClassUnicode) -> Result<(), String> {
    use regex_syntax::ast::ClassUnicodeKind;
    let name = match &class.kind {
        ClassUnicodeKind::OneLetter(letter) => letter.to_string(),
        ClassUnicodeKind::Named(name) => name.clone(),
        ClassUnicodeKind::NamedValue { .. } => {
            return Err(
                "Unicode classes of the form \\p{name=value} are not supported by RE2".into(),
            );
        }
    };
    if RE2_UNICODE_CLASSES.contains(&name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "Unicode class {name:?} is not supported by RE2 (general categories such as L or Lu, \
             and script names such as Greek, are; names are case-sensitive)"
        ))
    }
}

/// Envoy rejects regexes whose compiled RE2 program is larger than this
/// (runtime key `re2.max_program_size.error_level`, default 100).
pub const MAX_RE2_PROGRAM_SIZE: usize = 100;
/// Match, fail and the unanchored-search loop RE2 adds to every program.
const RE2_FIXED_INSTRUCTIONS: usize = 4;

/// An upper bound on the instructions RE2 compiles `hir` into: every literal
/// byte, every UTF-8 byte range of a class, repetitions expanded. RE2 then
/// shrinks programs (required prefixes, shared suffixes, factored
/// alternations), so the real size is smaller; checked against Envoy itself
/// in the end-to-end tests.
fn re2_program_size_bound(hir: &regex_syntax::hir::Hir) -> usize {
    use regex_syntax::hir::{Class, HirKind};

    match hir.kind() {
        HirKind::Empty => 1,
        HirKind::Literal(literal) => literal.0.len(),
        HirKind::Class(Class::Unicode(class)) => class_cost(
            class
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end()))),
        ),
        // In byte mode a class reaching 0xFF is a negated class, which RE2
        // (matching UTF-8) reads as "every code point from there on".
        HirKind::Class(Class::Bytes(class)) => class_cost(class.iter().map(|r| {
            let end = if r.end() == 0xFF {
                MAX_CODE_POINT
            } else {
                u32::from(r.end())
            };
            (u32::from(r.start()), end)
        })),
        HirKind::Look(_) => 1,
        HirKind::Capture(capture) => re2_program_size_bound(&capture.sub).saturating_add(2),
        HirKind::Concat(subs) => subs
            .iter()
            .map(re2_program_size_bound)
            .fold(0, usize::saturating_add),
        HirKind::Alternation(subs) => subs
            .iter()
            .map(re2_program_size_bound)
            .fold(subs.len().saturating_sub(1), usize::saturating_add),
        HirKind::Repetition(repetition) => {
            let sub = re2_program_size_bound(&repetition.sub);
            let min = repetition.min as usize;
            match repetition.max {
                // x{n,m}: n copies, then m-n optional copies.
                Some(max) => sub
                    .saturating_mul(min)
                    .saturating_add((max as usize - min).saturating_mul(sub + 1)),
                // x{n,}: n copies (at least one) and a loop.
                None => sub.saturating_mul(min.max(1)).saturating_add(1),
            }
        }
    }
}

const MAX_CODE_POINT: u32 = 0x10_FFFF;
/// Code points above ASCII, surrogates excluded.
const NON_ASCII_SCALARS: u64 = (MAX_CODE_POINT as u64 + 1) - 0x80 - 0x800;
/// What RE2's special case for "any code point above ASCII" costs, with margin.
const ANY_NON_ASCII_COST: usize = 4;

/// One instruction per ASCII range; above ASCII either RE2's compact "any
/// non-ASCII" form or one instruction per node of the UTF-8 byte trie.
fn class_cost(ranges: impl Iterator<Item = (u32, u32)>) -> usize {
    let mut ascii = 0usize;
    let mut non_ascii = Vec::new();
    let mut covered: u64 = 0;
    for (start, end) in ranges {
        if start < 0x80 {
            ascii += 1;
        }
        if end >= 0x80 {
            let start = start.max(0x80);
            let surrogates = u64::from(end.min(0xDFFF))
                .saturating_sub(u64::from(start.max(0xD800)))
                + u64::from(start <= 0xDFFF && end >= 0xD800);
            covered += u64::from(end - start) + 1 - surrogates;
            non_ascii.push((start, end));
        }
    }
    let upper = if non_ascii.is_empty() {
        0
    } else if covered >= NON_ASCII_SCALARS {
        ANY_NON_ASCII_COST
    } else {
        utf8_trie_nodes(&non_ascii)
    };
    ascii + upper + 1
}

fn utf8_trie_nodes(ranges: &[(u32, u32)]) -> usize {
    let mut nodes = std::collections::HashSet::new();
    for &(start, end) in ranges {
        let (Some(start), Some(end)) = (char::from_u32(start), char::from_u32(end)) else {
            continue;
        };
        for sequence in regex_syntax::utf8::Utf8Sequences::new(start, end) {
            let path: Vec<(u8, u8)> = sequence
                .as_slice()
                .iter()
                .map(|r| (r.start, r.end))
                .collect();
            for depth in 1..=path.len() {
                nodes.insert(path[..depth].to_vec());
            }
        }
    }
    nodes.len()
}

/// Parses with RE2's meaning of \d, \w, \s (ASCII); falls back to Unicode
/// mode for constructs that need it (\pL), which only over-estimates.
fn parse_like_re2(pattern: &str) -> Result<regex_syntax::hir::Hir, String> {
    let ascii = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern);
    match ascii {
        Ok(hir) => Ok(hir),
        Err(_) => regex_syntax::Parser::new()
            .parse(pattern)
            .map_err(|e| format!("invalid regular expression: {e}")),
    }
}

fn program_size(hir: &regex_syntax::hir::Hir) -> usize {
    re2_program_size_bound(hir).saturating_add(RE2_FIXED_INSTRUCTIONS)
}

/// The bound validation enforces, exposed for calibration against Envoy.
pub fn re2_program_size_estimate(pattern: &str) -> Option<usize> {
    parse_like_re2(pattern).ok().map(|hir| program_size(&hir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: serde_json::Value) -> Route {
        serde_json::from_value(json).expect("valid json")
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "users", "users-v2", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn valid_route_has_no_errors() {
        let r = route(serde_json::json!({
            "name": "users",
            "match": {"path_prefix": "/users", "methods": ["GET"], "hosts": ["api.example.com"],
                      "headers": [{"name": "x-env", "exact": "canary"}]},
            "destination": {"weighted": [{"service": "a", "weight": 90}, {"service": "b", "weight": 10}]},
            "strip_prefix": true,
            "timeout_ms": 1500
        }));
        assert_eq!(r.validate(), vec![]);
        let names: Vec<_> = r.references().into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["a", "b"]);
    }

    #[test]
    fn route_errors_name_their_fields() {
        let r = route(serde_json::json!({
            "name": "Bad_Name",
            "match": {"path_prefix": "users", "methods": ["FETCH"]},
            "destination": {"weighted": [{"service": "a", "weight": 0}]},
        }));
        assert_eq!(
            fields(r.validate()),
            vec![
                "name",
                "match.path_prefix",
                "match.methods[0]",
                "destination.weighted"
            ]
        );
    }

    #[test]
    fn weighted_destinations_are_capped() {
        let weighted: Vec<_> = (0..=MAX_WEIGHTED_SERVICES)
            .map(|i| serde_json::json!({"service": format!("s{i}"), "weight": MAX_WEIGHT}))
            .collect();
        let r = route(serde_json::json!({
            "name": "r", "match": {"path_prefix": "/"}, "destination": {"weighted": weighted}
        }));
        assert_eq!(fields(r.validate()), vec!["destination.weighted"]);
    }

    #[test]
    fn exactly_one_path_matcher() {
        let r = route(serde_json::json!({
            "name": "r", "match": {"path_prefix": "/a", "path_exact": "/a"},
            "destination": {"service": "s"}
        }));
        assert_eq!(fields(r.validate()), vec!["match"]);
    }

    #[test]
    fn regexes_must_be_re2() {
        assert!(check_re2_regex("^/users/[0-9]+$").is_ok());
        assert!(check_re2_regex("/a(b").is_err());
        assert!(check_re2_regex("(?=x)").is_err());
        assert!(check_re2_regex(r"(a)\1").is_err());
        assert!(check_re2_regex("[a-z&&[^aeiou]]").is_err());
        assert!(check_re2_regex("").is_err());
        assert!(check_re2_regex(r"^/\p{Ogham}+[\p{Zl}\p{Zp}]$").is_ok());
        for unknown in [r"\p{ASCII_Hex_Digit}", r"[\p{greek}]", r"\p{Script=Greek}"] {
            let err = check_re2_regex(unknown).unwrap_err();
            assert!(err.contains("not supported by RE2"), "{unknown}: {err}");
        }
        // Envoy NACKs this one (RE2 program size 1503 > 100).
        let err =
            check_re2_regex("^/(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa){1,30}$")
                .unwrap_err();
        assert!(err.contains("too complex"), "{err}");
        assert!(check_re2_regex(r"^/api/v1/customers/\d+/invoices/[0-9a-f-]+/lines/\d+$").is_ok());
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

    #[test]
    fn rewrite_rules() {
        let r = route(serde_json::json!({
            "name": "r", "match": {"path_regex": "^/a$"}, "destination": {"service": "s"},
            "strip_prefix": true, "prefix_rewrite": "/b"
        }));
        assert_eq!(
            fields(r.validate()),
            vec!["strip_prefix", "prefix_rewrite", "prefix_rewrite"]
        );
    }
}
