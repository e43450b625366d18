//! Model → Envoy translation: pure functions from the stored configuration to
//! Envoy's Cluster, ClusterLoadAssignment, Listener and RouteConfiguration.
//!
//! - A service becomes one cluster named after it. IP endpoints are delivered
//!   by EDS (so endpoint changes touch nothing else); a service with any DNS
//!   name becomes a STRICT_DNS cluster with its endpoints inline.
//! - Routes become one RouteConfiguration with a virtual host per distinct
//!   host name (plus `*`); routes without hosts apply on every virtual host.
//!   Within a virtual host the most specific route comes first: exact paths,
//!   then regexes, then longer prefixes, then routes with more conditions.
//! - Authentication (ext_authz filters, route policies, the state streamed
//!   to ext-authz) is translated in [`auth`], rate limits in [`ratelimit`],
//!   gateways (more listeners, TLS) in [`gateway`].
//! - Services become clusters ([`cluster`]), routes one route configuration
//!   ([`route`]), listeners share one connection manager ([`listener`]).
//!
//! Translation is pure: no store, no clock, no I/O. The time (which API keys
//! have expired) is an argument.

use std::{collections::BTreeSet, net::SocketAddr};

use gatehouse_proto::{core, protobuf, to_any};

pub mod access_log;
pub mod actions;
pub mod auth;
pub mod balancing;
pub mod broker;
pub mod certificate;
pub mod cluster;
pub mod cors;
pub mod gateway;
pub mod grpc;
pub mod jwt;
pub mod listener;
pub mod quota;
pub mod ratelimit;
pub mod resilience;
pub mod retry;
pub mod route;
pub mod shedding;
pub mod tracing;
pub mod upstream_tls;
pub mod usage_log;
pub mod version;
pub mod websocket;
pub use auth::ExtAuthzSettings;
pub use cluster::{cluster, grpc_cluster, load_assignment, uses_eds};
use gatehouse_proto::ratelimit as ratelimit_proto;
pub use listener::{
    HTTP_LISTENER, http_connection_manager, http_listener, listener_for, tls_socket,
};
pub use ratelimit::RateLimitSettings;
pub use route::{HTTP_ROUTES, RouteContext, envoy_route, route_configuration};

use crate::{
    model::{ConfigState, Route},
    xds::snapshot::{ConsistencyError, Snapshot, SnapshotParts, XdsResource},
};
use gatehouse_proto::auth as auth_proto;

/// Why a configuration cannot be served. Nothing inconsistent is ever served.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error(
        "route {0:?} verifies JWTs in Envoy (verify_in: envoy), but no issuer Envoy can use \
         (one with jwks or jwks_uri) is configured"
    )]
    NoEnvoyIssuer(String),
    #[error(
        "route {route:?} is under two quota policies ({first:?} and {second:?}): Envoy's quota \
         filter puts a request in one bucket; use enforcement exact for one of them"
    )]
    TwoQuotaPolicies {
        route: String,
        first: String,
        second: String,
    },
    #[error(
        "consumers {first:?} and {second:?} both claim the client certificate {identity}: \
         one certificate identifies one consumer"
    )]
    CertificateIdentityTwice {
        identity: String,
        first: String,
        second: String,
    },
    #[error("listeners {first:?} and {second:?} both bind {address}")]
    AddressInUse {
        first: String,
        second: String,
        address: String,
    },
    #[error(
        "certificate {0:?}: its private key is not in the store (upload private_key_pem again) \
         or cannot be decrypted with this control plane's key-encryption key"
    )]
    MissingPrivateKey(String),
    #[error(transparent)]
    Inconsistent(#[from] ConsistencyError),
}

