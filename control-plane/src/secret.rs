//! Secrets and how they are made: a type that never prints, admin tokens and
//! API keys minted from the OS's randomness, and the SHA-256 that is stored
//! instead of them. Used by the admin API (tokens, keys) and the xDS side
//! (the xDS token), so neither imports the other.

use std::fmt;

use sha2::{Digest, Sha256};

/// Prefix of every admin token Gatehouse issues (recognisable in secret scanners).
pub const TOKEN_PREFIX: &str = "ghadm_";
/// Shortest bootstrap token accepted.
pub const MIN_BOOTSTRAP_LEN: usize = 32;

/// A secret that never reaches `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Read from JSON as a plain string (write-only fields); never written back.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

/// A new token: the secret (shown once), its hash and display prefix.
pub struct IssuedToken {
    pub secret: Secret,
    pub hash: String,
    pub prefix: String,
}

/// A new admin token.
pub fn issue_admin_token() -> Result<IssuedToken, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let prefix = secret[..TOKEN_PREFIX.len() + 6].to_owned();
    Ok(IssuedToken {
        hash: hash(&secret),
        prefix,
        secret: Secret(secret),
    })
}

/// A new xDS token (printable ASCII, as it travels in gRPC metadata).
pub fn issue_xds_token() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(Secret(format!("ghx_{}", hex::encode(bytes))))
}

/// A new node or fleet xDS token (`ghn_` + 64 hex digits), its hash and
/// display prefix.
pub fn issue_node_token() -> Result<IssuedToken, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    let secret = format!("ghn_{}", hex::encode(bytes));
    Ok(IssuedToken {
        hash: hash(&secret),
        prefix: secret[..10].to_owned(),
        secret: Secret(secret),
    })
}

/// The hex SHA-256 of a secret, as stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Every Gatehouse API key starts with this, so leaked keys are recognisable
/// (secret scanners) and never confused with JWTs.
pub const API_KEY_PREFIX: &str = "gk_";

/// A freshly minted key: `gk_<12 hex id>_<64 hex secret>` (256 bits of
/// randomness in the secret), and the SHA-256 that is stored instead of it.
pub struct MintedKey {
    pub id: String,
    pub key: String,
    pub sha256: String,
}

pub fn mint_api_key() -> Result<MintedKey, getrandom::Error> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)?;
    getrandom::getrandom(&mut secret)?;
    let id = hex::encode(id);
    let key = format!("{API_KEY_PREFIX}{id}_{}", hex::encode(secret));
    let sha256 = hash(&key);
    Ok(MintedKey { id, key, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_prefixed_random_and_hashed() {
        let a = mint_api_key().unwrap();
        let b = mint_api_key().unwrap();
        assert!(a.key.starts_with(&format!("gk_{}_", a.id)));
        assert_eq!(a.key.len(), 3 + 12 + 1 + 64);
        assert_ne!(a.key, b.key);
        assert_ne!(a.sha256, b.sha256);
        assert!(!a.sha256.contains(&a.key[16..]));
    }
}
