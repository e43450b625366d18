//! The operator-facing resource model and its validation: the kinds, the
//! [`Resource`] trait every kind implements, and the declarative document.
//! Each kind has its own room: [`service`], [`route`], [`auth`] (who may call
//! them), [`ratelimit`], [`gateway`], [`websocket`]; who owns what in
//! [`ownership`]; shared checks in [`names`] and [`re2`]; the whole
//! configuration at one version in [`state`].
//!
//! Everything the admin API accepts passes [`Resource::validate`] first, so the
//! store only ever holds specs that translate into configuration Envoy accepts.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub mod actions;
pub mod auth;
pub mod balancing;
pub mod certificate;
pub mod cors;
pub mod gateway;
pub mod grpc_api;
pub mod names;
pub mod node_token;
pub mod ownership;
pub mod ratelimit;
pub mod re2;
pub mod resilience;
pub mod retry;
pub mod route;
pub mod service;
pub mod state;
pub mod topic;
pub mod upstream_tls;
pub mod version;
pub mod websocket;
pub use actions::{DirectResponse, Fault, FaultAbort, FaultDelay, Mirror, Redirect};
pub use auth::{Consumer, IntrospectionProvider, JwtIssuer, RouteAuth};
pub use balancing::{ConnectionPool, Dns, DnsFamily, HashCookie, HashOn, LbPolicy, LoadBalancing};
pub use certificate::Certificate;
pub use cors::{Cors, HeaderRule, HeaderRules};
pub use gateway::{Gateway, GatewayProtocol};
pub use grpc_api::GrpcApi;
pub use names::{NAME_PATTERN, check_name, is_dns_label};
pub(crate) use names::{is_dns_name, is_header_name};
pub use ownership::{Labels, Owner};
pub use ratelimit::{Plan, RateLimitPolicy};
pub use re2::{
    MAX_RE2_PROGRAM_SIZE, RE2_UNICODE_CLASSES, check_re2_regex, re2_program_size_estimate,
};
pub use resilience::{
    CircuitBreakers, FailurePercentage, HealthCheck, HealthCheckKind, OutlierDetection,
    RetryBudget, Thresholds,
};
pub use retry::{Backoff, Retries, RoutePriority};
pub use route::{
    Destination, HeaderMatch, MAX_WEIGHT, MAX_WEIGHTED_SERVICES, PathMatch, QueryMatch, Route,
    RouteMatch, WeightedService,
};
pub use service::{Endpoint, MAX_ENDPOINT_WEIGHT, MAX_TIMEOUT_MS, Protocol, Service};
pub use state::ConfigState;
pub use topic::{SlowConsumer, Topic, TopicAccess};
pub use upstream_tls::UpstreamTls;
pub use version::ApiVersion;
pub use websocket::WebSocket;

/// The kinds of resource the admin API manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// Ordered by dependency: what a kind refers to comes before it.
pub enum Kind {
    /// Teams: what resources belong to.
    Owner,
    Service,
    Certificate,
    Gateway,
    /// gRPC APIs routes transcode to (descriptor sets).
    GrpcApi,
    Consumer,
    JwtIssuer,
    IntrospectionProvider,
    Plan,
    Route,
    RateLimitPolicy,
    /// Broker topics.
    Topic,
    /// API keys: managed under their consumer, never in a config document.
    ApiKey,
}

