//! Gateways: one more listener each, on the same routes and filters as the
//! default listener. An `https` gateway terminates TLS with certificates
//! delivered by SDS (`certificate.rs`): one filter chain per SNI entry plus
//! a default chain, each with the gateway's TLS parameters (ALPN h2 and
//! http/1.1); HSTS is added to its responses. An `http` gateway may answer
//! everything with a redirect to HTTPS instead.

use std::net::IpAddr;

use gatehouse_proto::{core, hcm, header_mutation, listener, route, tls, tls_inspector, to_any};

use super::{
    ProxySettings,
    certificate::{client_ca_sds_config, sds_config},
    http_connection_manager, listener_for,
};
use crate::{
    model::{
        ConfigState, Gateway,
        gateway::{ClientCertificateMode, TlsVersion},
    },
    translate::TranslateError,
};

/// The listener name of a gateway (distinct from the default listener's).
pub fn listener_name(gateway: &Gateway) -> String {
    format!("gateway_{}", gateway.name)
}

/// The route configuration of a gateway some route names.
pub fn route_config_name(gateway: &Gateway) -> String {
    format!("routes_{}", gateway.name)
}

/// The gateway's listener, taking its routes from `rds`.
pub fn listener(gateway: &Gateway, proxy: &ProxySettings, rds: &str) -> listener::Listener {
    let name = listener_name(gateway);
    let mut manager = http_connection_manager(proxy, &name);
    if let Some(hcm::http_connection_manager::RouteSpecifier::Rds(routes)) =
        &mut manager.route_specifier
    {
        routes.route_config_name = rds.to_owned();
    }
    if let Some(port) = gateway.redirect_to_https_port {
        manager.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            https_redirect(&name, port),
        ));
    }
    if gateway.client_certificates.is_some() {
        // Upstreams get Gatehouse's own XFCC for a verified client
        // certificate; a client-sent one is never passed on (every other
        // listener sanitises it too, Envoy's default).
        use hcm::http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails};
        manager.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
        manager.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
            subject: Some(gatehouse_proto::protobuf::BoolValue { value: true }),
            uri: true,
            dns: true,
            ..Default::default()
        });
    }
    if let Some(age) = gateway.hsts_max_age_s {
        // Before the router, like every filter.
        let at = manager.http_filters.len().saturating_sub(1);
        manager.http_filters.insert(at, hsts_filter(age));
    }
    let Some(default) = &gateway.certificate else {
        return listener_for(&name, &gateway.address, gateway.port, manager, None);
    };
    let mut l = listener_for(
        &name,
        &gateway.address,
        gateway.port,
        manager,
        Some(tls_transport_socket(gateway, default)),
    );
    let template = l.filter_chains[0].clone();
    for entry in &gateway.sni {
        l.filter_chains.push(listener::FilterChain {
            filter_chain_match: Some(listener::FilterChainMatch {
                server_names: entry.server_names.clone(),
                ..Default::default()
            }),
            transport_socket: Some(tls_transport_socket(gateway, &entry.certificate)),
            ..template.clone()
        });
    }
    l.listener_filters = vec![listener::ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(to_any(
            &tls_inspector::TlsInspector::default(),
        ))),
        ..Default::default()
    }];
    l
}

/// TLS with `certificate`'s secret and the gateway's parameters.
pub fn tls_transport_socket(gateway: &Gateway, certificate: &str) -> core::TransportSocket {
    use tls::tls_parameters::TlsProtocol;
    let minimum = match gateway.tls_min_version {
        Some(TlsVersion::V1_3) => TlsProtocol::TlSv13,
        Some(TlsVersion::V1_2) | None => TlsProtocol::TlSv12,
    };
    let context = tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds_config(certificate)],
            tls_params: Some(tls::TlsParameters {
                tls_minimum_protocol_version: minimum as i32,
                cipher_suites: gateway.cipher_suites.clone(),
                ..Default::default()
            }),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            validation_context_type: gateway.client_certificates.as_ref().map(|_| {
                tls::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                    client_ca_sds_config(gateway),
                )
            }),
            ..Default::default()
        }),
        require_client_certificate: gateway.client_certificates.as_ref().map(|c| {
            gatehouse_proto::protobuf::BoolValue {
                value: c.mode == ClientCertificateMode::Require,
            }
        }),
        ..Default::default()
    };
    super::tls_socket(to_any(&context))
}

