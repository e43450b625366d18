//! Authentication → Envoy and ext-authz: the ext_authz filters and cluster,
//! each route's policy, and the `AuthConfig` resource streamed to ext-authz.
//!
//! - Two ext_authz filters sit before the router, both disabled by default:
//!   one fails closed, one fails open. A protected route enables the one its
//!   failure mode names and carries its policy in the context extensions, so
//!   a route and its policy always reach Envoy together. Public routes (and
//!   404s) never call ext-authz.
//! - Public routes drop client-sent identity headers (`x-gatehouse-*` and
//!   forwarded-claim headers); on protected routes ext-authz does it.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use gatehouse_proto::{auth, cluster, core, ext_authz, hcm, http_types, route, to_any};

use super::{TranslateError, grpc_cluster, grpc_service};
use crate::{
    model::ConfigState,
    model::{
        Route,
        auth::{ApiKeyStatus, AuthMethod, FailureMode, SecretRef},
    },
};

/// The cluster of ext-authz servers.
pub const EXT_AUTHZ_CLUSTER: &str = "gatehouse_ext_authz";
/// The fail-closed filter (the default for protected routes).
pub const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// The fail-open filter, for routes that choose `failure_mode: open`.
pub const EXT_AUTHZ_FAIL_OPEN_FILTER: &str = "gatehouse.ext_authz.fail_open";
/// Identity headers ext-authz sets; clients may never send them.
/// What ext-authz tells upstreams about the caller (consumer, plan, the
/// credential's scopes and the consumer's roles, space-separated); never
/// taken from a client.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-gatehouse-consumer",
    "x-gatehouse-plan",
    "x-gatehouse-scopes",
    "x-gatehouse-roles",
];

/// Where Envoy reaches ext-authz and how it treats failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzSettings {
    pub address: SocketAddr,
    pub timeout_ms: u32,
    /// The status Envoy answers with when a fail-closed check cannot complete.
    pub status_on_error: u16,
}

impl Default for ExtAuthzSettings {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 18001)),
            timeout_ms: 250,
            status_on_error: 503,
        }
    }
}

/// A static HTTP/2 cluster for ext-authz (gRPC).
pub fn ext_authz_cluster(settings: &ExtAuthzSettings) -> cluster::Cluster {
    grpc_cluster(EXT_AUTHZ_CLUSTER, settings.address)
}

/// The two ext_authz filters, disabled unless a route enables one.
/// No client certificate identifies two consumers.
pub fn check_certificate_identities(state: &ConfigState) -> Result<(), TranslateError> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for consumer in state.consumers.values() {
        for key in consumer.certificates.iter().filter_map(|c| c.key()) {
            if let Some(first) = seen.insert(key.clone(), &consumer.name)
                && first != consumer.name
            {
                return Err(TranslateError::CertificateIdentityTwice {
                    identity: key,
                    first: first.to_owned(),
                    second: consumer.name.clone(),
                });
            }
        }
    }
    Ok(())
}

pub fn ext_authz_filters(settings: &ExtAuthzSettings) -> Vec<hcm::HttpFilter> {
    [
        (EXT_AUTHZ_FILTER, false, "closed"),
        (EXT_AUTHZ_FAIL_OPEN_FILTER, true, "open"),
    ]
    .into_iter()
    .map(|(name, fail_open, stat_prefix)| {
        let config = ext_authz::ExtAuthz {
            transport_api_version: core::ApiVersion::V3 as i32,
            failure_mode_allow: fail_open,
            failure_mode_allow_header_add: fail_open,
            status_on_error: Some(http_types::HttpStatus {
                code: i32::from(settings.status_on_error),
            }),
            stat_prefix: stat_prefix.into(),
            // `mtls` routes: the client certificate Envoy verified.
            include_peer_certificate: true,
            services: Some(ext_authz::ext_authz::Services::GrpcService(grpc_service(
                EXT_AUTHZ_CLUSTER,
                Some(settings.timeout_ms),
            ))),
            ..Default::default()
        };
        hcm::HttpFilter {
            name: name.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(&config))),
            disabled: true,
            ..Default::default()
        }
    })
    .collect()
}

/// Headers a client could use to impersonate someone on a public route.
pub fn spoofable_headers(state: &ConfigState) -> Vec<String> {
    let mut headers: BTreeSet<String> = IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect();
    for issuer in state.jwt_issuers.values() {
        headers.extend(issuer.forward_claims.values().cloned());
    }
    headers.into_iter().collect()
}