impl Kind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Owner => "owner",
            Kind::Service => "service",
            Kind::Certificate => "certificate",
            Kind::Gateway => "gateway",
            Kind::GrpcApi => "grpc_api",
            Kind::Consumer => "consumer",
            Kind::JwtIssuer => "jwt_issuer",
            Kind::IntrospectionProvider => "introspection_provider",
            Kind::Plan => "plan",
            Kind::Route => "route",
            Kind::RateLimitPolicy => "rate_limit_policy",
            Kind::Topic => "topic",
            Kind::ApiKey => "api_key",
        }
    }

    /// The collection name in the admin API path (`/v1/{plural}`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Owner => "owners",
            Kind::Service => "services",
            Kind::Certificate => "certificates",
            Kind::Gateway => "gateways",
            Kind::GrpcApi => "grpc-apis",
            Kind::Consumer => "consumers",
            Kind::JwtIssuer => "jwt-issuers",
            Kind::IntrospectionProvider => "introspection-providers",
            Kind::Plan => "plans",
            Kind::Route => "routes",
            Kind::RateLimitPolicy => "rate-limit-policies",
            Kind::Topic => "topics",
            Kind::ApiKey => "keys",
        }
    }

    pub fn parse(stored: &str) -> Option<Kind> {
        match stored {
            "owner" => Some(Kind::Owner),
            "service" => Some(Kind::Service),
            "certificate" => Some(Kind::Certificate),
            "gateway" => Some(Kind::Gateway),
            "grpc_api" => Some(Kind::GrpcApi),
            "consumer" => Some(Kind::Consumer),
            "jwt_issuer" => Some(Kind::JwtIssuer),
            "introspection_provider" => Some(Kind::IntrospectionProvider),
            "plan" => Some(Kind::Plan),
            "route" => Some(Kind::Route),
            "rate_limit_policy" => Some(Kind::RateLimitPolicy),
            "topic" => Some(Kind::Topic),
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

    /// The team it belongs to; `None`: the operators (`ownership.rs`).
    fn owner(&self) -> Option<&str> {
        None
    }

    /// Kinds without an owner ignore it.
    fn set_owner(&mut self, _owner: Option<String>) {}

    fn labels(&self) -> &Labels {
        &ownership::NO_LABELS
    }

    /// Whether other owners' resources may refer to it.
    fn shared(&self) -> bool {
        false
    }

    /// Private keys uploaded with the resource, by the hex SHA-256 of their
    /// public key: the store keeps them encrypted, never in the spec.
    fn private_keys(&self) -> Vec<(String, &crate::secret::Secret)> {
        Vec::new()
    }

    /// The public key (hex SHA-256 of its SubjectPublicKeyInfo) whose
    /// private key the store must hold for this resource.
    fn needs_private_key(&self) -> Option<String> {
        None
    }

    /// [`Resource::validate`] plus the checks common to every kind.
    fn check(&self) -> Vec<FieldError> {
        let mut errors = self.validate();
        errors.extend(ownership::validate_meta(self));
        errors
    }

    /// [`Resource::references`] plus its owner, which must exist.
    fn all_references(&self) -> Vec<Reference> {
        let mut references = self.references();
        if let Some(owner) = self.owner() {
            references.push(Reference {
                field: "owner".into(),
                kind: Kind::Owner,
                name: owner.to_owned(),
            });
        }
        references
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
    /// The team every resource listed belongs to (`ownership.rs`): applied
    /// with it, the document sees, changes and prunes only that team's
    /// resources. A resource may repeat it, not name another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub owner: Option<String>,
    /// Teams (operators only; not in a document with `owner`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Owner>,
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
    /// The broker's topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<Topic>,
    /// gRPC APIs (descriptor sets) routes transcode to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_apis: Vec<GrpcApi>,
}

impl ConfigDocument {
    /// Validates every resource, with fields prefixed by their place in the
    /// document (`routes[2].match.path_prefix`), and rejects repeated names.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(owner) = &self.owner {
            check_name(owner, "owner", &mut errors);
            if !self.owners.is_empty() {
                errors.push(FieldError::new(
                    "owners",
                    "owners are the operators' to manage: not in a document that belongs to one",
                ));
            }
        }
        validate_list("owners", &self.owners, &mut errors);
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
        validate_list("topics", &self.topics, &mut errors);
        validate_list("grpc_apis", &self.grpc_apis, &mut errors);
        errors
    }

    /// Every resource listed, given the document's `owner` where it names
    /// none; one naming another owner is an error (a document has one owner).
    pub fn assign_owner(&mut self) -> Vec<FieldError> {
        let Some(owner) = self.owner.clone() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        assign("services", &mut self.services, &owner, &mut errors);
        assign("routes", &mut self.routes, &owner, &mut errors);
        assign("consumers", &mut self.consumers, &owner, &mut errors);
        assign("jwt_issuers", &mut self.jwt_issuers, &owner, &mut errors);
        assign(
            "introspection_providers",
            &mut self.introspection_providers,
            &owner,
            &mut errors,
        );
        assign("plans", &mut self.plans, &owner, &mut errors);
        assign(
            "rate_limit_policies",
            &mut self.rate_limit_policies,
            &owner,
            &mut errors,
        );
        assign("certificates", &mut self.certificates, &owner, &mut errors);
        assign("gateways", &mut self.gateways, &owner, &mut errors);
        assign("topics", &mut self.topics, &owner, &mut errors);
        assign("grpc_apis", &mut self.grpc_apis, &owner, &mut errors);
        errors
    }
}

impl ConfigDocument {
    /// Only `owner`'s resources, as that owner's document: `owner` at the
    /// top, not repeated on each resource (what `apply` takes back).
    pub fn of_owner(self, owner: &str) -> ConfigDocument {
        ConfigDocument {
            owner: Some(owner.to_owned()),
            owners: Vec::new(),
            services: only(self.services, owner),
            routes: only(self.routes, owner),
            consumers: only(self.consumers, owner),
            jwt_issuers: only(self.jwt_issuers, owner),
            introspection_providers: only(self.introspection_providers, owner),
            plans: only(self.plans, owner),
            rate_limit_policies: only(self.rate_limit_policies, owner),
            certificates: only(self.certificates, owner),
            gateways: only(self.gateways, owner),
            topics: only(self.topics, owner),
            grpc_apis: only(self.grpc_apis, owner),
        }
    }
}

fn only<R: Resource>(resources: Vec<R>, owner: &str) -> Vec<R> {
    resources
        .into_iter()
        .filter(|r| r.owner() == Some(owner))
        .map(|mut r| {
            r.set_owner(None);
            r
        })
        .collect()
}

fn assign<R: Resource>(list: &str, resources: &mut [R], owner: &str, errors: &mut Vec<FieldError>) {
    for (i, resource) in resources.iter_mut().enumerate() {
        match resource.owner() {
            None => resource.set_owner(Some(owner.to_owned())),
            Some(own) if own == owner => {}
            Some(other) => errors.push(FieldError::new(
                format!("{list}[{i}].owner"),
                format!("the document belongs to {owner:?}; a document has one owner, not also {other:?}"),
            )),
        }
    }
}

fn validate_list<R: Resource>(list: &str, resources: &[R], errors: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, resource) in resources.iter().enumerate() {
        for e in resource.check() {
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
