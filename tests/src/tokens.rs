//! Test JWTs: signing keys from `tests/fixtures/jwt` (test-only), their JWKS,
//! well-formed tokens, and the raw pieces to craft hostile ones.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

use crate::workspace_root;

/// A test signing key.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
}

impl TestKey {
    /// `file` in `tests/fixtures/jwt`: rsa-1.pem, rsa-2.pem, ec-p256.pem, ed25519.pem.
    pub fn load(file: &str, alg: Algorithm, kid: &str) -> Self {
        let pem = std::fs::read(workspace_root().join("tests/fixtures/jwt").join(file))
            .unwrap_or_else(|e| panic!("fixture {file}: {e}"));
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                EncodingKey::from_rsa_pem(&pem)
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => panic!("no PEM fixture for {alg:?}"),
        }
        .expect("fixture key");
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
        }
    }

    pub fn rsa(kid: &str) -> Self {
        Self::load("rsa-1.pem", Algorithm::RS256, kid)
    }

    /// The public JWK, with `kid` and `alg`.
    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).expect("jwk");
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).expect("jwk json")
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    /// Signs with an arbitrary header (e.g. `crit`, `jku`).
    pub fn sign_with_header(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims valid for an hour, for issuer `iss` and audience `aud`.
pub fn claims(iss: &str, aud: &str, sub: &str) -> Value {
    json!({"iss": iss, "aud": aud, "sub": sub, "exp": now() + 3600, "iat": now()})
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled from raw JSON parts and a raw signature.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// HS256 over `header.claims` with `secret` (for key-confusion tokens).
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let mut header = header.clone();
    header["alg"] = json!("HS256");
    let key = EncodingKey::from_secret(secret);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).expect("hmac");
    format!("{signing_input}.{signature}")
}
