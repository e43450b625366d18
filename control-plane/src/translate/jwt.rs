//! JWTs verified inside Envoy (`auth.verify_in: envoy`): the `jwt_authn`
//! filter with a provider per issuer, the clusters remote JWKS are fetched
//! through, each route's requirement and scope check (RBAC), and the local
//! replies that give Envoy's own denials ext-authz's shape.
//!
//! - Such a route costs no ext-authz call: Envoy checks signature, `iss`,
//!   `aud`, `exp` (required) and `nbf` with the issuer's leeway, then copies
//!   the consumer claim to `x-gatehouse-consumer` and the forwarded claims to
//!   their headers. `jwt_authn` removes client-sent copies of those headers
//!   first; the route removes the other identity headers.
//! - The token's header lands in dynamic metadata under its issuer's key,
//!   and, for routes with scopes only, its payload. Per-route RBAC policies
//!   then refuse tokens with `crit` entries (Envoy ignores them; we
//!   understand none) or with an `alg` their issuer does not allow (401, as
//!   ext-authz), and tokens without the route's scopes (`scope` is split on
//!   spaces, `scp` may be a list; 403). The payload stays out of metadata
//!   otherwise: Envoy copies all of a request's metadata into its usage log
//!   entry, which made a JWT route cost a third more than a plain one.
//! - The filters are always in the chain (off until a route's per-route
//!   configuration switches them on), so an Envoy whose listener is still
//!   being replaced refuses (never skips) a requirement it lacks.
//! - The `jwt_authn` configuration is an ECDS resource named after the
//!   filter: issuer and key changes update it without replacing listeners.
//! - Denials: 401 `missing_credentials` / `invalid_token`, 403
//!   `insufficient_scope`, with ext-authz's JSON body and `WWW-Authenticate`
//!   (the 403's `scope=` read from the route's metadata).
//!   The local-reply mappers match on the refusing filter's response code
//!   details, so ext-authz's own answers pass untouched.
//!
//! Rooms: [`jwks`] (clusters for remote keys), [`rbac`] (token checks and
//! scopes), [`local_reply`] (denials in ext-authz's shape).

mod jwks;
mod local_reply;
mod rbac;

pub use jwks::{jwks_cluster_name, jwks_clusters};
pub use local_reply::local_replies;
pub use rbac::rbac_filters;
use rbac::{route_scopes, token_checks};

use gatehouse_proto::{core, hcm, jwt_authn, matcher, protobuf, route, to_any};

use super::duration_ms;
use crate::{
    model::ConfigState,
    model::{
        JwtIssuer, Route,
        auth::{RouteAuth, VerifyIn},
    },
    translate::TranslateError,
};

pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// A second RBAC filter, before the scope check: refuses tokens ext-authz
/// would call invalid (`crit` entries, an algorithm the issuer does not allow).
pub const TOKEN_CHECKS_FILTER: &str = "gatehouse.jwt_token_checks";
/// The deny policy of [`TOKEN_CHECKS_FILTER`]; Envoy names it in its details.
const INVALID_TOKEN_POLICY: &str = "invalid_token";
/// Dynamic metadata key of a verified token's payload (namespace
/// [`JWT_FILTER`]), written for routes with scopes only.
const PAYLOAD: &str = "payload";
/// How `jwt_authn` and RBAC name their refusals (response code details).
const JWT_DENIED: &str = "jwt_authn_access_denied";
const RBAC_DENIED: &str = "rbac_access_denied";
/// Route metadata namespace and key holding a route's required scopes.
const ROUTE_METADATA: &str = "gatehouse";
const SCOPE_KEY: &str = "scope";
/// A route's requirement, and the providers it accepts: the token is removed
/// before the request goes upstream or kept, and its payload is written to
/// metadata (for a scope check) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Requirement {
    keep: bool,
    scopes: bool,
}

impl Requirement {
    const ALL: [Requirement; 4] = [
        Requirement {
            keep: false,
            scopes: false,
        },
        Requirement {
            keep: true,
            scopes: false,
        },
        Requirement {
            keep: false,
            scopes: true,
        },
        Requirement {
            keep: true,
            scopes: true,
        },
    ];

