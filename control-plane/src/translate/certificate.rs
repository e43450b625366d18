//! Certificates become SDS secrets (`cert_<name>`), which listeners and
//! clusters name instead of holding the material: a rotation changes only
//! the secret, so no listener drains and open connections stay; new
//! handshakes get the new certificate.
//!
//! A file reference becomes a secret naming the files (Envoy reads them on
//! its host). An uploaded certificate carries its chain and its decrypted
//! key inline; such a secret is marked sensitive, and the xDS server sends
//! it only over an encrypted, authenticated connection.

use gatehouse_proto::{core, tls};

use super::file_source;

use crate::{
    model::{Certificate, ConfigState, Gateway, certificate::ChainInfo},
    translate::TranslateError,
    xds::snapshot::{CertificateExpiry, XdsResource},
};

/// The SDS name of a certificate's secret.
pub fn secret_name(certificate: &str) -> String {
    format!("cert_{certificate}")
}

/// The SDS name of the CA bundle a gateway verifies client certificates with.
pub fn client_ca_secret_name(gateway: &Gateway) -> String {
    format!("client_ca_{}", gateway.name)
}

pub fn client_ca_sds_config(gateway: &Gateway) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: client_ca_secret_name(gateway),
        sds_config: Some(super::ads()),
    }
}

/// The validation context of a gateway asking for client certificates.
fn client_ca_secret(gateway: &Gateway) -> Option<XdsResource> {
    let client = gateway.client_certificates.as_ref()?;
    let secret = tls::Secret {
        name: client_ca_secret_name(gateway),
        r#type: Some(tls::secret::Type::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: Some(inline(&client.ca_pem)),
                ..Default::default()
            },
        )),
    };
    Some(XdsResource::new(
        secret.name.clone(),
        gatehouse_proto::to_any(&secret),
        Vec::new(),
    ))
}

/// How a listener or cluster names a certificate's secret (over ADS).
pub fn sds_config(certificate: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: secret_name(certificate),
        sds_config: Some(super::ads()),
    }
}

fn inline(text: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    }
}

/// The secret of one certificate; an uploaded one needs its key in `state`.
pub fn secret(c: &Certificate, state: &ConfigState) -> Result<XdsResource, TranslateError> {
    secret_of(c, c.info().as_ref(), state)
}

/// [`secret`] with the uploaded chain's details already read.
fn secret_of(
    c: &Certificate,
    info: Option<&ChainInfo>,
    state: &ConfigState,
) -> Result<XdsResource, TranslateError> {
    let (chain, key, sensitive) = match (&c.cert_chain_file, &c.private_key_file) {
        (Some(chain), Some(key)) => (file_source(chain), file_source(key), false),
        _ => {
            let pem = c.cert_chain_pem.as_deref().unwrap_or_default();
            let key = info
                .and_then(|i| state.private_keys.get(&i.spki_sha256))
                .ok_or_else(|| TranslateError::MissingPrivateKey(c.name.clone()))?;
            (inline(pem), inline(key.expose()), true)
        }
    };
    let secret = tls::Secret {
        name: secret_name(&c.name),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: Some(chain),
            private_key: Some(key),
            ..Default::default()
        })),
    };
    let mut resource = XdsResource::new(
        secret.name.clone(),
        gatehouse_proto::to_any(&secret),
        Vec::new(),
    );
    resource.sensitive = sensitive;
    Ok(resource)
}

/// Every certificate a gateway or a service uses, as secrets, and when
/// each expires.
pub fn secrets(
    state: &ConfigState,
) -> Result<(Vec<XdsResource>, Vec<CertificateExpiry>), TranslateError> {
    let used: std::collections::BTreeSet<&str> = state
        .gateways
        .values()
        .flat_map(|g| g.certificates())
        .chain(
            state
                .services
                .values()
                .filter_map(|s| s.tls.as_ref()?.client_certificate.as_deref()),
        )
        .collect();
    // Each uploaded chain is parsed once, for its key and its expiry.
    let used: Vec<(&Certificate, Option<ChainInfo>)> = used
        .into_iter()
        .filter_map(|name| state.certificates.get(name))
        .map(|c| (c, c.info()))
        .collect();
    let expiry = used
        .iter()
        .map(|(c, info)| CertificateExpiry {
            name: c.name.clone(),
            not_after_s: info.as_ref().map(|i| i.not_after_s),
        })
        .collect();
    let mut secrets: Vec<XdsResource> = used
        .iter()
        .map(|(c, info)| secret_of(c, info.as_ref(), state))
        .collect::<Result<_, _>>()?;
    secrets.extend(state.gateways.values().filter_map(client_ca_secret));
    Ok((secrets, expiry))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::{model::Resource, secret::Secret};

    const CHAIN: &str = include_str!("../../../tests/fixtures/tls/localhost.crt");
    const KEY: &str = include_str!("../../../tests/fixtures/tls/localhost.key");

    fn certificate(json: serde_json::Value) -> Certificate {
        serde_json::from_value(json).expect("certificate")
    }

    #[test]
    fn files_and_uploads_become_secrets_only_uploads_sensitive() {
        let mut state = ConfigState::default();
        let files = certificate(serde_json::json!({
            "name": "files", "cert_chain_file": "/etc/c.pem", "private_key_file": "/etc/k.pem"
        }));
        let uploaded = certificate(serde_json::json!({"name": "up", "cert_chain_pem": CHAIN}));
        let r = secret(&files, &state).expect("files");
        assert_eq!(r.name, "cert_files");
        assert!(!r.sensitive);
        assert!(matches!(
            secret(&uploaded, &state),
            Err(TranslateError::MissingPrivateKey(name)) if name == "up"
        ));
        let spki = uploaded.needs_private_key().expect("spki");
        state.private_keys.insert(spki, Secret::new(KEY.into()));
        let r = secret(&uploaded, &state).expect("uploaded");
        assert!(r.sensitive);
        let decoded = tls::Secret::decode(r.resource.value.as_slice()).expect("secret");
        let Some(tls::secret::Type::TlsCertificate(c)) = decoded.r#type else {
            panic!("tls certificate");
        };
        let Some(core::data_source::Specifier::InlineBytes(key)) =
            c.private_key.and_then(|k| k.specifier)
        else {
            panic!("inline key");
        };
        assert_eq!(key, KEY.as_bytes());
    }
}
