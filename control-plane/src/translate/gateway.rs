//! Gateways: one more listener each, on the same routes and filters as the
//! default listener; `https` gateways terminate TLS with their certificate's
//! files, which Envoy reads on its own host (ALPN h2 and http/1.1).

use std::net::IpAddr;

use gatehouse_proto::{core, tls, to_any};

use super::{ProxySettings, http_connection_manager, listener_for};
use crate::{
    model::ConfigState,
    model::{Certificate, Gateway},
    translate::TranslateError,
};

/// The listener name of a gateway (distinct from the default listener's).
pub fn listener_name(gateway: &Gateway) -> String {
    format!("gateway_{}", gateway.name)
}

pub fn listener(
    gateway: &Gateway,
    certificate: Option<&Certificate>,
    proxy: &ProxySettings,
) -> gatehouse_proto::listener::Listener {
    let name = listener_name(gateway);
    listener_for(
        &name,
        &gateway.address,
        gateway.port,
        http_connection_manager(proxy, &name),
        certificate.map(tls_transport_socket),
    )
}

pub fn tls_transport_socket(certificate: &Certificate) -> core::TransportSocket {
    use core::data_source::Specifier;
    let file = |path: &str| core::DataSource {
        specifier: Some(Specifier::Filename(path.to_owned())),
        ..Default::default()
    };
    let context = tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificates: vec![tls::TlsCertificate {
                certificate_chain: Some(file(&certificate.cert_chain_file)),
                private_key: Some(file(&certificate.private_key_file)),
                ..Default::default()
            }],
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    super::tls_socket(to_any(&context))
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
    fn https_gateways_terminate_tls_with_the_certificate_files() {
        let certificate: Certificate = serde_json::from_value(serde_json::json!({
            "name": "edge", "cert_chain_file": "/etc/gatehouse/edge.pem",
            "private_key_file": "/etc/gatehouse/edge.key"
        }))
        .expect("certificate");
        let g = gateway(serde_json::json!({
            "name": "public", "port": 8443, "protocol": "https", "certificate": "edge"
        }));
        let l = listener(&g, Some(&certificate), &ProxySettings::default());
        assert_eq!(l.name, "gateway_public");
        let chain = &l.filter_chains[0];
        let socket = chain.transport_socket.as_ref().expect("tls");
        let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("typed config");
        };
        let context = tls::DownstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
        let common = context.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
        let files = format!("{:?}", common.tls_certificates[0]);
        assert!(
            files.contains("/etc/gatehouse/edge.pem") && files.contains("/etc/gatehouse/edge.key")
        );
        let Some(ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
            panic!("hcm");
        };
        let manager = hcm::HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
        assert_eq!(manager.stat_prefix, "gateway_public");
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
