//! Wire contracts shared by Gatehouse components.
//!
//! Application code never spells generated module paths: it uses the short
//! re-exports below. Our own `.proto` contracts (the snapshot stream consumed by
//! ext-authz and ratelimit-service) are compiled here as they are added.

pub use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
pub use envoy_types::pb::envoy::config::bootstrap::v3 as bootstrap;
pub use envoy_types::pb::envoy::config::cluster::v3 as cluster;
pub use envoy_types::pb::envoy::config::common::mutation_rules::v3 as mutation_rules;
pub use envoy_types::pb::envoy::config::core::v3 as core;
pub use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
pub use envoy_types::pb::envoy::config::listener::v3 as listener;
pub use envoy_types::pb::envoy::config::ratelimit::v3 as ratelimit_config;
pub use envoy_types::pb::envoy::config::rbac::v3 as rbac;
pub use envoy_types::pb::envoy::config::route::v3 as route;
pub use envoy_types::pb::envoy::config::trace::v3 as trace;
pub use envoy_types::pb::envoy::data::accesslog::v3 as accesslog_data;
pub use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file_access_log;
pub use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3 as cel_filter;
pub use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3 as grpc_access_log;
pub use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3 as otel_access_log;
pub use envoy_types::pb::envoy::extensions::clusters::common::dns::v3 as dns_common;
pub use envoy_types::pb::envoy::extensions::clusters::dns::v3 as dns_cluster;
pub use envoy_types::pb::envoy::extensions::common::ratelimit::v3 as ratelimit_common;
pub use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as fault_common;
pub use envoy_types::pb::envoy::extensions::filters::http::adaptive_concurrency::v3 as adaptive_concurrency;
pub use envoy_types::pb::envoy::extensions::filters::http::buffer::v3 as buffer;
pub use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
pub use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as ext_authz;
pub use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
pub use envoy_types::pb::envoy::extensions::filters::http::grpc_json_transcoder::v3 as grpc_json_transcoder;
pub use envoy_types::pb::envoy::extensions::filters::http::grpc_web::v3 as grpc_web;
pub use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3 as header_mutation;
pub use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as jwt_authn;
pub use envoy_types::pb::envoy::extensions::filters::http::rate_limit_quota::v3 as quota_filter;
pub use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3 as ratelimit_filter;
pub use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_filter;
pub use envoy_types::pb::envoy::extensions::filters::http::router::v3 as router;
pub use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3 as tls_inspector;
pub use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
pub use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3 as early_header_mutation;
pub use envoy_types::pb::envoy::extensions::matching::common_inputs::network::v3 as network_inputs;
pub use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3 as previous_hosts;
pub use envoy_types::pb::envoy::extensions::tracers::opentelemetry::samplers::v3 as otel_samplers;
pub use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
pub use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
pub use envoy_types::pb::envoy::service::accesslog::v3 as accesslog_service;
pub use envoy_types::pb::envoy::service::auth::v3 as auth_service;
pub use envoy_types::pb::envoy::service::discovery::v3 as discovery;
pub use envoy_types::pb::envoy::service::metrics::v3 as metrics_service;
pub use envoy_types::pb::envoy::service::rate_limit_quota::v3 as quota_service;
pub use envoy_types::pb::envoy::service::ratelimit::v3 as ratelimit_service;
pub use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
pub use envoy_types::pb::envoy::r#type::metadata::v3 as metadata_types;
pub use envoy_types::pb::envoy::r#type::v3 as http_types;
pub use envoy_types::pb::google::api::expr::v1alpha1 as cel;
pub use envoy_types::pb::google::protobuf;
pub use envoy_types::pb::google::rpc;
pub use envoy_types::pb::io::prometheus::client as prometheus;
pub use envoy_types::pb::opentelemetry::proto::common::v1 as otel_common;
pub use envoy_types::pb::xds::core::v3 as xds_core;
pub use envoy_types::pb::xds::r#type::matcher::v3 as xds_matcher;

