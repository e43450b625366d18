//! The listeners: the default HTTP listener and the connection manager every
//! listener runs (filters, access log, routes over RDS), TLS sockets.

use gatehouse_proto::{core, hcm, listener, protobuf, router, to_any};

use super::{
    HTTP_ROUTES, ProxySettings, access_log, actions, ads, auth, cors, grpc, jwt, quota, ratelimit,
    resilience, shedding, socket_address, tracing, usage_log, version, websocket,
};

/// Name of the default listener.
pub const HTTP_LISTENER: &str = "gatehouse_http";

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
        // CORS first: a preflight is answered before authentication.
        // Then a retired API version: refused before anyone is asked for credentials.
        http_filters: [
            cors::cors_filter(),
            version::sunset_filter(),
            jwt::jwt_filter(),
        ]
        .into_iter()
        .chain(jwt::rbac_filters())
        .chain(auth::ext_authz_filters(&proxy.ext_authz))
        .chain([ratelimit::ratelimit_filter(&proxy.ratelimit)])
        // Quota policies: the route names its policy, Envoy decides.
        .chain([quota::header_mutation_filter(), quota::quota_filter()])
        // Shedding after the checks: it measures the upstream's latency.
        .chain([shedding::shedding_filter(&proxy.shedding)])
        // Faults after the checks: a drill never lets a request skip them.
        .chain([actions::fault_filter(), actions::buffer_filter()])
        // Protocol translation last: checks and limits see the request as
        // the client sent it.
        .chain(grpc::filters())
        // Every filter is off until a route switches it on (by its
        // per-route configuration, or `enable_filter`): a request pays only
        // for the filters its route uses. An idle filter still costs Envoy
        // work on each request (a third of a public route's, measured).
        .map(|filter| hcm::HttpFilter {
            disabled: true,
            ..filter
        })
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
        local_reply_config: Some({
            let mut replies = jwt::local_replies();
            replies.mappers.insert(0, version::sunset_reply());
            replies.mappers.extend(resilience::overload_replies());
            replies.mappers.push(ratelimit::rate_limited_reply());
            replies
        }),
        upgrade_configs: websocket::upgrade_configs(),
        tracing: proxy.tracing.as_ref().map(tracing::http_tracing),
        access_log: proxy
            .access_log_path
            .iter()
            .map(|p| access_log::access_log(p, proxy.access_log_format))
            .chain(
                (proxy.access_log_otlp && proxy.tracing.is_some())
                    .then(|| access_log::otlp_access_log(tracing::OTLP_CLUSTER)),
            )
            .chain(proxy.usage_log.then(usage_log::usage_log))
            .collect(),
        early_header_mutation_extensions: vec![usage_log::identity_headers_removed()],
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

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn listener_loads_routes_over_ads_and_logs_when_asked() {
        let proxy = ProxySettings {
            listen: "127.0.0.1:9000".parse().expect("addr"),
            access_log_path: Some("/tmp/access.log".into()),
            ..ProxySettings::default()
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
}