    fn of(auth: &RouteAuth) -> Self {
        Self {
            keep: !auth.strip_credentials,
            scopes: !auth.scopes.is_empty(),
        }
    }

    /// `gatehouse.strip`, `gatehouse.keep+scopes`, …
    fn name(self) -> String {
        let token = if self.keep { "keep" } else { "strip" };
        format!("gatehouse.{token}{}", self.scopes_suffix())
    }

    /// An issuer's provider for this requirement: `idp`, `idp+keep+scopes`, …
    fn provider(self, issuer: &str) -> String {
        let keep = if self.keep { "+keep" } else { "" };
        format!("{issuer}{keep}{}", self.scopes_suffix())
    }

    fn scopes_suffix(self) -> &'static str {
        if self.scopes { "+scopes" } else { "" }
    }
}

/// Dynamic metadata key of a token's JOSE header, per issuer: which key is
/// present says which issuer's provider verified the token.
fn header_key(issuer: &str) -> String {
    format!("header:{issuer}")
}
/// Where Debian and most distributions keep the system's trusted CAs.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CONSUMER_HEADER: &str = "x-gatehouse-consumer";

/// The route's auth policy when Envoy verifies its tokens.
pub(super) fn envoy_policy(r: &Route) -> Option<&RouteAuth> {
    r.auth.as_ref().filter(|a| a.verify_in == VerifyIn::Envoy)
}

/// Issuers Envoy can verify: keys inline or at a URI. HMAC secrets are
/// references only ext-authz resolves, so those issuers stay there.
pub(super) fn envoy_issuers(state: &ConfigState) -> impl Iterator<Item = &JwtIssuer> {
    state
        .jwt_issuers
        .values()
        .filter(|i| i.hmac_secret.is_none() && (i.jwks.is_some() || i.jwks_uri.is_some()))
}

pub(super) fn exact(value: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(value.into())),
        ..Default::default()
    }
}

fn provider(issuer: &JwtIssuer, requirement: Requirement) -> jwt_authn::JwtProvider {
    use jwt_authn::jwt_provider::{JwksSourceSpecifier, NormalizePayload};
    let jwks = match (&issuer.jwks, &issuer.jwks_uri) {
        (Some(jwks), _) => JwksSourceSpecifier::LocalJwks(core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(jwks.to_string())),
            ..Default::default()
        }),
        (None, uri) => JwksSourceSpecifier::RemoteJwks(jwt_authn::RemoteJwks {
            http_uri: Some(core::HttpUri {
                uri: uri.clone().unwrap_or_default(),
                http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(
                    jwks_cluster_name(&issuer.name),
                )),
                timeout: Some(duration_ms(5_000)),
            }),
            cache_duration: Some(protobuf::Duration {
                seconds: i64::from(issuer.jwks_refresh_seconds),
                nanos: 0,
            }),
            // Fetched when the listener starts, not on the first request;
            // a failed fetch is retried after the issuer's refresh floor.
            async_fetch: Some(jwt_authn::JwksAsyncFetch {
                fast_listener: true,
                failed_refetch_duration: Some(protobuf::Duration {
                    seconds: i64::from(issuer.jwks_min_refresh_seconds),
                    nanos: 0,
                }),
            }),
            ..Default::default()
        }),
    };
    let mut claim_to_headers = vec![jwt_authn::JwtClaimToHeader {
        header_name: CONSUMER_HEADER.into(),
        claim_name: issuer.consumer_claim.clone(),
        ..Default::default()
    }];
    claim_to_headers.extend(issuer.forward_claims.iter().map(|(claim, header)| {
        jwt_authn::JwtClaimToHeader {
            header_name: header.clone(),
            claim_name: claim.clone(),
            ..Default::default()
        }
    }));
    jwt_authn::JwtProvider {
        issuer: issuer.issuer.clone(),
        audiences: issuer.audiences.clone(),
        require_expiration: true,
        forward: requirement.keep,
        // Only `Authorization: Bearer`, as ext-authz: no `access_token` query parameter.
        from_headers: vec![jwt_authn::JwtHeader {
            name: "authorization".into(),
            value_prefix: "Bearer ".into(),
        }],
        payload_in_metadata: if requirement.scopes {
            PAYLOAD.into()
        } else {
            String::new()
        },
        normalize_payload_in_metadata: requirement.scopes.then(|| NormalizePayload {
            space_delimited_claims: vec!["scope".into(), "scp".into()],
        }),
        header_in_metadata: header_key(&issuer.name),
        clock_skew_seconds: issuer.leeway_seconds,
        // Envoy caches tokens up to 4 KiB by default; ext-authz accepts 8 KiB.
        jwt_cache_config: Some(jwt_authn::JwtCacheConfig {
            jwt_cache_size: 1024,
            jwt_max_token_size: 8 * 1024,
        }),
        claim_to_headers,
        jwks_source_specifier: Some(jwks),
        ..Default::default()
    }
}