/// How the proxy listens; fixed per control plane, not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Where Envoy writes its access log (one line per request), if anywhere.
    pub access_log_path: Option<String>,
    pub access_log_format: access_log::AccessLogFormat,
    /// Envoy streams its usage log to ext-authz (`usage_log.rs`).
    pub usage_log: bool,
    /// Envoy exports its access log as OTLP log records to the tracing
    /// collector too (only with one).
    pub access_log_otlp: bool,
    pub ext_authz: ExtAuthzSettings,
    pub ratelimit: RateLimitSettings,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted
    /// (0: the client is the peer address; a spoofed header changes nothing).
    pub xff_trusted_hops: u32,
    /// Load shedding of the routes that set `load_shedding`.
    pub shedding: shedding::SheddingSettings,
    /// Tracing in Envoy; off without a collector.
    pub tracing: Option<tracing::TracingSettings>,
    /// The fleets (node clusters) that open the default listener; empty:
    /// every Envoy.
    pub default_fleets: Vec<String>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            access_log_path: None,
            access_log_format: access_log::AccessLogFormat::Json,
            usage_log: false,
            access_log_otlp: false,
            ext_authz: ExtAuthzSettings::default(),
            ratelimit: RateLimitSettings::default(),
            xff_trusted_hops: 0,
            shedding: shedding::SheddingSettings::default(),
            tracing: None,
            default_fleets: Vec::new(),
        }
    }
}
/// Translates a whole configuration, as of `now_ms` (which API keys have
/// expired), into a checked snapshot.
pub fn snapshot(
    state: &ConfigState,
    proxy: &ProxySettings,
    now_ms: i64,
) -> Result<Snapshot, TranslateError> {
    let mut parts = SnapshotParts::default();
    parts.clusters.push(XdsResource::new(
        auth::EXT_AUTHZ_CLUSTER,
        to_any(&auth::ext_authz_cluster(&proxy.ext_authz)),
        Vec::new(),
    ));
    parts.clusters.push(XdsResource::new(
        ratelimit::RATELIMIT_CLUSTER,
        to_any(&ratelimit::ratelimit_cluster(&proxy.ratelimit)),
        Vec::new(),
    ));
    if let Some(t) = &proxy.tracing {
        parts.clusters.push(XdsResource::new(
            tracing::OTLP_CLUSTER,
            to_any(&tracing::otlp_cluster(t)),
            Vec::new(),
        ));
    }
    for service in state.services.values() {
        let eds = uses_eds(service);
        parts.clusters.push(XdsResource::new(
            &service.name,
            to_any(&{
                let mut c = cluster(service);
                upstream_tls::apply(service, state, &mut c);
                c
            }),
            Vec::new(),
        ));
        if eds {
            parts.eds_clusters.insert(service.name.clone());
            parts.endpoints.push(XdsResource::new(
                &service.name,
                to_any(&load_assignment(service)),
                Vec::new(),
            ));
        }
    }
    jwt::check_issuers(state)?;
    auth::check_certificate_identities(state)?;
    let mut listener_clusters = vec![
        auth::EXT_AUTHZ_CLUSTER.to_owned(),
        ratelimit::RATELIMIT_CLUSTER.to_owned(),
    ];
    if proxy.tracing.is_some() {
        listener_clusters.push(tracing::OTLP_CLUSTER.to_owned());
    }
    let mut jwks_clusters = Vec::new();
    for jwks in jwt::jwks_clusters(state) {
        jwks_clusters.push(jwks.name.clone());
        parts
            .clusters
            .push(XdsResource::new(&jwks.name, to_any(&jwks), Vec::new()));
    }
    // The jwt_authn configuration travels apart from the listeners (ECDS),
    // so issuer and key changes do not drain their connections.
    parts.extension_configs.push(XdsResource::new(
        jwt::JWT_FILTER,
        to_any(&jwt::jwt_filter_config(state)),
        jwks_clusters,
    ));
    // So does the quota filter's: its buckets change with quota policies.
    for r in state.routes.values() {
        quota::route_policy(r, state)?;
    }
    parts.extension_configs.push(XdsResource::new(
        quota::QUOTA_FILTER,
        to_any(&quota::quota_filter_config(state)),
        vec![ratelimit::RATELIMIT_CLUSTER.to_owned()],
    ));
    parts.listeners.push(
        XdsResource::new(
            HTTP_LISTENER,
            to_any(&http_listener(proxy)),
            listener_clusters.clone(),
        )
        .for_fleets(proxy.default_fleets.clone()),
    );
    gateway::check_addresses(state, proxy)?;
    (parts.secrets, parts.certificates) = certificate::secrets(state)?;
    parts.node_tokens = state.node_tokens.clone();
    let context = RouteContext {
        spoofable: auth::spoofable_headers(state),
        state,
    };
    let mut route_config = |name: &str, routes: Vec<&Route>, fleets: Vec<String>| {
        let referenced: BTreeSet<String> = routes
            .iter()
            .flat_map(|r| r.destination.services())
            .map(str::to_owned)
            .collect();
        let mut config = route_configuration(&routes, &context);
        config.name = name.to_owned();
        parts.routes.push(
            XdsResource::new(name, to_any(&config), referenced.into_iter().collect())
                .for_fleets(fleets),
        );
    };
    // Routes without gateways go everywhere; a gateway some route names
    // gets its own route configuration with those routes added.
    let everywhere: Vec<&Route> = state
        .routes
        .values()
        .filter(|r| r.gateways.is_empty())
        .collect();
    route_config(HTTP_ROUTES, everywhere.clone(), Vec::new());
    let mut gateway_listeners = Vec::new();
    for gateway in state.gateways.values() {
        let fleets: Vec<String> = gateway.fleet.iter().cloned().collect();
        let named: Vec<&Route> = state
            .routes
            .values()
            .filter(|r| r.gateways.contains(&gateway.name))
            .collect();
        let rds = if named.is_empty() {
            HTTP_ROUTES.to_owned()
        } else {
            let rds = gateway::route_config_name(gateway);
            route_config(
                &rds,
                everywhere.iter().copied().chain(named).collect(),
                fleets.clone(),
            );
            rds
        };
        let listener = gateway::listener(gateway, proxy, &rds);
        gateway_listeners.push(
            XdsResource::new(
                listener.name.clone(),
                to_any(&listener),
                listener_clusters.clone(),
            )
            .for_fleets(fleets),
        );
    }
    parts.listeners.extend(gateway_listeners);
    parts.ratelimit.push(XdsResource::new(
        ratelimit_proto::RESOURCE_NAME,
        packed(
            ratelimit_proto::TYPE_URL,
            &ratelimit::ratelimit_config(state),
        ),
        Vec::new(),
    ));
    parts.broker.push(XdsResource::new(
        gatehouse_proto::broker::RESOURCE_NAME,
        packed(
            gatehouse_proto::broker::TYPE_URL,
            &broker::broker_config(state),
        ),
        Vec::new(),
    ));
    parts.auth.push(XdsResource::new(
        auth_proto::RESOURCE_NAME,
        packed(auth_proto::TYPE_URL, &auth::auth_config(state, now_ms)),
        Vec::new(),
    ));
    Ok(Snapshot::new(state.version, parts)?)
}