/// xDS type URLs of the resources Gatehouse serves.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// ECDS: an HTTP filter's configuration, delivered apart from its listener.
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    /// SDS: TLS certificates and keys, delivered apart from listeners and clusters.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// Packs a message into a `google.protobuf.Any` with its canonical type URL.
pub fn to_any<M: prost::Message + prost::Name>(message: &M) -> protobuf::Any {
    protobuf::Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Gatehouse's own contract with ext-authz (`proto/gatehouse/auth/v1`).
pub mod auth {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/gatehouse.auth.v1.rs"));

    /// Name of the single `AuthConfig` resource.
    pub const RESOURCE_NAME: &str = "gatehouse_auth";
    pub const TYPE_URL: &str = "type.googleapis.com/gatehouse.auth.v1.AuthConfig";

    /// Keys of the per-route ext_authz context extensions that carry a
    /// route's policy from the control plane to ext-authz through Envoy.
    pub mod context {
        /// The route's name.
        pub const ROUTE: &str = "gatehouse.route";
        /// Accepted methods, comma-separated: `api_key`, `jwt`, `introspection`.
        pub const METHODS: &str = "gatehouse.methods";
        /// Required scopes, space-separated (all must be granted).
        pub const SCOPES: &str = "gatehouse.scopes";
        /// Required roles, space-separated (the consumer must hold all).
        pub const ROLES: &str = "gatehouse.roles";
        /// `1` to remove the credential from the upstream request.
        pub const STRIP_CREDENTIALS: &str = "gatehouse.strip_credentials";
        /// `1` on WebSocket routes: the credential may also come in the
        /// query (`access_token`) or `Sec-WebSocket-Protocol`, and is
        /// removed from the request upstream.
        pub const WEBSOCKET: &str = "gatehouse.websocket";
    }
}

/// Gatehouse's own contract with the broker (`proto/gatehouse/broker/v1`).
pub mod broker {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/gatehouse.broker.v1.rs"));

    /// Name of the single `BrokerConfig` resource.
    pub const RESOURCE_NAME: &str = "gatehouse_broker";
    pub const TYPE_URL: &str = "type.googleapis.com/gatehouse.broker.v1.BrokerConfig";

    /// A concrete topic name, as the control plane checks patterns and the
    /// broker checks requests: 1–128 of `a-z 0-9 . _ -`, starting with a
    /// letter or digit.
    pub fn is_topic_name(name: &str) -> bool {
        (1..=128).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
    }
}

/// Gatehouse's own contract with ratelimit-service (`proto/gatehouse/ratelimit/v1`).
pub mod ratelimit {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/gatehouse.ratelimit.v1.rs"));

    /// Name of the single `RateLimitConfig` resource.
    pub const RESOURCE_NAME: &str = "gatehouse_ratelimit";
    pub const TYPE_URL: &str = "type.googleapis.com/gatehouse.ratelimit.v1.RateLimitConfig";
    /// The rate limit domain Envoy sends.
    pub const DOMAIN: &str = "gatehouse";

    /// Descriptor entry keys shared by the control plane and the service.
    pub mod descriptor {
        /// First entry of a policy's descriptor; the value is the policy name.
        pub const POLICY: &str = "policy";
        /// First entry of a plan-quota descriptor.
        pub const PLAN_QUOTA: &str = "plan_quota";
        pub const PLAN: &str = "plan";
        pub const CONSUMER: &str = "consumer";
        /// A consumer whose plan the service looks up (routes whose JWTs
        /// Envoy verifies): counted as `plan` = that consumer's plan.
        pub const PLAN_OF_CONSUMER: &str = "plan_of_consumer";
        pub const CLIENT_IP: &str = "client_ip";
        pub const ROUTE: &str = "route";
        /// Prefix of a request header entry: `header.<name>`.
        pub const HEADER_PREFIX: &str = "header.";
    }
}