/// Any one of `providers`.
fn requirement(providers: Vec<String>) -> jwt_authn::JwtRequirement {
    use jwt_authn::jwt_requirement::RequiresType;
    let requires = match providers.as_slice() {
        [one] => RequiresType::ProviderName(one.clone()),
        _ => RequiresType::RequiresAny(jwt_authn::JwtRequirementOrList {
            requirements: providers
                .into_iter()
                .map(|p| jwt_authn::JwtRequirement {
                    requires_type: Some(RequiresType::ProviderName(p)),
                })
                .collect(),
        }),
    };
    jwt_authn::JwtRequirement {
        requires_type: Some(requires),
    }
}

/// The `jwt_authn` configuration, delivered over ECDS under the filter's
/// name: providers for the routes verified in Envoy (none when there are no
/// such routes).
pub fn jwt_filter_config(state: &ConfigState) -> core::TypedExtensionConfig {
    let policies: Vec<&RouteAuth> = state.routes.values().filter_map(envoy_policy).collect();
    let mut config = jwt_authn::JwtAuthentication::default();
    for wanted in Requirement::ALL {
        if !policies.iter().any(|p| Requirement::of(p) == wanted) {
            continue;
        }
        let mut names = Vec::new();
        for issuer in envoy_issuers(state) {
            let provider_name = wanted.provider(&issuer.name);
            config
                .providers
                .insert(provider_name.clone(), provider(issuer, wanted));
            names.push(provider_name);
        }
        if !names.is_empty() {
            config
                .requirement_map
                .insert(wanted.name(), requirement(names));
        }
    }
    core::TypedExtensionConfig {
        name: JWT_FILTER.into(),
        typed_config: Some(to_any(&config)),
    }
}

/// The `jwt_authn` filter in the listeners: its configuration comes over
/// ECDS, so changing issuers or keys leaves the listeners (and their
/// connections) alone. Until the first configuration arrives Envoy keeps
/// the listener warming; should it fail, the default has no providers, so
/// every route verified in Envoy is refused rather than let through.
pub fn jwt_filter() -> hcm::HttpFilter {
    use prost::Name;
    hcm::HttpFilter {
        name: JWT_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::ConfigDiscovery(
            core::ExtensionConfigSource {
                config_source: Some(super::ads()),
                default_config: Some(to_any(&jwt_authn::JwtAuthentication::default())),
                apply_default_config_without_warming: false,
                type_urls: vec![jwt_authn::JwtAuthentication::type_url()],
            },
        )),
        ..Default::default()
    }
}

