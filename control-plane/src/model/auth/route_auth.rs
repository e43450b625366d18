//! A route's authentication policy: method, scopes, roles, failure mode,
//! and where JWTs are verified.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::check_tokens;
use crate::model::FieldError;

/// How a route's callers prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Public: Envoy does not call ext-authz at all.
    #[default]
    None,
    /// An API key in `x-api-key` (or the `api_key` query parameter).
    ApiKey,
    /// A JWT bearer token from a configured issuer.
    Jwt,
    /// An opaque bearer token checked by an introspection provider.
    Introspection,
    /// A client certificate (an `https` gateway with `client_certificates`)
    /// mapped to a consumer by its public key or a SAN.
    Mtls,
    /// Any configured method but `mtls`.
    Any,
}

impl AuthMethod {
    /// The methods ext-authz accepts, as carried in the route's context.
    pub fn accepted(self) -> &'static str {
        match self {
            AuthMethod::None => "",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Introspection => "introspection",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Any => "api_key,jwt,introspection",
        }
    }
}

/// What happens when ext-authz cannot be reached or fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse the request with the configured error status (the default).
    #[default]
    Closed,
    /// Let the request through, marked with `x-envoy-auth-failure-mode-allowed`.
    Open,
}

/// Where a JWT route's tokens are verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyIn {
    /// ext-authz: every method, consumer records (plan, roles), refetch on an unknown `kid`.
    #[default]
    ExtAuthz,
    /// Envoy's own `jwt_authn` filter, in process: no ext-authz call. `jwt`
    /// routes only, without roles; issuers with an HMAC secret are not
    /// accepted there, and no `x-gatehouse-plan` is set.
    Envoy,
}

fn default_true() -> bool {
    true
}

/// A route's authentication policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    pub method: AuthMethod,
    /// Every one of these must be granted (key scopes, or the JWT's `scope`/`scp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The consumer must hold every one of these roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Remove the credential (header or query parameter) before the request goes upstream.
    #[serde(default = "default_true")]
    pub strip_credentials: bool,
    /// Where tokens are verified (`envoy`: in process, for JWT-only routes).
    #[serde(default, skip_serializing_if = "VerifyIn::is_ext_authz")]
    pub verify_in: VerifyIn,
}

impl VerifyIn {
    fn is_ext_authz(&self) -> bool {
        *self == VerifyIn::ExtAuthz
    }
}

impl RouteAuth {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        check_tokens("auth.scopes", &self.scopes, errors);
        check_tokens("auth.roles", &self.roles, errors);
        if self.method == AuthMethod::None && (!self.scopes.is_empty() || !self.roles.is_empty()) {
            errors.push(FieldError::new(
                "auth.method",
                "scopes and roles need an authenticating method (api_key, jwt, introspection or any)",
            ));
        }
        if self.verify_in == VerifyIn::Envoy {
            if self.method != AuthMethod::Jwt {
                errors.push(FieldError::new(
                    "auth.verify_in",
                    "envoy verifies JWTs only: use it with method jwt",
                ));
            }
            if !self.roles.is_empty() {
                errors.push(FieldError::new(
                    "auth.roles",
                    "roles come from consumer records, which only ext-authz holds: use verify_in ext_authz",
                ));
            }
            if self.failure_mode != FailureMode::Closed {
                errors.push(FieldError::new(
                    "auth.failure_mode",
                    "a token verified in Envoy has no external call that could fail: remove failure_mode",
                ));
            }
        }
    }

    /// Tokens are verified by Envoy's `jwt_authn`, not ext-authz.
    pub fn verified_in_envoy(&self) -> bool {
        self.verify_in == VerifyIn::Envoy
    }

    pub fn is_protected(&self) -> bool {
        self.method != AuthMethod::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn public_routes_cannot_require_scopes() {
        let auth = RouteAuth {
            scopes: vec!["read".into()],
            ..RouteAuth::default()
        };
        let mut errors = Vec::new();
        auth.validate(&mut errors);
        assert_eq!(fields(errors), vec!["auth.method"]);
    }

    #[test]
    fn envoy_verifies_jwt_routes_without_roles_only() {
        let ok = RouteAuth {
            method: AuthMethod::Jwt,
            scopes: vec!["orders:read".into()],
            verify_in: VerifyIn::Envoy,
            ..RouteAuth::default()
        };
        let mut errors = Vec::new();
        ok.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let bad = RouteAuth {
            method: AuthMethod::Any,
            roles: vec!["admin".into()],
            failure_mode: FailureMode::Open,
            verify_in: VerifyIn::Envoy,
            ..RouteAuth::default()
        };
        bad.validate(&mut errors);
        assert_eq!(
            fields(errors),
            vec!["auth.verify_in", "auth.roles", "auth.failure_mode"]
        );
    }
}