/// Applies a route's auth policy to its Envoy route.
pub fn apply_route_policy(
    r: &Route,
    envoy: &mut route::Route,
    spoofable: &[String],
    state: &ConfigState,
) {
    let Some(auth) = r.auth.as_ref().filter(|a| a.method != AuthMethod::None) else {
        envoy.request_headers_to_remove = spoofable.to_vec();
        return;
    };
    if auth.verified_in_envoy() {
        super::jwt::apply_route(auth, envoy, spoofable, state);
        return;
    }
    use auth::context;
    let mut context_extensions = HashMap::from([
        (context::ROUTE.to_owned(), r.name.clone()),
        (
            context::METHODS.to_owned(),
            auth.method.accepted().to_owned(),
        ),
    ]);
    if !auth.scopes.is_empty() {
        context_extensions.insert(context::SCOPES.into(), auth.scopes.join(" "));
    }
    if !auth.roles.is_empty() {
        context_extensions.insert(context::ROLES.into(), auth.roles.join(" "));
    }
    if auth.strip_credentials {
        context_extensions.insert(context::STRIP_CREDENTIALS.into(), "1".into());
    }
    if r.websocket.is_some() {
        context_extensions.insert(context::WEBSOCKET.into(), "1".into());
    }
    let per_route = ext_authz::ExtAuthzPerRoute {
        r#override: Some(ext_authz::ext_authz_per_route::Override::CheckSettings(
            ext_authz::CheckSettings {
                context_extensions,
                ..Default::default()
            },
        )),
    };
    let filter = match auth.failure_mode {
        FailureMode::Closed => EXT_AUTHZ_FILTER,
        FailureMode::Open => EXT_AUTHZ_FAIL_OPEN_FILTER,
    };
    envoy
        .typed_per_filter_config
        .insert(filter.into(), to_any(&per_route));
}

/// Everything ext-authz decides from, as of `now_ms`: consumers with their
/// usable keys, issuers and introspection providers.
pub fn auth_config(state: &ConfigState, now_ms: i64) -> auth::AuthConfig {
    let mut consumers: Vec<auth::Consumer> = state
        .consumers
        .values()
        .map(|c| auth::Consumer {
            name: c.name.clone(),
            plan: c.plan.clone().unwrap_or_default(),
            roles: c.roles.clone(),
            metadata: c.metadata.clone().into_iter().collect(),
            api_keys: Vec::new(),
            certificates: c
                .certificates
                .iter()
                .map(|i| auth::CertificateIdentity {
                    spki_sha256: i.spki_sha256.clone().unwrap_or_default(),
                    uri: i.uri.clone().unwrap_or_default(),
                    dns: i.dns.clone().unwrap_or_default().to_ascii_lowercase(),
                    scopes: i.scopes.clone(),
                })
                .collect(),
        })
        .collect();
    let mut keys: Vec<_> = state
        .api_keys
        .iter()
        .filter(|k| k.status(now_ms) == ApiKeyStatus::Active)
        .collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    for key in keys {
        let Ok(consumer) = consumers.binary_search_by(|c| c.name.as_str().cmp(&key.consumer))
        else {
            continue;
        };
        let Ok(sha256) = hex::decode(&key.sha256) else {
            continue;
        };
        consumers[consumer].api_keys.push(auth::ApiKey {
            id: key.id.clone(),
            sha256,
            scopes: key.scopes.clone(),
            expires_at: key.expires_at_ms.map_or(0, |ms| ms.div_euclid(1000)),
        });
    }
    auth::AuthConfig {
        consumers,
        jwt_issuers: state
            .jwt_issuers
            .values()
            .map(|i| auth::JwtIssuer {
                name: i.name.clone(),
                issuer: i.issuer.clone(),
                jwks_uri: i.jwks_uri.clone().unwrap_or_default(),
                jwks_json: i.jwks.as_ref().map(|j| j.to_string()).unwrap_or_default(),
                hmac_secret: i.hmac_secret.as_ref().map(secret_ref),
                algorithms: i.algorithms.iter().map(|a| a.as_str().to_owned()).collect(),
                audiences: i.audiences.clone(),
                leeway_seconds: i.leeway_seconds,
                consumer_claim: i.consumer_claim.clone(),
                forward_claims: i.forward_claims.clone().into_iter().collect(),
                jwks_min_refresh_seconds: i.jwks_min_refresh_seconds,
                jwks_refresh_seconds: i.jwks_refresh_seconds,
            })
            .collect(),
        introspection_providers: state
            .introspection_providers
            .values()
            .map(|p| auth::IntrospectionProvider {
                name: p.name.clone(),
                endpoint: p.endpoint.clone(),
                client_id: p.client_id.clone(),
                client_secret: Some(secret_ref(&p.client_secret)),
                max_cache_seconds: p.max_cache_seconds,
                timeout_ms: p.timeout_ms,
                consumer_claim: p.consumer_claim.clone(),
            })
            .collect(),
    }
}

