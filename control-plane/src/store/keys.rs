//! Uploaded private keys: sealed with the key-encryption key before they
//! are written (`certificate_keys`, by public key), opened when the state is
//! loaded. A certificate whose chain names a public key with no stored key
//! is refused, naming `private_key_pem`.

use std::sync::Arc;

use sqlx::Row;

use super::{Store, StoreError, rows::now_ms};
use crate::{
    keyring::Keyring,
    model::{ConfigState, Resource},
};

/// What a write does with private keys.
#[derive(Debug, Default, Clone)]
pub(super) struct KeyWrites {
    /// (public key fingerprint, sealed key) to store.
    pub sealed: Vec<(String, String)>,
    /// (field, public key fingerprint) that must have a stored key.
    pub needed: Vec<(String, String)>,
}

/// How the store treats uploaded keys.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicy {
    pub keyring: Option<Arc<Keyring>>,
    /// The xDS port is encrypted and authenticated, so keys can reach Envoy.
    pub deliverable: bool,
}

impl Store {
    /// The same store, sealing uploaded private keys with `policy`'s KEK.
    pub fn with_keys(mut self, policy: KeyPolicy) -> Store {
        self.keys = policy;
        self
    }

    /// Seals `resource`'s uploaded keys; `field` prefixes the error's field.
    pub(super) fn key_writes<R: Resource>(
        &self,
        resource: &R,
        field: &str,
    ) -> Result<KeyWrites, StoreError> {
        let mut writes = KeyWrites::default();
        let field = format!("{field}private_key_pem");
        for (spki, key) in resource.private_keys() {
            let refuse = |why: &str| StoreError::PrivateKey {
                field: field.clone(),
                message: why.to_owned(),
            };
            let Some(keyring) = &self.keys.keyring else {
                return Err(refuse(
                    "no key-encryption key is configured (GATEHOUSE_KEY_ENCRYPTION_KEY or \
                     --key-encryption-key-file); use cert_chain_file and private_key_file instead",
                ));
            };
            if !self.keys.deliverable {
                return Err(refuse(
                    "uploaded keys travel only over an encrypted, authenticated xDS port: \
                     configure --xds-tls-cert-file and --xds-tls-key-file and an xDS token",
                ));
            }
            let sealed = keyring
                .seal(&spki, key)
                .map_err(|e| refuse(&e.to_string()))?;
            writes.sealed.push((spki, sealed));
        }
        if let Some(spki) = resource.needs_private_key() {
            writes.needed.push((field, spki));
        }
        Ok(writes)
    }
}

/// Stores the sealed keys, then checks every needed one is there. The
/// inner error is the write's own refusal.
pub(super) async fn write(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    writes: &KeyWrites,
) -> Result<Result<(), StoreError>, StoreError> {
    for (spki, sealed) in &writes.sealed {
        sqlx::query(
            "INSERT INTO certificate_keys (spki_sha256, sealed, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (spki_sha256) DO UPDATE SET sealed = excluded.sealed",
        )
        .bind(spki)
        .bind(sealed)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    }
    for (field, spki) in &writes.needed {
        let found: Option<String> =
            sqlx::query_scalar("SELECT spki_sha256 FROM certificate_keys WHERE spki_sha256 = $1")
                .bind(spki)
                .fetch_optional(&mut **tx)
                .await?;
        if found.is_none() {
            return Ok(Err(StoreError::PrivateKey {
                field: field.clone(),
                message: "no key is stored for this certificate's public key: upload \
                          private_key_pem with it"
                    .into(),
            }));
        }
    }
    Ok(Ok(()))
}

/// Opens the keys the state's certificates need. A key that cannot be
/// opened is left out (translation then names the certificate).
pub(super) async fn load(
    conn: &mut sqlx::AnyConnection,
    keyring: Option<&Keyring>,
    state: &mut ConfigState,
) -> Result<(), StoreError> {
    let needed: Vec<String> = state
        .certificates
        .values()
        .filter_map(Resource::needs_private_key)
        .collect();
    if needed.is_empty() {
        return Ok(());
    }
    let Some(keyring) = keyring else {
        tracing::error!("certificates have uploaded keys but no key-encryption key is configured");
        return Ok(());
    };
    for row in sqlx::query("SELECT spki_sha256, sealed FROM certificate_keys")
        .fetch_all(&mut *conn)
        .await?
    {
        let spki: String = row.try_get(0)?;
        if !needed.contains(&spki) {
            continue;
        }
        let sealed: String = row.try_get(1)?;
        match keyring.open(&spki, &sealed) {
            Ok(key) => {
                state.private_keys.insert(spki, key);
            }
            Err(e) => tracing::error!(spki = %spki, error = %e, "cannot open a stored private key"),
        }
    }
    Ok(())
}
