//! TLS settings of the control plane: the xDS port's certificate and the
//! key-encryption key that seals uploaded private keys. Both are read and
//! checked at start, so a bad file is a configuration error (exit 64).

use std::{path::PathBuf, sync::Arc};

use clap::Args;

use super::{ConfigError, secret};
use crate::{keyring::Keyring, model::certificate, secret::Secret};

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain served on the xDS port: xDS (and the stats and
    /// usage streams on the same port) then speak TLS only.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_TLS_CERT_FILE",
        requires = "xds_tls_key_file"
    )]
    pub xds_tls_cert_file: Option<PathBuf>,

    /// PEM private key of --xds-tls-cert-file.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_TLS_KEY_FILE",
        requires = "xds_tls_cert_file"
    )]
    pub xds_tls_key_file: Option<PathBuf>,

    /// PEM CA bundle of node client certificates: with it, every xDS client
    /// must present a certificate it signed that names the client's node id
    /// (a DNS or URI SAN, or the subject CN).
    #[arg(
        long,
        env = "GATEHOUSE_XDS_TLS_CLIENT_CA_FILE",
        requires = "xds_tls_cert_file"
    )]
    pub xds_tls_client_ca_file: Option<PathBuf>,

    /// Key-encryption key sealing uploaded certificate keys at rest: 32
    /// bytes as 64 hex digits or base64. Without one, certificates can only
    /// name files on the Envoy hosts.
    #[arg(
        long,
        env = "GATEHOUSE_KEY_ENCRYPTION_KEY",
        hide_env_values = true,
        conflicts_with = "key_encryption_key_file"
    )]
    pub key_encryption_key: Option<Secret>,

    /// File holding the key-encryption key.
    #[arg(long, env = "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
}

/// The xDS port's certificate and key, checked to match.
pub struct XdsIdentity {
    pub cert_pem: String,
    pub key_pem: Secret,
    /// Client certificates required, signed by this bundle.
    pub client_ca_pem: Option<String>,
}

impl TlsArgs {
    pub fn xds_identity(&self) -> Result<Option<XdsIdentity>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.xds_tls_cert_file, &self.xds_tls_key_file) else {
            return Ok(None);
        };
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                flag,
                path: path.clone(),
                source,
            })
        };
        let cert_pem = read("--xds-tls-cert-file", cert)?;
        let key_pem = read("--xds-tls-key-file", key)?;
        let info = certificate::chain_info(&cert_pem)
            .map_err(|e| ConfigError::XdsTls(format!("--xds-tls-cert-file {e}")))?;
        let spki = certificate::key_spki_sha256(&key_pem)
            .map_err(|e| ConfigError::XdsTls(format!("--xds-tls-key-file {e}")))?;
        if spki != info.spki_sha256 {
            return Err(ConfigError::XdsTls(
                "--xds-tls-key-file does not match --xds-tls-cert-file".into(),
            ));
        }
        let client_ca_pem = self
            .xds_tls_client_ca_file
            .as_ref()
            .map(|path| read("--xds-tls-client-ca-file", path))
            .transpose()?;
        if let Some(ca) = &client_ca_pem {
            certificate::chain_info(ca)
                .map_err(|e| ConfigError::XdsTls(format!("--xds-tls-client-ca-file {e}")))?;
        }
        Ok(Some(XdsIdentity {
            cert_pem,
            key_pem: Secret::new(key_pem),
            client_ca_pem,
        }))
    }

    pub fn keyring(&self) -> Result<Option<Arc<Keyring>>, ConfigError> {
        if self.key_encryption_key.is_none() && self.key_encryption_key_file.is_none() {
            return Ok(None);
        }
        let text = secret(
            &self.key_encryption_key,
            &self.key_encryption_key_file,
            "--key-encryption-key-file",
            "the key-encryption key",
        )?;
        let Some(text) = text else { return Ok(None) };
        Keyring::from_text(text.expose())
            .map(|k| Some(Arc::new(k)))
            .map_err(|e| ConfigError::XdsTls(format!("key-encryption key: {e}")))
    }
}