/// One of our own services' resources packed for ADS under its type URL.
fn packed(type_url: &str, message: &impl prost::Message) -> protobuf::Any {
    protobuf::Any {
        type_url: type_url.into(),
        value: message.encode_to_vec(),
    }
}

/// A header set to `value`, replacing any the message already has.
pub(crate) fn set_header(key: &str, value: String) -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: key.into(),
            value,
            ..Default::default()
        }),
        append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A file Envoy reads on its own host.
pub(crate) fn file_source(path: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}

/// `content-type: application/json` on a response Gatehouse writes itself.
pub(crate) fn json_content_type() -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: "content-type".into(),
            value: "application/json".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Switches on, for one route, an HTTP filter that is off by default and
/// has nothing to configure there: Envoy reads a `FilterConfig` whose
/// `config` is present but empty as "enabled here" (an absent one is
/// refused). Filters with a per-route configuration are switched on by it.
pub(crate) fn enable_filter(envoy: &mut gatehouse_proto::route::Route, filter: &str) {
    let enabled = gatehouse_proto::route::FilterConfig {
        config: Some(protobuf::Any::default()),
        ..Default::default()
    };
    envoy
        .typed_per_filter_config
        .insert(filter.into(), to_any(&enabled));
}

pub(crate) fn duration_ms(ms: u32) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::from(ms / 1000),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Local replies whose response code details start with `prefix` (the
/// filter that refused says why there).
pub(crate) fn details_start_with(prefix: &str) -> gatehouse_proto::accesslog::AccessLogFilter {
    cel(format!("response.code_details.startsWith('{prefix}')"))
}

/// Local replies Envoy marked with its response `flag` (`RL`, `UO`, …).
pub(crate) fn response_flag(flag: &str) -> gatehouse_proto::accesslog::AccessLogFilter {
    use gatehouse_proto::accesslog::{self, access_log_filter::FilterSpecifier};
    accesslog::AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(
            accesslog::ResponseFlagFilter {
                flags: vec![flag.into()],
            },
        )),
    }
}

/// `{"error": code, "message": message}`: the shape of ext-authz's refusals,
/// which every error Envoy answers by itself takes.
pub(crate) fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": code, "message": message}).to_string()
}