/// Applies a route verified in Envoy: its requirement, its RBAC policy, and
/// the removal of identity headers `jwt_authn` does not set itself.
pub fn apply_route(
    auth: &RouteAuth,
    envoy: &mut route::Route,
    spoofable: &[String],
    state: &ConfigState,
) {
    envoy.typed_per_filter_config.insert(
        JWT_FILTER.into(),
        to_any(&jwt_authn::PerRouteConfig {
            requirement_specifier: Some(
                jwt_authn::per_route_config::RequirementSpecifier::RequirementName(
                    Requirement::of(auth).name(),
                ),
            ),
        }),
    );
    envoy
        .typed_per_filter_config
        .insert(TOKEN_CHECKS_FILTER.into(), to_any(&token_checks(state)));
    if !auth.scopes.is_empty() {
        envoy
            .typed_per_filter_config
            .insert(RBAC_FILTER.into(), to_any(&route_scopes(&auth.scopes)));
        // For the 403 challenge's `scope=` (see `local_replies`).
        envoy
            .metadata
            .get_or_insert_with(Default::default)
            .filter_metadata
            .insert(
                ROUTE_METADATA.into(),
                protobuf::Struct {
                    fields: [(
                        SCOPE_KEY.to_owned(),
                        protobuf::Value {
                            kind: Some(protobuf::value::Kind::StringValue(auth.scopes.join(" "))),
                        },
                    )]
                    .into_iter()
                    .collect(),
                },
            );
    }
    let set_by_envoy: Vec<&str> = std::iter::once(CONSUMER_HEADER)
        .chain(
            envoy_issuers(state)
                .flat_map(|i| i.forward_claims.values())
                .map(String::as_str),
        )
        .collect();
    envoy.request_headers_to_remove = spoofable
        .iter()
        .filter(|h| !set_by_envoy.contains(&h.as_str()))
        .cloned()
        .collect();
}