fn secret_ref(secret: &SecretRef) -> auth::SecretRef {
    use auth::secret_ref::Source;
    auth::SecretRef {
        source: Some(match secret {
            SecretRef::Env(name) => Source::Env(name.clone()),
            SecretRef::File(path) => Source::File(path.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::model::{Consumer, auth::StoredApiKey};

    fn route(json: serde_json::Value) -> Route {
        serde_json::from_value(json).unwrap()
    }

    fn base(auth: serde_json::Value) -> Route {
        route(serde_json::json!({
            "name": "orders",
            "match": {"path_prefix": "/orders"},
            "destination": {"service": "orders"},
            "auth": auth,
        }))
    }

    #[test]
    fn protected_routes_enable_one_filter_with_their_policy() {
        let r = base(
            serde_json::json!({"method": "jwt", "scopes": ["orders:read", "orders:write"], "roles": ["buyer"]}),
        );
        let mut envoy = route::Route::default();
        apply_route_policy(
            &r,
            &mut envoy,
            &["x-gatehouse-consumer".into()],
            &ConfigState::default(),
        );
        assert!(envoy.request_headers_to_remove.is_empty());
        let any = &envoy.typed_per_filter_config[EXT_AUTHZ_FILTER];
        let per_route = ext_authz::ExtAuthzPerRoute::decode(any.value.as_slice()).unwrap();
        let Some(ext_authz::ext_authz_per_route::Override::CheckSettings(settings)) =
            per_route.r#override
        else {
            panic!("no check settings");
        };
        let ctx = settings.context_extensions;
        assert_eq!(ctx[auth::context::ROUTE], "orders");
        assert_eq!(ctx[auth::context::METHODS], "jwt");
        assert_eq!(ctx[auth::context::SCOPES], "orders:read orders:write");
        assert_eq!(ctx[auth::context::ROLES], "buyer");
        assert_eq!(ctx[auth::context::STRIP_CREDENTIALS], "1");
    }

    #[test]
    fn fail_open_routes_use_the_fail_open_filter() {
        let r = base(
            serde_json::json!({"method": "any", "failure_mode": "open", "strip_credentials": false}),
        );
        let mut envoy = route::Route::default();
        apply_route_policy(&r, &mut envoy, &[], &ConfigState::default());
        assert!(
            envoy
                .typed_per_filter_config
                .contains_key(EXT_AUTHZ_FAIL_OPEN_FILTER)
        );
        assert!(!envoy.typed_per_filter_config.contains_key(EXT_AUTHZ_FILTER));
    }

    #[test]
    fn public_routes_skip_ext_authz_and_drop_identity_headers() {
        let r = base(serde_json::json!({"method": "none"}));
        let mut envoy = route::Route::default();
        let spoofable = vec![
            "x-gatehouse-consumer".to_string(),
            "x-user-email".to_string(),
        ];
        apply_route_policy(&r, &mut envoy, &spoofable, &ConfigState::default());
        assert!(envoy.typed_per_filter_config.is_empty());
        assert_eq!(envoy.request_headers_to_remove, spoofable);
    }

    #[test]
    fn filters_are_disabled_by_default_and_fail_as_named() {
        let filters = ext_authz_filters(&ExtAuthzSettings::default());
        assert!(filters.iter().all(|f| f.disabled));
        let configs: Vec<ext_authz::ExtAuthz> = filters
            .iter()
            .map(|f| match &f.config_type {
                Some(hcm::http_filter::ConfigType::TypedConfig(any)) => {
                    ext_authz::ExtAuthz::decode(any.value.as_slice()).unwrap()
                }
                _ => panic!("untyped filter"),
            })
            .collect();
        assert!(!configs[0].failure_mode_allow);
        assert!(configs[1].failure_mode_allow);
        assert_eq!(configs[0].status_on_error.as_ref().unwrap().code, 503);
    }

    #[test]
    fn auth_config_carries_only_usable_keys() {
        let mut state = ConfigState::default();
        state.consumers.insert(
            "alice".into(),
            Consumer {
                owner: None,
                labels: Default::default(),
                shared: false,
                name: "alice".into(),
                plan: Some("pro".into()),
                roles: vec!["buyer".into()],
                metadata: Default::default(),
                certificates: Vec::new(),
            },
        );
        let key = |id: &str, expires: Option<i64>, revoked: Option<i64>| StoredApiKey {
            id: id.into(),
            consumer: "alice".into(),
            sha256: "00".repeat(32),
            scopes: vec![],
            created_at_ms: 0,
            expires_at_ms: expires,
            revoked_at_ms: revoked,
        };
        state.api_keys = vec![
            key("active", None, None),
            key("grace", Some(20_000), None),
            key("expired", Some(5_000), None),
            key("revoked", None, Some(1)),
        ];
        let config = auth_config(&state, 10_000);
        let alice = &config.consumers[0];
        assert_eq!(alice.plan, "pro");
        let ids: Vec<_> = alice.api_keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, vec!["active", "grace"]);
        assert_eq!(alice.api_keys[1].expires_at, 20);
        assert_eq!(alice.api_keys[0].sha256.len(), 32);
    }
}
