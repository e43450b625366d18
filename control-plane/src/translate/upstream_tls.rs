//! A service's `tls` → the cluster's TLS transport socket: the CA bundle
//! and names the endpoints' certificates are verified against, SNI, ALPN
//! by protocol, and for mTLS the client certificate's files.

use gatehouse_proto::{cluster, matcher, tls, to_any};

use crate::model::{
    ConfigState, Protocol, Service,
    upstream_tls::{SYSTEM_CA_BUNDLE, UpstreamTls},
};

/// Sets the TLS transport socket of a service with `tls`.
pub fn apply(service: &Service, state: &ConfigState, c: &mut cluster::Cluster) {
    if let Some(upstream) = &service.tls {
        c.transport_socket = Some(super::tls_socket(to_any(&context(
            service, upstream, state,
        ))));
    }
}

fn context(service: &Service, t: &UpstreamTls, state: &ConfigState) -> tls::UpstreamTlsContext {
    use tls::subject_alt_name_matcher::SanType;

    let validation = tls::CertificateValidationContext {
        trusted_ca: Some(super::file_source(
            t.ca_file.as_deref().unwrap_or(SYSTEM_CA_BUNDLE),
        )),
        match_typed_subject_alt_names: t
            .verify_subject_alt_names
            .iter()
            .map(|name| tls::SubjectAltNameMatcher {
                san_type: SanType::Dns as i32,
                matcher: Some(matcher::StringMatcher {
                    match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(name.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let client = t
        .client_certificate
        .as_ref()
        .and_then(|name| state.certificates.get(name));
    tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            // The client certificate by SDS, like the gateways'.
            tls_certificate_sds_secret_configs: client
                .map(|c| super::certificate::sds_config(&c.name))
                .into_iter()
                .collect(),
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            alpn_protocols: match service.protocol {
                Protocol::Http2 | Protocol::Grpc => vec!["h2".into()],
                Protocol::Http1 => vec!["http/1.1".into()],
            },
            ..Default::default()
        }),
        sni: t.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}
