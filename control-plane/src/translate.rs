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

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use gatehouse_proto::{
    accesslog, cluster, core, endpoint, file_access_log, hcm, listener, matcher, protobuf, route,
    router, to_any, upstream_http,
};

pub mod auth;
pub mod gateway;
pub mod jwt;
pub mod ratelimit;
pub use auth::ExtAuthzSettings;
use gatehouse_proto::ratelimit as ratelimit_proto;
pub use ratelimit::RateLimitSettings;

use crate::{
    model::ConfigState,
    model::{HeaderMatch, PathMatch, Protocol, Route, Service},
    xds::snapshot::{ConsistencyError, Snapshot, SnapshotParts, XdsResource},
};
use gatehouse_proto::auth as auth_proto;

/// Name of the listener and of the route configuration it loads over RDS.
pub const HTTP_LISTENER: &str = "gatehouse_http";
pub const HTTP_ROUTES: &str = "gatehouse_http";

/// How the proxy listens; fixed per control plane, not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Where Envoy writes its access log (one line per request), if anywhere.
    pub access_log_path: Option<String>,
    pub ext_authz: ExtAuthzSettings,
    pub ratelimit: RateLimitSettings,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted
    /// (0: the client is the peer address; a spoofed header changes nothing).
    pub xff_trusted_hops: u32,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            access_log_path: None,
            ext_authz: ExtAuthzSettings::default(),
            ratelimit: RateLimitSettings::default(),
            xff_trusted_hops: 0,
        }
    }
}

/// Translates a whole configuration into a checked snapshot.
pub fn snapshot(state: &ConfigState, proxy: &ProxySettings) -> Result<Snapshot, ConsistencyError> {
    snapshot_at(state, proxy, now_ms())
}

