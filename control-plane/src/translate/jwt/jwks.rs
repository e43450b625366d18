//! The clusters Envoy fetches remote JWKS through: one per issuer with a
//! `jwks_uri`, over TLS checked against the system's CAs and the host name.

use gatehouse_proto::{cluster, core, endpoint, tls, to_any};

use super::{SYSTEM_CA_BUNDLE, envoy_issuers, envoy_policy, exact};
use crate::{
    model::ConfigState,
    translate::{duration_ms, socket_address, tls_socket},
};

pub fn jwks_cluster_name(issuer: &str) -> String {
    format!("gatehouse_jwks_{issuer}")
}

/// Scheme, host and port of a JWKS URI (validated by the model).
pub(super) struct Origin {
    tls: bool,
    host: String,
    port: u32,
}

pub(super) fn origin(uri: &str) -> Option<Origin> {
    let (tls, rest) = match uri.split_once("://")? {
        ("https", rest) => (true, rest),
        ("http", rest) => (false, rest),
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map(str::parse).transpose().ok()?;
        (host.to_owned(), port.unwrap_or(default_port))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    (!host.is_empty()).then_some(Origin { tls, host, port })
}

/// A cluster per issuer whose keys Envoy fetches (used by routes verified in Envoy).
pub fn jwks_clusters(state: &ConfigState) -> Vec<cluster::Cluster> {
    use cluster::cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily};
    if !state.routes.values().any(|r| envoy_policy(r).is_some()) {
        return Vec::new();
    }
    envoy_issuers(state)
        .filter_map(|i| Some((i, origin(i.jwks_uri.as_deref()?)?)))
        .map(|(issuer, origin)| {
            let name = jwks_cluster_name(&issuer.name);
            let literal = origin.host.parse::<std::net::IpAddr>().is_ok();
            let kind = if literal {
                DiscoveryType::Static
            } else {
                DiscoveryType::LogicalDns
            };
            cluster::Cluster {
                name: name.clone(),
                connect_timeout: Some(duration_ms(2_000)),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
                dns_lookup_family: DnsLookupFamily::V4Preferred as i32,
                load_assignment: Some(endpoint::ClusterLoadAssignment {
                    cluster_name: name,
                    endpoints: vec![endpoint::LocalityLbEndpoints {
                        lb_endpoints: vec![endpoint::LbEndpoint {
                            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                                endpoint::Endpoint {
                                    address: Some(socket_address(&origin.host, origin.port)),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                transport_socket: origin.tls.then(|| upstream_tls(&origin.host)),
                ..Default::default()
            }
        })
        .collect()
}

/// TLS to a JWKS host: the system's CAs, the host's name checked.
pub(super) fn upstream_tls(host: &str) -> core::TransportSocket {
    use tls::{common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType};
    let context = tls::UpstreamTlsContext {
        sni: host.to_owned(),
        common_tls_context: Some(tls::CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                tls::CertificateValidationContext {
                    trusted_ca: Some(core::DataSource {
                        specifier: Some(core::data_source::Specifier::Filename(
                            SYSTEM_CA_BUNDLE.into(),
                        )),
                        ..Default::default()
                    }),
                    match_typed_subject_alt_names: vec![tls::SubjectAltNameMatcher {
                        san_type: SanType::Dns as i32,
                        matcher: Some(exact(host)),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    tls_socket(to_any(&context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    use crate::translate::jwt::tests::state;

    #[test]
    fn remote_keys_are_fetched_over_verified_tls() {
        let clusters = jwks_clusters(&state());
        assert_eq!(clusters.len(), 1);
        let cluster = &clusters[0];
        assert_eq!(cluster.name, "gatehouse_jwks_remote");
        let socket = cluster.transport_socket.as_ref().expect("TLS");
        let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("typed config");
        };
        let context = tls::UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
        assert_eq!(context.sni, "keys.remote.test");
        let Some(tls::common_tls_context::ValidationContextType::ValidationContext(validation)) =
            context.common_tls_context.unwrap().validation_context_type
        else {
            panic!("validation context");
        };
        assert_eq!(validation.match_typed_subject_alt_names.len(), 1);
        assert!(validation.trusted_ca.is_some());
    }

    #[test]
    fn jwks_origins_are_parsed() {
        let cases = [
            ("https://keys.test/jwks", Some((true, "keys.test", 443))),
            (
                "http://10.0.0.1:8080/k?x=1",
                Some((false, "10.0.0.1", 8080)),
            ),
            ("https://user@[::1]:9443/k", Some((true, "::1", 9443))),
            ("http://[::1]/k", Some((false, "::1", 80))),
            ("ftp://keys.test/", None),
            ("https://:443/", None),
            ("https://keys.test:port/", None),
        ];
        for (uri, expected) in cases {
            let parsed = origin(uri).map(|o| (o.tls, o.host, o.port));
            assert_eq!(
                parsed,
                expected.map(|(tls, host, port)| (tls, host.to_owned(), port)),
                "{uri}"
            );
        }
    }
}
