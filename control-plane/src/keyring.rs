//! The key-encryption key (KEK) that seals uploaded private keys at rest.
//!
//! AES-256-GCM (ring) with a random 96-bit nonce per seal; the public key's
//! fingerprint is the associated data, so a sealed key cannot be moved to
//! another certificate's row. A sealed value names the KEK that made it (the
//! first 8 hex digits of its SHA-256), so a wrong KEK is reported as such.
//! Used by the store (seal on write, open on load) and `config` (read the
//! KEK), so neither imports the other.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("the key-encryption key must be 32 bytes, as 64 hex digits or base64")]
    BadKey,
    #[error("sealed with another key-encryption key ({0}); this control plane has {1}")]
    OtherKey(String, String),
    #[error("the sealed key is damaged or does not belong to this certificate")]
    Damaged,
    #[error("no randomness for a nonce")]
    Random,
}

pub struct Keyring {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("id", &self.id).finish()
    }
}

impl Keyring {
    /// A KEK from its text form: 64 hex digits or the base64 of 32 bytes.
    pub fn from_text(text: &str) -> Result<Self, KeyringError> {
        let text = text.trim();
        let bytes = if text.len() == 64 {
            hex::decode(text).map_err(|_| KeyringError::BadKey)?
        } else {
            STANDARD.decode(text).map_err(|_| KeyringError::BadKey)?
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyringError::BadKey)?;
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            id,
        })
    }

    /// Which KEK this is (safe to log).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `v1.<kek id>.<base64 nonce ‖ ciphertext ‖ tag>`, bound to `spki`.
    pub fn seal(&self, spki: &str, plaintext: &Secret) -> Result<String, KeyringError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| KeyringError::Random)?;
        let mut data = plaintext.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(spki.as_bytes()),
                &mut data,
            )
            .map_err(|_| KeyringError::Damaged)?;
        let mut sealed = nonce.to_vec();
        sealed.extend(data);
        Ok(format!("{VERSION}.{}.{}", self.id, STANDARD.encode(sealed)))
    }

    /// The key `seal` sealed for `spki`.
    pub fn open(&self, spki: &str, sealed: &str) -> Result<Secret, KeyringError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyringError::Damaged);
        };
        if id != self.id {
            return Err(KeyringError::OtherKey(id.to_owned(), self.id.clone()));
        }
        let mut data = STANDARD.decode(body).map_err(|_| KeyringError::Damaged)?;
        if data.len() < NONCE_LEN {
            return Err(KeyringError::Damaged);
        }
        let mut rest = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| KeyringError::Damaged)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(spki.as_bytes()), &mut rest)
            .map_err(|_| KeyringError::Damaged)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| KeyringError::Damaged)?;
        Ok(Secret::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_bound_to_the_public_key() {
        let ring = Keyring::from_text(KEK).expect("kek");
        let key = Secret::new("-----BEGIN PRIVATE KEY-----\nabc\n".into());
        let sealed = ring.seal("spki-a", &key).expect("seal");
        assert!(!sealed.contains("PRIVATE") && sealed.starts_with("v1."));
        assert_ne!(
            sealed,
            ring.seal("spki-a", &key).expect("seal"),
            "fresh nonce"
        );
        assert_eq!(ring.open("spki-a", &sealed).expect("open"), key);
        assert_eq!(ring.open("spki-b", &sealed), Err(KeyringError::Damaged));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(ring.open("spki-a", &tampered).is_err());
    }

    #[test]
    fn another_kek_is_named_and_bad_keks_refused() {
        let a = Keyring::from_text(KEK).expect("kek");
        let b = Keyring::from_text(&STANDARD.encode([7u8; 32])).expect("base64 kek");
        let sealed = a.seal("s", &Secret::new("k".into())).expect("seal");
        assert!(matches!(
            b.open("s", &sealed),
            Err(KeyringError::OtherKey(..))
        ));
        assert!(Keyring::from_text("short").is_err());
        assert!(Keyring::from_text(&STANDARD.encode([1u8; 16])).is_err());
        assert!(!format!("{a:?}").contains("key:"));
    }
}