/// A local-reply mapper giving the local replies `filter` selects the JSON
/// body `{"error": code, "message": message}` (the shape of ext-authz's
/// refusals), keeping their status and headers.
pub(crate) fn json_reply(
    filter: gatehouse_proto::accesslog::AccessLogFilter,
    code: &str,
    message: &str,
) -> gatehouse_proto::hcm::ResponseMapper {
    use core::{data_source::Specifier, substitution_format_string::Format};
    gatehouse_proto::hcm::ResponseMapper {
        filter: Some(filter),
        body_format_override: Some(core::SubstitutionFormatString {
            format: Some(Format::TextFormatSource(core::DataSource {
                specifier: Some(Specifier::InlineString(error_body(code, message))),
                ..Default::default()
            })),
            content_type: "application/json".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Requests (or local replies) for which the CEL `expression` holds.
pub(crate) fn cel(expression: String) -> gatehouse_proto::accesslog::AccessLogFilter {
    use accesslog::{access_log_filter::FilterSpecifier, extension_filter::ConfigType};
    use gatehouse_proto::{accesslog, cel_filter, to_any};
    let expression = cel_filter::ExpressionFilter {
        expression,
        ..Default::default()
    };
    accesslog::AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ExtensionFilter(
            accesslog::ExtensionFilter {
                name: "envoy.access_loggers.extension_filters.cel".into(),
                config_type: Some(ConfigType::TypedConfig(to_any(&expression))),
            },
        )),
    }
}

/// A gRPC service Envoy reaches through `cluster`, each call bounded by
/// `timeout_ms` when given.
pub(crate) fn grpc_service(cluster: &str, timeout_ms: Option<u32>) -> core::GrpcService {
    core::GrpcService {
        timeout: timeout_ms.map(duration_ms),
        target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
            core::grpc_service::EnvoyGrpc {
                cluster_name: cluster.into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

pub(crate) fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(crate) fn socket_address(host: &str, port: u32) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{model::Service, xds::snapshot::ResourceType};

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("service")
    }

    fn route(json: serde_json::Value) -> Route {
        serde_json::from_value(json).expect("route")
    }

    #[test]
    fn snapshot_has_every_resource_and_route_dependencies() {
        let mut state = ConfigState {
            version: 7,
            ..ConfigState::default()
        };
        for s in [
            service(json!({"name": "ip", "endpoints": [{"host": "10.0.0.1", "port": 80}]})),
            service(json!({"name": "dns", "endpoints": [{"host": "svc.local", "port": 80}]})),
        ] {
            state.services.insert(s.name.clone(), s);
        }
        let r = route(json!({"name": "r", "match": {"path_prefix": "/"},
                             "destination": {"weighted": [{"service": "ip", "weight": 1}, {"service": "dns", "weight": 1}]}}));
        state.routes.insert(r.name.clone(), r);
        let snapshot = snapshot(&state, &ProxySettings::default(), 0).expect("consistent");
        assert_eq!(snapshot.version, 7);
        let names = |t| snapshot.resources(t).keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(ResourceType::Cluster),
            [
                "dns",
                auth::EXT_AUTHZ_CLUSTER,
                ratelimit::RATELIMIT_CLUSTER,
                "ip"
            ]
        );
        assert_eq!(names(ResourceType::Auth), [auth_proto::RESOURCE_NAME]);
        assert_eq!(
            snapshot.resources(ResourceType::Listener)[HTTP_LISTENER].clusters,
            [auth::EXT_AUTHZ_CLUSTER, ratelimit::RATELIMIT_CLUSTER],
            "the listener's ext_authz and ratelimit filters need their clusters first"
        );
        assert_eq!(
            names(ResourceType::Endpoint),
            ["ip"],
            "only IP services use EDS"
        );
        assert_eq!(names(ResourceType::Listener), [HTTP_LISTENER]);
        assert_eq!(
            names(ResourceType::ExtensionConfig),
            [jwt::JWT_FILTER, quota::QUOTA_FILTER],
            "jwt_authn's and the quota filter's configurations travel over ECDS, apart from the listener"
        );
        assert_eq!(
            snapshot.resources(ResourceType::Route)[HTTP_ROUTES].clusters,
            ["dns", "ip"]
        );
        assert!(snapshot.is_eds_cluster("ip") && !snapshot.is_eds_cluster("dns"));
    }

    #[test]
    fn an_empty_configuration_still_serves_the_listener() {
        let snapshot =
            snapshot(&ConfigState::default(), &ProxySettings::default(), 0).expect("consistent");
        assert_eq!(snapshot.resources(ResourceType::Listener).len(), 1);
        assert_eq!(snapshot.resources(ResourceType::Route).len(), 1);
        let clusters = snapshot.resources(ResourceType::Cluster);
        assert_eq!(
            clusters.keys().collect::<Vec<_>>(),
            [auth::EXT_AUTHZ_CLUSTER, ratelimit::RATELIMIT_CLUSTER],
            "only our services' clusters, so enabling auth or limits never changes the listener"
        );
        assert_eq!(snapshot.resources(ResourceType::Auth).len(), 1);
    }
}
