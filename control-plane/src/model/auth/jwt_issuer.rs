//! JWT issuers: keys (inline, at a URI, or an HMAC secret reference),
//! algorithms, audiences, leeway, and the claims forwarded as headers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretRef, check_http_url};
use crate::model::{FieldError, Kind, NAME_PATTERN, Resource, check_name, is_header_name};

/// JWT signature algorithms ext-authz accepts. `none` is not one of them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

fn default_leeway_seconds() -> u32 {
    30
}
pub(super) fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_jwks_min_refresh_seconds() -> u32 {
    30
}
fn default_jwks_refresh_seconds() -> u32 {
    300
}

/// A trusted JWT issuer and how its tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
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
    /// The exact `iss` claim of this issuer's tokens.
    pub issuer: String,
    /// Where the issuer publishes its keys (fetched, cached, refreshed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The keys inline, as a JWKS document (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// The shared secret for HS256/384/512, by reference. Required for them,
    /// refused with any other algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<SecretRef>,
    pub algorithms: Vec<JwtAlgorithm>,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    #[serde(default = "default_leeway_seconds")]
    #[schemars(range(max = 300))]
    pub leeway_seconds: u32,
    /// The claim that names the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claims forwarded upstream: claim name -> request header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
    /// Floor between JWKS fetches caused by tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refresh_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub jwks_min_refresh_seconds: u32,
    /// Periodic JWKS refresh (also drops keys the issuer removed).
    #[serde(default = "default_jwks_refresh_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub jwks_refresh_seconds: u32,
}

/// Request headers a forwarded claim may not overwrite.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-api-key",
    "x-forwarded-for",
    "x-request-id",
    "x-envoy-original-path",
    "x-gatehouse-consumer",
    "x-gatehouse-plan",
];