/// [`snapshot`] as of a given time (which keys have expired).
pub fn snapshot_at(
    state: &ConfigState,
    proxy: &ProxySettings,
    now_ms: i64,
) -> Result<Snapshot, ConsistencyError> {
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
    for service in state.services.values() {
        let eds = uses_eds(service);
        parts.clusters.push(XdsResource::new(
            &service.name,
            to_any(&cluster(service)),
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
    let listener_clusters = vec![
        auth::EXT_AUTHZ_CLUSTER.to_owned(),
        ratelimit::RATELIMIT_CLUSTER.to_owned(),
    ];
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
    parts.listeners.push(XdsResource::new(
        HTTP_LISTENER,
        to_any(&http_listener(proxy)),
        listener_clusters.clone(),
    ));
    gateway::check_addresses(state, proxy)?;
    for gateway in state.gateways.values() {
        let certificate = gateway
            .certificate
            .as_ref()
            .and_then(|name| state.certificates.get(name));
        let listener = gateway::listener(gateway, certificate, proxy);
        parts.listeners.push(XdsResource::new(
            listener.name.clone(),
            to_any(&listener),
            listener_clusters.clone(),
        ));
    }
    let routes: Vec<&Route> = state.routes.values().collect();
    let referenced: BTreeSet<String> = routes
        .iter()
        .flat_map(|r| r.destination.services())
        .map(str::to_owned)
        .collect();
    parts.routes.push(XdsResource::new(
        HTTP_ROUTES,
        to_any(&route_configuration(
            &routes,
            &RouteContext {
                spoofable: auth::spoofable_headers(state),
                state,
            },
        )),
        referenced.into_iter().collect(),
    ));
    parts.ratelimit.push(XdsResource::new(
        ratelimit_proto::RESOURCE_NAME,
        ratelimit::ratelimit_config_any(&ratelimit::ratelimit_config(state)),
        Vec::new(),
    ));
    parts.auth.push(XdsResource::new(
        auth_proto::RESOURCE_NAME,
        auth::auth_config_any(&auth::auth_config(state, now_ms)),
        Vec::new(),
    ));
    Snapshot::new(state.version, parts)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A service with only IP endpoints (or none) gets its endpoints over EDS.
pub fn uses_eds(service: &Service) -> bool {
    service.endpoints.iter().all(|e| e.ip().is_some())
}

fn duration_ms(ms: u32) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::from(ms / 1000),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub fn cluster(service: &Service) -> cluster::Cluster {
    use cluster::cluster::{
        ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig,
    };

    let mut c = cluster::Cluster {
        name: service.name.clone(),
        connect_timeout: Some(duration_ms(service.connect_timeout_ms)),
        ..Default::default()
    };
    if uses_eds(service) {
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        c.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
    } else {
        c.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
        c.load_assignment = Some(load_assignment(service));
    }
    if matches!(service.protocol, Protocol::Http2 | Protocol::Grpc) {
        speak_http2_upstream(&mut c);
    }
    c
}

/// Makes the cluster speak HTTP/2 to its endpoints (gRPC, h2 services).
fn speak_http2_upstream(c: &mut cluster::Cluster) {
    use upstream_http::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    let options = upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    core::Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        to_any(&options),
    );
}

/// A static HTTP/2 cluster for one of our gRPC services.
pub fn grpc_cluster(name: &str, address: SocketAddr) -> cluster::Cluster {
    use cluster::cluster::{ClusterDiscoveryType, DiscoveryType};

    let mut c = cluster::Cluster {
        name: name.into(),
        connect_timeout: Some(duration_ms(1_000)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(socket_address(
                                &address.ip().to_string(),
                                u32::from(address.port()),
                            )),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    speak_http2_upstream(&mut c);
    c
}

pub fn load_assignment(service: &Service) -> endpoint::ClusterLoadAssignment {
    let lb_endpoints = service
        .endpoints
        .iter()
        .map(|e| endpoint::LbEndpoint {
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                endpoint::Endpoint {
                    address: Some(socket_address(&e.host, e.port)),
                    ..Default::default()
                },
            )),
            load_balancing_weight: e.weight.map(|value| protobuf::UInt32Value { value }),
            ..Default::default()
        })
        .collect();
    endpoint::ClusterLoadAssignment {
        cluster_name: service.name.clone(),
        endpoints: vec![endpoint::LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn socket_address(host: &str, port: u32) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub fn http_listener(proxy: &ProxySettings) -> listener::Listener {
    listener_for(
        HTTP_LISTENER,
        &proxy.listen.ip().to_string(),
        u32::from(proxy.listen.port()),
        http_connection_manager(proxy, "gatehouse"),
        None,
    )
}

/// The HTTP connection manager every listener runs: the default one and
/// each gateway's, all on the same route configuration.
pub fn http_connection_manager(
    proxy: &ProxySettings,
    stat_prefix: &str,
) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: HTTP_ROUTES.into(),
            },
        )),
        http_filters: [jwt::jwt_filter()]
            .into_iter()
            .chain(jwt::rbac_filters())
            .chain(auth::ext_authz_filters(&proxy.ext_authz))
            .chain([ratelimit::ratelimit_filter(&proxy.ratelimit)])
            .chain([hcm::HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
                    &router::Router::default(),
                ))),
                ..Default::default()
            }])
            .collect(),
        // An edge proxy: the peer address is the client; paths are normalised
        // before matching so `/a/../b` and `//b` cannot dodge a route.
        use_remote_address: Some(protobuf::BoolValue { value: true }),
        xff_num_trusted_hops: proxy.xff_trusted_hops,
        normalize_path: Some(protobuf::BoolValue { value: true }),
        merge_slashes: true,
        local_reply_config: Some(jwt::local_replies()),
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        access_log: proxy
            .access_log_path
            .iter()
            .map(|p| access_log(p))
            .collect(),
        ..Default::default()
    }
}

/// Envoy's TLS transport socket with `context` (a Downstream- or UpstreamTlsContext).
pub fn tls_socket(context: protobuf::Any) -> core::TransportSocket {
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(context)),
    }
}

/// A listener with one filter chain running `manager`, over TLS when given.
pub fn listener_for(
    name: &str,
    address: &str,
    port: u32,
    manager: hcm::HttpConnectionManager,
    transport_socket: Option<core::TransportSocket>,
) -> listener::Listener {
    listener::Listener {
        name: name.into(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(to_any(&manager))),
            }],
            transport_socket,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One line per request; the response flags say why Envoy failed a request.
pub const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% route=%ROUTE_NAME% upstream=%UPSTREAM_CLUSTER% %DURATION%ms\n";

fn access_log(path: &str) -> accesslog::AccessLog {
    use core::{data_source::Specifier, substitution_format_string::Format};
    use file_access_log::file_access_log::AccessLogFormat;

    let format = core::SubstitutionFormatString {
        format: Some(Format::TextFormatSource(core::DataSource {
            specifier: Some(Specifier::InlineString(ACCESS_LOG_FORMAT.into())),
            ..Default::default()
        })),
        ..Default::default()
    };
    let file = file_access_log::FileAccessLog {
        path: path.to_owned(),
        access_log_format: Some(AccessLogFormat::LogFormat(format)),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(to_any(
            &file,
        ))),
        ..Default::default()
    }
}

