//! TLS certificates for the gateways, held one of two ways:
//!
//! - by reference: `cert_chain_file` and `private_key_file` name PEM files on
//!   every Envoy host, so the key never passes through Gatehouse;
//! - uploaded: `cert_chain_pem` and a write-only `private_key_pem`. The chain
//!   is checked (it parses, is not expired, and the key matches its public
//!   key); the key is never returned, exported or written to the history:
//!   the store keeps it encrypted (`store/keys.rs`), found again by the
//!   chain's public key, and it reaches Envoy only by SDS over an encrypted,
//!   authenticated xDS connection.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FieldError, Kind, NAME_PATTERN, Resource, check_name};
use crate::secret::Secret;

const MAX_PATH_LEN: usize = 4096;
const MAX_PEM_LEN: usize = 64 * 1024;

/// A certificate chain and its key: files on every Envoy host, or uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The team it belongs to (`/v1/owners`); absent: the operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub owner: Option<String>,
    /// Free key/value labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: crate::model::Labels,
    /// Other owners' resources may refer to it (set by the operators).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Absolute path of the PEM certificate chain on the Envoy hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain_file: Option<String>,
    /// Absolute path of the PEM private key on the Envoy hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    /// The PEM certificate chain itself, leaf first (instead of files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain_pem: Option<String>,
    /// The PEM private key of `cert_chain_pem`. Write-only: stored encrypted,
    /// never returned. Omitted on a later write of the same chain, the
    /// stored key is kept.
    #[serde(default, skip_serializing)]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub private_key_pem: Option<Secret>,
}

/// What Gatehouse reads off an uploaded chain's leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainInfo {
    /// Hex SHA-256 of the leaf's SubjectPublicKeyInfo: how its key is found.
    pub spki_sha256: String,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after_s: i64,
    pub subject: String,
    pub dns_names: Vec<String>,
}

/// Parses a PEM chain: at least one certificate, every one valid X.509.
pub fn chain_info(pem: &str) -> Result<ChainInfo, String> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    let Some(leaf) = ders.first() else {
        return Err("holds no CERTIFICATE block".into());
    };
    for (i, der) in ders.iter().enumerate() {
        x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("certificate 1 does not parse: {e}"))?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ChainInfo {
        spki_sha256: hex::encode(Sha256::digest(cert.public_key().raw)),
        not_after_s: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
        dns_names,
    })
}

/// The hex SHA-256 of the SubjectPublicKeyInfo of a PEM private key's public
/// half (RSA, ECDSA or Ed25519; PKCS#8, PKCS#1 or SEC1).
pub fn key_spki_sha256(pem: &str) -> Result<String, String> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "is not a PEM private key".to_owned())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "is not an RSA, ECDSA or Ed25519 private key".to_owned())?;
    let spki = signer
        .public_key()
        .ok_or_else(|| "has no public key Gatehouse can compare".to_owned())?;
    Ok(hex::encode(Sha256::digest(spki.as_ref())))
}

fn check_path(path: &str, field: &str, errors: &mut Vec<FieldError>) {
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN || path.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            format!("must be an absolute file path of at most {MAX_PATH_LEN} characters"),
        ));
    }
}

impl Certificate {
    /// The uploaded chain's details (none for file references).
    pub fn info(&self) -> Option<ChainInfo> {
        self.cert_chain_pem
            .as_deref()
            .and_then(|pem| chain_info(pem).ok())
    }

    /// Checks an uploaded chain and key as of `now_s`.
    fn check_uploaded(&self, pem: &str, now_s: i64, errors: &mut Vec<FieldError>) {
        if pem.len() > MAX_PEM_LEN {
            errors.push(FieldError::new(
                "cert_chain_pem",
                format!("must be at most {MAX_PEM_LEN} bytes"),
            ));
            return;
        }
        let info = match chain_info(pem) {
            Ok(info) => info,
            Err(e) => {
                errors.push(FieldError::new("cert_chain_pem", e));
                return;
            }
        };
        if info.not_after_s <= now_s {
            errors.push(FieldError::new(
                "cert_chain_pem",
                format!("the certificate expired (notAfter {})", info.not_after_s),
            ));
        }
        if let Some(key) = &self.private_key_pem {
            match key_spki_sha256(key.expose()) {
                Err(e) => errors.push(FieldError::new("private_key_pem", e)),
                Ok(spki) if spki != info.spki_sha256 => errors.push(FieldError::new(
                    "private_key_pem",
                    "does not match the certificate's public key",
                )),
                Ok(_) => {}
            }
        }
    }
}

impl Resource for Certificate {
    const KIND: Kind = Kind::Certificate;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        let files = (&self.cert_chain_file, &self.private_key_file);
        match (files, &self.cert_chain_pem) {
            ((Some(chain), Some(key)), None) => {
                check_path(chain, "cert_chain_file", &mut errors);
                check_path(key, "private_key_file", &mut errors);
                if self.private_key_pem.is_some() {
                    errors.push(FieldError::new(
                        "private_key_pem",
                        "goes with cert_chain_pem, not with files",
                    ));
                }
            }
            ((None, None), Some(pem)) => {
                let now_s = crate::clock::now_ms() / 1000;
                self.check_uploaded(pem, now_s, &mut errors);
            }
            ((None, None), None) => errors.push(FieldError::new(
                "cert_chain_pem",
                "give cert_chain_pem (and private_key_pem), or cert_chain_file and private_key_file",
            )),
            ((chain, key), pem) => {
                let field = if pem.is_some() {
                    "cert_chain_pem"
                } else if chain.is_none() {
                    "cert_chain_file"
                } else {
                    "private_key_file"
                };
                let _ = key;
                errors.push(FieldError::new(
                    field,
                    "give cert_chain_pem (and private_key_pem), or both cert_chain_file and \
                     private_key_file, not a mix",
                ));
            }
        }
        errors
    }

    fn private_keys(&self) -> Vec<(String, &Secret)> {
        match (&self.private_key_pem, self.info()) {
            (Some(key), Some(info)) => vec![(info.spki_sha256, key)],
            _ => Vec::new(),
        }
    }

    fn needs_private_key(&self) -> Option<String> {
        self.info().map(|info| info.spki_sha256)
    }
}

#[cfg(test)]
mod tests;