impl Resource for JwtIssuer {
    const KIND: Kind = Kind::JwtIssuer;
    crate::model::ownership::owned!();

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if self.issuer.is_empty() || self.issuer.len() > 512 {
            errors.push(FieldError::new("issuer", "must be 1-512 characters"));
        }
        self.validate_keys(&mut errors);
        if self.audiences.is_empty() {
            errors.push(FieldError::new(
                "audiences",
                "at least one audience is required: tokens without a matching aud are refused",
            ));
        }
        for (i, audience) in self.audiences.iter().enumerate() {
            if audience.is_empty() || audience.len() > 512 {
                errors.push(FieldError::new(
                    format!("audiences[{i}]"),
                    "must be 1-512 characters",
                ));
            }
        }
        if self.leeway_seconds > 300 {
            errors.push(FieldError::new("leeway_seconds", "must be at most 300"));
        }
        if self.consumer_claim.is_empty() || self.consumer_claim.len() > 128 {
            errors.push(FieldError::new(
                "consumer_claim",
                "must be 1-128 characters",
            ));
        }
        if self.forward_claims.len() > 16 {
            errors.push(FieldError::new("forward_claims", "at most 16 claims"));
        }
        for (claim, header) in &self.forward_claims {
            let field = format!("forward_claims.{claim}");
            if claim.is_empty() || claim.len() > 128 {
                errors.push(FieldError::new(
                    &field,
                    "claim names must be 1-128 characters",
                ));
            }
            if !is_header_name(header) || header.to_ascii_lowercase() != *header {
                errors.push(FieldError::new(&field, "must be a lowercase header name"));
            } else if RESERVED_HEADERS.contains(&header.as_str()) || header.starts_with(':') {
                errors.push(FieldError::new(
                    &field,
                    format!("{header} is reserved and cannot carry a claim"),
                ));
            }
        }
        if !(1..=3600).contains(&self.jwks_min_refresh_seconds) {
            errors.push(FieldError::new(
                "jwks_min_refresh_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(10..=86_400).contains(&self.jwks_refresh_seconds) {
            errors.push(FieldError::new(
                "jwks_refresh_seconds",
                "must be between 10 and 86400",
            ));
        }
        errors
    }
}

impl JwtIssuer {
    fn validate_keys(&self, errors: &mut Vec<FieldError>) {
        if self.algorithms.is_empty() {
            errors.push(FieldError::new(
                "algorithms",
                "at least one algorithm is required",
            ));
        }
        let hmac = self.algorithms.iter().any(|a| a.is_hmac());
        let asymmetric = self.algorithms.iter().any(|a| !a.is_hmac());
        if hmac && asymmetric {
            errors.push(FieldError::new(
                "algorithms",
                "HMAC (HS*) and public-key algorithms cannot be mixed in one issuer",
            ));
        }
        let sources = [
            self.jwks_uri.is_some(),
            self.jwks.is_some(),
            self.hmac_secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            errors.push(FieldError::new(
                "jwks_uri",
                "exactly one of jwks_uri, jwks and hmac_secret is required",
            ));
        }
        if hmac && self.hmac_secret.is_none() {
            errors.push(FieldError::new(
                "hmac_secret",
                "HS* algorithms need an explicitly configured secret",
            ));
        }
        if asymmetric && self.hmac_secret.is_some() {
            errors.push(FieldError::new(
                "hmac_secret",
                "only for HS* algorithms; public-key algorithms use jwks_uri or jwks",
            ));
        }
        if let Some(secret) = &self.hmac_secret {
            secret.validate("hmac_secret", errors);
        }
        if let Some(uri) = &self.jwks_uri
            && let Err(e) = check_http_url(uri)
        {
            errors.push(FieldError::new("jwks_uri", e));
        }
        if let Some(jwks) = &self.jwks
            && let Err(e) = check_jwks(jwks)
        {
            errors.push(FieldError::new("jwks", e));
        }
    }
}

/// A JWKS document: `keys` holds public keys of a type the algorithms use.
fn check_jwks(jwks: &serde_json::Value) -> Result<(), String> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("must be an object with a \"keys\" array")?;
    if keys.is_empty() || keys.len() > 64 {
        return Err("must hold 1-64 keys".into());
    }
    for (i, key) in keys.iter().enumerate() {
        let kty = key.get("kty").and_then(|k| k.as_str());
        if !matches!(kty, Some("RSA" | "EC" | "OKP")) {
            return Err(format!(
                "keys[{i}].kty must be RSA, EC or OKP (symmetric keys are configured as hmac_secret)"
            ));
        }
        if key.get("d").is_some() {
            return Err(format!(
                "keys[{i}] is a private key: publish only public keys"
            ));
        }
        if keys.len() > 1 && key.get("kid").and_then(|k| k.as_str()).is_none() {
            return Err(format!(
                "keys[{i}] needs a kid when the set holds several keys"
            ));
        }
    }
    if serde_json::to_string(jwks).map_or(0, |s| s.len()) > 256 * 1024 {
        return Err("must be at most 256 KiB".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> JwtIssuer {
        serde_json::from_value(serde_json::json!({
            "name": "idp",
            "issuer": "https://idp.example.com/",
            "jwks_uri": "https://idp.example.com/.well-known/jwks.json",
            "algorithms": ["RS256", "ES256"],
            "audiences": ["api"],
        }))
        .unwrap()
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn issuer_defaults_are_safe() {
        let issuer = issuer();
        assert!(issuer.validate().is_empty());
        assert_eq!(issuer.consumer_claim, "sub");
        assert_eq!(issuer.leeway_seconds, 30);
        assert_eq!(issuer.jwks_min_refresh_seconds, 30);
    }

    #[test]
    fn alg_none_is_not_an_algorithm() {
        for alg in ["none", "None", "NONE"] {
            let result: Result<JwtIssuer, _> = serde_json::from_value(serde_json::json!({
                "name": "idp", "issuer": "x", "jwks_uri": "https://x/", "algorithms": [alg], "audiences": ["a"],
            }));
            assert!(result.is_err(), "{alg} accepted");
        }
    }

    #[test]
    fn hmac_needs_an_explicit_secret_and_cannot_mix() {
        let mut hs = issuer();
        hs.algorithms = vec![JwtAlgorithm::HS256];
        assert!(fields(hs.validate()).contains(&"hmac_secret".to_string()));
        hs.jwks_uri = None;
        hs.hmac_secret = Some(SecretRef::Env("JWT_SECRET".into()));
        assert!(hs.validate().is_empty());
        hs.algorithms.push(JwtAlgorithm::RS256);
        assert!(fields(hs.validate()).contains(&"algorithms".to_string()));
    }

    #[test]
    fn issuer_needs_exactly_one_key_source_and_an_audience() {
        let mut both = issuer();
        both.jwks = Some(serde_json::json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}));
        assert!(fields(both.validate()).contains(&"jwks_uri".to_string()));
        let mut no_aud = issuer();
        no_aud.audiences.clear();
        assert!(fields(no_aud.validate()).contains(&"audiences".to_string()));
    }

    #[test]
    fn inline_jwks_must_hold_public_keys() {
        let mut inline = issuer();
        inline.jwks_uri = None;
        inline.jwks = Some(serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
        assert!(fields(inline.validate()).contains(&"jwks".to_string()));
        inline.jwks =
            Some(serde_json::json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "y"}]}));
        assert!(fields(inline.validate()).contains(&"jwks".to_string()));
    }

    #[test]
    fn forwarded_claims_cannot_overwrite_reserved_headers() {
        let mut issuer = issuer();
        issuer
            .forward_claims
            .insert("sub".into(), "x-gatehouse-consumer".into());
        issuer
            .forward_claims
            .insert("email".into(), "Authorization".into());
        assert_eq!(
            fields(issuer.validate()),
            vec!["forward_claims.email", "forward_claims.sub"]
        );
    }
}