/// Routes verified in Envoy whose requirement has no provider: no issuer
/// Envoy can use is configured.
pub fn check_issuers(state: &ConfigState) -> Result<(), TranslateError> {
    if envoy_issuers(state).next().is_some() {
        return Ok(());
    }
    match state.routes.values().find(|r| envoy_policy(r).is_some()) {
        Some(route) => Err(TranslateError::NoEnvoyIssuer(route.name.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use gatehouse_proto::rbac_filter;
    use prost::Message;
    use serde_json::json;

    use super::*;

    pub(super) fn issuer(value: serde_json::Value) -> JwtIssuer {
        serde_json::from_value(value).unwrap()
    }

    pub(super) fn route(name: &str, auth: serde_json::Value) -> Route {
        serde_json::from_value(json!({"name": name, "match": {"path_prefix": "/"},
            "destination": {"service": "s"}, "auth": auth}))
        .unwrap()
    }

    /// Issuers: inline keys, keys at a URI, an HMAC secret; one route verified in Envoy.
    pub(super) fn state() -> ConfigState {
        let mut state = ConfigState::default();
        for i in [
            issuer(json!({"name": "idp", "issuer": "https://idp.test/",
                "jwks": {"keys": []}, "algorithms": ["RS256"], "audiences": ["api"],
                "forward_claims": {"email": "x-user-email"}})),
            issuer(json!({"name": "remote", "issuer": "https://remote.test/",
                "jwks_uri": "https://keys.remote.test:8443/jwks.json",
                "algorithms": ["ES256"], "audiences": ["api"], "consumer_claim": "client_id"})),
            issuer(json!({"name": "shared", "issuer": "https://shared.test/",
                "hmac_secret": {"env": "SHARED_SECRET"}, "algorithms": ["HS256"],
                "audiences": ["api"]})),
        ] {
            state.jwt_issuers.insert(i.name.clone(), i);
        }
        let r = route(
            "orders",
            json!({"method": "jwt", "verify_in": "envoy", "scopes": ["orders:read"]}),
        );
        state.routes.insert(r.name.clone(), r);
        state
    }

    fn filter_config(state: &ConfigState) -> jwt_authn::JwtAuthentication {
        let typed = jwt_filter_config(state);
        assert_eq!(typed.name, JWT_FILTER, "ECDS resource named as the filter");
        let any = typed.typed_config.unwrap();
        jwt_authn::JwtAuthentication::decode(any.value.as_slice()).unwrap()
    }

    #[test]
    fn issuers_become_providers_with_ext_authz_rules() {
        let config = filter_config(&state());
        let mut names: Vec<&String> = config.providers.keys().collect();
        names.sort();
        // The HMAC issuer's secret stays with ext-authz. The one route has
        // scopes: its providers put the payload in metadata.
        assert_eq!(names, ["idp+scopes", "remote+scopes"]);
        let idp = &config.providers["idp+scopes"];
        assert_eq!(idp.payload_in_metadata, PAYLOAD);
        assert_eq!(idp.header_in_metadata, "header:idp");
        assert_eq!(idp.issuer, "https://idp.test/");
        assert_eq!(idp.audiences, ["api"]);
        assert!(idp.require_expiration, "exp is required");
        assert!(!idp.forward, "the route strips the token");
        assert_eq!(idp.from_headers.len(), 1);
        assert_eq!(
            (
                idp.from_headers[0].name.as_str(),
                idp.from_headers[0].value_prefix.as_str()
            ),
            ("authorization", "Bearer ")
        );
        assert!(idp.from_params.is_empty(), "no token in the query");
        let headers: Vec<(&str, &str)> = idp
            .claim_to_headers
            .iter()
            .map(|c| (c.claim_name.as_str(), c.header_name.as_str()))
            .collect();
        assert_eq!(
            headers,
            [("sub", CONSUMER_HEADER), ("email", "x-user-email")]
        );
        let cache = idp.jwt_cache_config.unwrap();
        assert_eq!(cache.jwt_max_token_size, 8 * 1024);
        assert_eq!(
            config.providers["remote+scopes"].claim_to_headers[0].claim_name,
            "client_id"
        );
        let Some(jwt_authn::jwt_provider::JwksSourceSpecifier::RemoteJwks(remote)) =
            &config.providers["remote+scopes"].jwks_source_specifier
        else {
            panic!("remote keys");
        };
        let uri = remote.http_uri.as_ref().unwrap();
        assert_eq!(
            uri.http_upstream_type,
            Some(core::http_uri::HttpUpstreamType::Cluster(
                "gatehouse_jwks_remote".into()
            ))
        );
        // Only the requirement a route uses exists; it accepts either issuer.
        assert_eq!(config.requirement_map.len(), 1);
        let Some(jwt_authn::jwt_requirement::RequiresType::RequiresAny(any)) =
            &config.requirement_map["gatehouse.strip+scopes"].requires_type
        else {
            panic!("any of the issuers");
        };
        assert_eq!(any.requirements.len(), 2);
    }

    #[test]
    fn only_routes_with_scopes_put_the_payload_in_metadata() {
        let mut state = state();
        for (name, auth) in [
            ("plain", json!({"method": "jwt", "verify_in": "envoy"})),
            (
                "kept",
                json!({"method": "jwt", "verify_in": "envoy", "strip_credentials": false}),
            ),
        ] {
            state.routes.insert(name.into(), route(name, auth));
        }
        let config = filter_config(&state);
        let mut requirements: Vec<&String> = config.requirement_map.keys().collect();
        requirements.sort();
        assert_eq!(
            requirements,
            [
                "gatehouse.keep",
                "gatehouse.strip",
                "gatehouse.strip+scopes"
            ]
        );
        for (name, forward, payload) in [
            ("idp", false, ""),
            ("idp+keep", true, ""),
            ("idp+scopes", false, PAYLOAD),
        ] {
            let provider = &config.providers[name];
            assert_eq!(provider.forward, forward, "{name}");
            assert_eq!(provider.payload_in_metadata, payload, "{name}");
            assert_eq!(
                provider.normalize_payload_in_metadata.is_some(),
                !payload.is_empty()
            );
            // Every provider writes the header, under its issuer's key.
            assert_eq!(provider.header_in_metadata, "header:idp", "{name}");
        }
    }

    #[test]
    fn without_routes_verified_in_envoy_the_filter_is_empty() {
        let mut state = state();
        state.routes.clear();
        let config = filter_config(&state);
        assert!(config.providers.is_empty() && config.requirement_map.is_empty());
        assert!(jwks_clusters(&state).is_empty());
        assert!(check_issuers(&state).is_ok());
    }

    #[test]
    fn a_route_names_its_requirement_checks_scopes_and_drops_spoofed_headers() {
        let state = state();
        let auth = state.routes["orders"].auth.clone().unwrap();
        let mut envoy = route::Route::default();
        let spoofable = [
            CONSUMER_HEADER.to_owned(),
            "x-gatehouse-plan".to_owned(),
            "x-user-email".to_owned(),
        ];
        apply_route(&auth, &mut envoy, &spoofable, &state);
        let per_route = jwt_authn::PerRouteConfig::decode(
            envoy.typed_per_filter_config[JWT_FILTER].value.as_slice(),
        )
        .unwrap();
        assert_eq!(
            per_route.requirement_specifier,
            Some(
                jwt_authn::per_route_config::RequirementSpecifier::RequirementName(
                    "gatehouse.strip+scopes".into()
                )
            )
        );
        // jwt_authn replaces the consumer and claim headers itself.
        assert_eq!(envoy.request_headers_to_remove, ["x-gatehouse-plan"]);
        let rules = |filter: &str| {
            let per_route = rbac_filter::RbacPerRoute::decode(
                envoy.typed_per_filter_config[filter].value.as_slice(),
            )
            .unwrap();
            per_route.rbac.unwrap().rules.unwrap()
        };
        use gatehouse_proto::rbac::principal::Identifier::{AndIds, NotId, OrIds};
        // Deny tokens with `crit`, or not from an issuer allowing their `alg`.
        let checks = rules(TOKEN_CHECKS_FILTER);
        assert_eq!(
            checks.action,
            gatehouse_proto::rbac::rbac::Action::Deny as i32
        );
        let Some(OrIds(invalid)) = &checks.policies[INVALID_TOKEN_POLICY].principals[0].identifier
        else {
            panic!("any of");
        };
        // `crit` under each issuer's key, then no issuer allowing the `alg`.
        assert_eq!(invalid.ids.len(), 3);
        let Some(NotId(allowed)) = &invalid.ids[2].identifier else {
            panic!("not allowed");
        };
        let Some(OrIds(issuers)) = &allowed.identifier else {
            panic!("any issuer");
        };
        // idp and remote; the HMAC issuer is ext-authz's.
        assert_eq!(issuers.ids.len(), 2);
        // Allow only tokens granting the route's scope (`scope` or `scp`).
        let scopes = rules(RBAC_FILTER);
        assert_eq!(
            scopes.action,
            gatehouse_proto::rbac::rbac::Action::Allow as i32
        );
        let Some(AndIds(all)) = &scopes.policies["scopes"].principals[0].identifier else {
            panic!("all of");
        };
        assert_eq!(all.ids.len(), 1);
        let Some(OrIds(either)) = &all.ids[0].identifier else {
            panic!("scope or scp");
        };
        assert_eq!(either.ids.len(), 2);
        // The scopes the 403 challenge names.
        let scope =
            &envoy.metadata.as_ref().unwrap().filter_metadata[ROUTE_METADATA].fields[SCOPE_KEY];
        assert_eq!(
            scope.kind,
            Some(protobuf::value::Kind::StringValue("orders:read".into()))
        );

        // Without scopes there is no scope check, but the token checks stay.
        let mut plain = route::Route::default();
        let no_scopes: RouteAuth =
            serde_json::from_value(json!({"method": "jwt", "verify_in": "envoy"})).unwrap();
        apply_route(&no_scopes, &mut plain, &spoofable, &state);
        assert!(
            plain
                .typed_per_filter_config
                .contains_key(TOKEN_CHECKS_FILTER)
        );
        assert!(!plain.typed_per_filter_config.contains_key(RBAC_FILTER));
        assert!(plain.metadata.is_none());
    }

    #[test]
    fn a_route_verified_in_envoy_needs_an_issuer_envoy_can_use() {
        let mut state = state();
        state.jwt_issuers.retain(|name, _| name == "shared");
        assert!(check_issuers(&state).is_err());
    }
}