/// Routes grouped into virtual hosts and ordered most specific first.
/// What translating a route needs from the rest of the configuration.
pub struct RouteContext<'a> {
    /// Identity headers a client could spoof on public routes.
    pub spoofable: Vec<String>,
    pub state: &'a ConfigState,
}

pub fn route_configuration(routes: &[&Route], context: &RouteContext) -> route::RouteConfiguration {
    let mut by_host: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    let mut wildcard = Vec::new();
    for r in routes {
        if r.matches.hosts.is_empty() {
            wildcard.push(*r);
        } else {
            for host in &r.matches.hosts {
                by_host.entry(host.as_str()).or_default().push(*r);
            }
        }
    }
    let mut virtual_hosts: Vec<route::VirtualHost> = by_host
        .into_iter()
        .map(|(host, mut routes)| {
            routes.extend(wildcard.iter().copied());
            virtual_host(host, vec![host.to_owned()], routes, context)
        })
        .collect();
    virtual_hosts.push(virtual_host("default", vec!["*".into()], wildcard, context));
    route::RouteConfiguration {
        name: HTTP_ROUTES.into(),
        virtual_hosts,
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

fn virtual_host(
    name: &str,
    domains: Vec<String>,
    mut routes: Vec<&Route>,
    context: &RouteContext,
) -> route::VirtualHost {
    routes.sort_by_key(|r| precedence(r));
    route::VirtualHost {
        name: name.into(),
        domains,
        routes: routes
            .into_iter()
            .map(|r| {
                let mut envoy = envoy_route(r);
                auth::apply_route_policy(r, &mut envoy, &context.spoofable, context.state);
                if let Some(route::route::Action::Route(action)) = envoy.action.as_mut() {
                    action.rate_limits = ratelimit::route_rate_limits(r, context.state);
                }
                envoy
            })
            .collect(),
        ..Default::default()
    }
}

/// Sort key: exact paths, then regexes, then longer prefixes; more conditions
/// first; routes for a specific host before host-less ones; then by name.
fn precedence(r: &Route) -> impl Ord + '_ {
    let (rank, len) = match r.matches.path() {
        Some(PathMatch::Exact(p)) => (0, p.len()),
        Some(PathMatch::Regex(_)) => (1, 0),
        Some(PathMatch::Prefix(p)) => (2, p.len()),
        None => (3, 0),
    };
    let conditions = usize::from(!r.matches.methods.is_empty()) + r.matches.headers.len();
    (
        rank,
        Reverse(len),
        Reverse(conditions),
        r.matches.hosts.is_empty(),
        r.name.as_str(),
    )
}

fn regex(pattern: String) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        regex: pattern,
        ..Default::default()
    }
}

fn string_matcher(pattern: matcher::string_matcher::MatchPattern) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