/// `Strict-Transport-Security` on every response of the listener.
fn hsts_filter(max_age_s: u32) -> hcm::HttpFilter {
    use gatehouse_proto::mutation_rules as common;
    let mutation = header_mutation::HeaderMutation {
        mutations: Some(header_mutation::Mutations {
            response_mutations: vec![common::HeaderMutation {
                action: Some(common::header_mutation::Action::Append(super::set_header(
                    "strict-transport-security",
                    format!("max-age={max_age_s}; includeSubDomains"),
                ))),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    hcm::HttpFilter {
        name: "gatehouse.hsts".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(&mutation))),
        ..Default::default()
    }
}

/// A route configuration answering every request with a redirect to HTTPS.
fn https_redirect(name: &str, port: u32) -> route::RouteConfiguration {
    use route::redirect_action::SchemeRewriteSpecifier;
    route::RouteConfiguration {
        name: format!("{name}_redirect"),
        virtual_hosts: vec![route::VirtualHost {
            name: "redirect".into(),
            domains: vec!["*".into()],
            routes: vec![route::Route {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Redirect(route::RedirectAction {
                    scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
                    // 443 is implied by https: Envoy drops the port then.
                    port_redirect: port,
                    response_code: route::redirect_action::RedirectResponseCode::PermanentRedirect
                        as i32,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What a `require_tls` route answers in the clear: its match, for requests
/// that came without TLS (`x-forwarded-proto`, which Envoy sets from the
/// connection unless a trusted proxy set it), refused with 403.
pub fn tls_refusal(envoy: &route::Route) -> route::Route {
    use gatehouse_proto::matcher::{StringMatcher, string_matcher::MatchPattern};
    let mut matched = envoy.r#match.clone().unwrap_or_default();
    matched.headers.push(route::HeaderMatcher {
        name: "x-forwarded-proto".into(),
        header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(MatchPattern::Exact("http".into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    let body = super::error_body("tls_required", "this route is served over HTTPS only");
    route::Route {
        name: format!("{}_tls_required", envoy.name),
        r#match: Some(matched),
        action: Some(route::route::Action::DirectResponse(
            route::DirectResponseAction {
                status: 403,
                body: Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(body)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        response_headers_to_add: vec![super::json_content_type()],
        ..Default::default()
    }
}

/// No two listeners may bind the same port on overlapping addresses (a
/// wildcard address overlaps every address of its family).
pub fn check_addresses(state: &ConfigState, proxy: &ProxySettings) -> Result<(), TranslateError> {
    let mut bound: Vec<(String, Option<IpAddr>, u32)> = vec![(
        super::HTTP_LISTENER.to_owned(),
        Some(proxy.listen.ip()),
        u32::from(proxy.listen.port()),
    )];
    for gateway in state.gateways.values() {
        let ip = gateway.address.parse::<IpAddr>().ok();
        let name = listener_name(gateway);
        for (other, other_ip, port) in &bound {
            let overlaps = match (ip, other_ip) {
                (Some(a), Some(b)) => {
                    a == *b
                        || (a.is_ipv4() == b.is_ipv4()
                            && (a.is_unspecified() || b.is_unspecified()))
                }
                _ => true,
            };
            if *port == gateway.port && overlaps {
                return Err(TranslateError::AddressInUse {
                    first: other.clone(),
                    second: name,
                    address: format!("{}:{}", gateway.address, gateway.port),
                });
            }
        }
        bound.push((name, ip, gateway.port));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::{hcm, listener::filter::ConfigType};
    use prost::Message;

    fn gateway(json: serde_json::Value) -> Gateway {
        serde_json::from_value(json).expect("gateway")
    }

    #[test]
    fn https_gateways_serve_certificates_by_sni_from_sds() {
        let g = gateway(serde_json::json!({
            "name": "public", "port": 8443, "protocol": "https", "certificate": "edge",
            "sni": [{"server_names": ["api.example.com"], "certificate": "api"}],
            "tls_min_version": "1.3", "hsts_max_age_s": 600
        }));
        let l = listener(&g, &ProxySettings::default(), super::super::HTTP_ROUTES);
        assert_eq!(l.name, "gateway_public");
        assert_eq!(l.filter_chains.len(), 2);
        assert_eq!(l.listener_filters.len(), 1, "tls_inspector reads the SNI");
        let context = |chain: &listener::FilterChain| {
            let socket = chain.transport_socket.as_ref().expect("tls");
            let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type
            else {
                panic!("typed config");
            };
            tls::DownstreamTlsContext::decode(any.value.as_slice())
                .expect("decodes")
                .common_tls_context
                .expect("common")
        };
        let default = context(&l.filter_chains[0]);
        assert_eq!(default.alpn_protocols, ["h2", "http/1.1"]);
        assert_eq!(
            default.tls_certificate_sds_secret_configs[0].name,
            "cert_edge"
        );
        assert!(
            default.tls_certificates.is_empty(),
            "no material in the listener"
        );
        assert_eq!(
            default
                .tls_params
                .expect("params")
                .tls_minimum_protocol_version,
            tls::tls_parameters::TlsProtocol::TlSv13 as i32
        );
        let sni = &l.filter_chains[1];
        assert_eq!(
            sni.filter_chain_match.as_ref().expect("match").server_names,
            ["api.example.com"]
        );
        assert_eq!(
            context(sni).tls_certificate_sds_secret_configs[0].name,
            "cert_api"
        );
        let Some(ConfigType::TypedConfig(any)) = &sni.filters[0].config_type else {
            panic!("hcm");
        };
        let manager = hcm::HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
        assert_eq!(manager.stat_prefix, "gateway_public");
        let names: Vec<_> = manager
            .http_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            names[names.len() - 2..],
            ["gatehouse.hsts", "envoy.filters.http.router"]
        );
    }

    #[test]
    fn a_plain_gateway_can_redirect_everything_to_https() {
        let g = gateway(serde_json::json!({
            "name": "plain", "port": 8080, "redirect_to_https_port": 8443
        }));
        let l = listener(&g, &ProxySettings::default(), super::super::HTTP_ROUTES);
        assert!(l.filter_chains[0].transport_socket.is_none());
        let Some(ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type else {
            panic!("hcm");
        };
        let manager = hcm::HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
        let Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(config)) =
            manager.route_specifier
        else {
            panic!("inline routes");
        };
        let Some(route::route::Action::Redirect(redirect)) =
            &config.virtual_hosts[0].routes[0].action
        else {
            panic!("redirect");
        };
        assert_eq!(redirect.port_redirect, 8443);
    }

    #[test]
    fn overlapping_addresses_are_inconsistent() {
        let proxy = ProxySettings::default();
        let mut state = ConfigState::default();
        let port = u32::from(proxy.listen.port());
        state.gateways.insert(
            "a".into(),
            gateway(serde_json::json!({"name": "a", "address": "127.0.0.1", "port": port})),
        );
        assert!(matches!(
            check_addresses(&state, &proxy),
            Err(TranslateError::AddressInUse { .. })
        ));
        state.gateways.insert(
            "a".into(),
            gateway(serde_json::json!({"name": "a", "port": 8443})),
        );
        state.gateways.insert(
            "b".into(),
            gateway(serde_json::json!({"name": "b", "address": "::", "port": 8443})),
        );
        assert!(
            check_addresses(&state, &proxy).is_ok(),
            "v4 and v6 wildcards differ"
        );
    }
}