pub fn envoy_route(r: &Route) -> route::Route {
    use matcher::string_matcher::MatchPattern;
    use route::{header_matcher::HeaderMatchSpecifier, route_match::PathSpecifier};

    let path = match r.matches.path() {
        Some(PathMatch::Prefix(p)) => PathSpecifier::Prefix(p.to_owned()),
        Some(PathMatch::Exact(p)) => PathSpecifier::Path(p.to_owned()),
        Some(PathMatch::Regex(p)) => PathSpecifier::SafeRegex(regex(p.to_owned())),
        // Unreachable for validated routes: a pattern that matches nothing.
        None => PathSpecifier::SafeRegex(regex("^$.".into())),
    };
    let mut headers = Vec::new();
    match r.matches.methods.as_slice() {
        [] => {}
        [method] => headers.push(route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                MatchPattern::Exact(method.clone()),
            ))),
            ..Default::default()
        }),
        methods => headers.push(route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                MatchPattern::SafeRegex(regex(format!("^({})$", methods.join("|")))),
            ))),
            ..Default::default()
        }),
    }
    headers.extend(r.matches.headers.iter().map(header_matcher));

    let cluster_specifier = match &r.destination.service {
        Some(service) => route::route_action::ClusterSpecifier::Cluster(service.clone()),
        None => route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
            clusters: r
                .destination
                .weighted
                .iter()
                .map(|w| route::weighted_cluster::ClusterWeight {
                    name: w.service.clone(),
                    weight: Some(protobuf::UInt32Value { value: w.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let regex_rewrite = match (r.strip_prefix, &r.matches.path_prefix) {
        (true, Some(prefix)) => Some(matcher::RegexMatchAndSubstitute {
            pattern: Some(regex(format!(
                "^{}/*",
                regex_syntax::escape(prefix.trim_end_matches('/'))
            ))),
            substitution: "/".into(),
        }),
        _ => None,
    };
    route::Route {
        name: r.name.clone(),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(path),
            headers,
            ..Default::default()
        }),
        action: Some(route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(cluster_specifier),
            prefix_rewrite: r.prefix_rewrite.clone().unwrap_or_default(),
            regex_rewrite,
            timeout: r.timeout_ms.map(duration_ms),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn header_matcher(h: &HeaderMatch) -> route::HeaderMatcher {
    use matcher::string_matcher::MatchPattern;
    use route::header_matcher::HeaderMatchSpecifier;

    let specifier = if let Some(exact) = &h.exact {
        HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::Exact(exact.clone())))
    } else if let Some(prefix) = &h.prefix {
        HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::Prefix(prefix.clone())))
    } else if let Some(pattern) = &h.regex {
        HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::SafeRegex(regex(
            pattern.clone(),
        ))))
    } else {
        HeaderMatchSpecifier::PresentMatch(true)
    };
    route::HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(specifier),
        invert_match: h.invert,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::{
        cluster::cluster::ClusterDiscoveryType, route::route_action::ClusterSpecifier,
    };
    use prost::Message;
    use serde_json::json;

    use super::*;
    use crate::xds::snapshot::ResourceType;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("service")
    }

    fn route(json: serde_json::Value) -> Route {
        serde_json::from_value(json).expect("route")
    }

    fn action(r: &route::Route) -> &route::RouteAction {
        match &r.action {
            Some(route::route::Action::Route(action)) => action,
            other => panic!("not a route action: {other:?}"),
        }
    }

    #[test]
    fn ip_services_use_eds_and_dns_services_strict_dns() {
        use cluster::cluster::DiscoveryType;

        let ip = service(
            json!({"name": "a", "endpoints": [{"host": "10.0.0.1", "port": 80, "weight": 3}],
                                "connect_timeout_ms": 1500}),
        );
        let c = cluster(&ip);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert!(c.load_assignment.is_none());
        assert_eq!(
            c.connect_timeout,
            Some(protobuf::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let cla = load_assignment(&ip);
        let endpoint = &cla.endpoints[0].lb_endpoints[0];
        assert_eq!(
            endpoint.load_balancing_weight,
            Some(protobuf::UInt32Value { value: 3 })
        );

        let dns = service(
            json!({"name": "b", "endpoints": [{"host": "backend.internal", "port": 8080}]}),
        );
        let c = cluster(&dns);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        assert_eq!(
            c.load_assignment.as_ref().map(|l| l.cluster_name.as_str()),
            Some("b")
        );
        assert!(
            c.typed_extension_protocol_options.is_empty(),
            "http1 needs no options"
        );
    }

    #[test]
    fn grpc_and_http2_services_speak_http2_upstream() {
        let c = cluster(&service(json!({"name": "g", "protocol": "grpc"})));
        let options = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let decoded =
            upstream_http::HttpProtocolOptions::decode(options.value.as_slice()).expect("decode");
        assert!(format!("{decoded:?}").contains("Http2ProtocolOptions"));
    }

    #[test]
    fn routes_become_virtual_hosts_ordered_most_specific_first() {
        let routes = [
            route(
                json!({"name": "prefix-short", "match": {"path_prefix": "/a"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "prefix-long", "match": {"path_prefix": "/a/b"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "exact", "match": {"path_exact": "/a"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "regex", "match": {"path_regex": "^/a/[0-9]+$"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "get-only", "match": {"path_prefix": "/a", "methods": ["GET"]}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "hosted", "match": {"path_prefix": "/a", "hosts": ["api.example.com"]}, "destination": {"service": "s"}}),
            ),
        ];
        let refs: Vec<&Route> = routes.iter().collect();
        let empty = ConfigState::default();
        let config = route_configuration(
            &refs,
            &RouteContext {
                spoofable: Vec::new(),
                state: &empty,
            },
        );
        assert!(config.ignore_port_in_host_matching);
        let names =
            |vh: &route::VirtualHost| vh.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let hosted = &config.virtual_hosts[0];
        assert_eq!(hosted.domains, vec!["api.example.com"]);
        assert_eq!(
            names(hosted),
            [
                "exact",
                "regex",
                "prefix-long",
                "get-only",
                "hosted",
                "prefix-short"
            ],
            "host-less routes apply on every host, after equally specific host routes"
        );
        let default = &config.virtual_hosts[1];
        assert_eq!(default.domains, vec!["*"]);
        assert_eq!(
            names(default),
            ["exact", "regex", "prefix-long", "get-only", "prefix-short"]
        );
    }

    #[test]
    fn route_actions_carry_rewrites_weights_methods_and_timeouts() {
        use matcher::string_matcher::MatchPattern;
        use route::header_matcher::HeaderMatchSpecifier;

        let r = envoy_route(&route(json!({
            "name": "r", "match": {"path_prefix": "/api/", "methods": ["GET", "POST"]},
            "destination": {"weighted": [{"service": "a", "weight": 90}, {"service": "b", "weight": 10}]},
            "strip_prefix": true, "timeout_ms": 2500
        })));
        let a = action(&r);
        let rewrite = a.regex_rewrite.as_ref().expect("strip prefix");
        assert_eq!(
            rewrite.pattern.as_ref().map(|p| p.regex.as_str()),
            Some("^/api/*")
        );
        assert_eq!(rewrite.substitution, "/");
        assert_eq!(
            a.timeout,
            Some(protobuf::Duration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        let Some(ClusterSpecifier::WeightedClusters(weighted)) = &a.cluster_specifier else {
            panic!("weighted")
        };
        let weights: Vec<(String, u32)> = weighted
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
            .collect();
        assert_eq!(weights, [("a".into(), 90), ("b".into(), 10)]);
        let method = &r.r#match.as_ref().expect("match").headers[0];
        assert_eq!(method.name, ":method");
        let Some(HeaderMatchSpecifier::StringMatch(m)) = &method.header_match_specifier else {
            panic!("string match")
        };
        assert!(
            matches!(&m.match_pattern, Some(MatchPattern::SafeRegex(r)) if r.regex == "^(GET|POST)$")
        );

        let single = envoy_route(&route(json!({
            "name": "x", "match": {"path_exact": "/x", "methods": ["DELETE"]},
            "destination": {"service": "s"}, "prefix_rewrite": "/y"
        })));
        assert_eq!(action(&single).prefix_rewrite, "/y");
        assert_eq!(
            action(&single).cluster_specifier,
            Some(ClusterSpecifier::Cluster("s".into()))
        );
        assert!(
            action(&single).timeout.is_none(),
            "Envoy's default timeout applies"
        );
    }

    #[test]
    fn listener_loads_routes_over_ads_and_logs_when_asked() {
        let proxy = ProxySettings {
            listen: "127.0.0.1:9000".parse().expect("addr"),
            access_log_path: Some("/tmp/access.log".into()),
            ext_authz: ExtAuthzSettings::default(),
            ratelimit: RateLimitSettings::default(),
            xff_trusted_hops: 0,
        };
        let l = http_listener(&proxy);
        let Some(listener::filter::ConfigType::TypedConfig(any)) =
            &l.filter_chains[0].filters[0].config_type
        else {
            panic!("typed config")
        };
        let manager = hcm::HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
        let Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) = &manager.route_specifier
        else {
            panic!("rds")
        };
        assert_eq!(rds.route_config_name, HTTP_ROUTES);
        assert_eq!(
            manager.http_filters.last().map(|f| f.name.as_str()),
            Some("envoy.filters.http.router")
        );
        assert_eq!(manager.access_log.len(), 1);
        let Some(core::address::Address::SocketAddress(bound)) = l.address.and_then(|a| a.address)
        else {
            panic!("socket address")
        };
        assert_eq!(bound.address, "127.0.0.1");
        assert_eq!(
            bound.port_specifier,
            Some(core::socket_address::PortSpecifier::PortValue(9000))
        );
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
        let snapshot = snapshot(&state, &ProxySettings::default()).expect("consistent");
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
            [jwt::JWT_FILTER],
            "jwt_authn's configuration travels over ECDS, apart from the listener"
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
            snapshot(&ConfigState::default(), &ProxySettings::default()).expect("consistent");
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
