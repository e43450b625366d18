//! The RBAC side of routes verified in Envoy: token checks ext-authz would
//! also make (`crit`, allowed `alg`) and the route's scopes, as per-route
//! policies over the metadata `jwt_authn` writes.

use std::collections::HashMap;

use gatehouse_proto::{hcm, matcher, rbac, rbac_filter, to_any};

use super::{
    INVALID_TOKEN_POLICY, JWT_FILTER, PAYLOAD, RBAC_FILTER, TOKEN_CHECKS_FILTER, envoy_issuers,
    exact, header_key,
};
use crate::model::ConfigState;

/// The two RBAC filters (token checks, then scopes), without rules: only
/// routes verified in Envoy give them rules.
pub fn rbac_filters() -> [hcm::HttpFilter; 2] {
    [TOKEN_CHECKS_FILTER, RBAC_FILTER].map(|name| hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &rbac_filter::Rbac::default(),
        ))),
        ..Default::default()
    })
}

/// Metadata `jwt_authn` wrote: `path` under its namespace, matched by `value`.
pub(super) fn jwt_metadata(
    path: &[&str],
    value: matcher::value_matcher::MatchPattern,
) -> matcher::MetadataMatcher {
    use matcher::metadata_matcher::{PathSegment, path_segment::Segment};
    matcher::MetadataMatcher {
        filter: JWT_FILTER.into(),
        path: path
            .iter()
            .map(|key| PathSegment {
                segment: Some(Segment::Key((*key).into())),
            })
            .collect(),
        value: Some(matcher::ValueMatcher {
            match_pattern: Some(value),
        }),
        invert: false,
    }
}

pub(super) fn principal(id: rbac::principal::Identifier) -> rbac::Principal {
    rbac::Principal {
        identifier: Some(id),
    }
}

pub(super) fn payload_principal(m: matcher::MetadataMatcher) -> rbac::Principal {
    principal(rbac::principal::Identifier::SourcedMetadata(
        rbac::SourcedMetadata {
            metadata_matcher: Some(m),
            ..Default::default()
        },
    ))
}

pub(super) fn string_is(path: &[&str], value: &str) -> rbac::Principal {
    use matcher::value_matcher::MatchPattern;
    payload_principal(jwt_metadata(path, MatchPattern::StringMatch(exact(value))))
}

pub(super) fn any_of(ids: Vec<rbac::Principal>) -> rbac::Principal {
    principal(rbac::principal::Identifier::OrIds(rbac::principal::Set {
        ids,
    }))
}

pub(super) fn all_of(ids: Vec<rbac::Principal>) -> rbac::Principal {
    principal(rbac::principal::Identifier::AndIds(rbac::principal::Set {
        ids,
    }))
}

pub(super) fn per_route(
    action: rbac::rbac::Action,
    name: &str,
    who: rbac::Principal,
) -> rbac_filter::RbacPerRoute {
    let policy = rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::Any(true)),
        }],
        principals: vec![who],
        ..Default::default()
    };
    rbac_filter::RbacPerRoute {
        rbac: Some(rbac_filter::Rbac {
            rules: Some(rbac::Rbac {
                action: action as i32,
                policies: HashMap::from([(name.to_owned(), policy)]),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Refuses, as ext-authz does, tokens with `crit` entries (Envoy ignores
/// them; we understand none) and tokens whose `alg` their issuer does not
/// allow (Envoy accepts any algorithm the issuer's keys are for). Each
/// issuer's provider writes the token's header under its own key, so the
/// key present names the issuer that verified the token.
pub(super) fn token_checks(state: &ConfigState) -> rbac_filter::RbacPerRoute {
    use matcher::value_matcher::MatchPattern;
    let mut invalid = Vec::new();
    let mut allowed = Vec::new();
    for issuer in envoy_issuers(state) {
        let key = header_key(&issuer.name);
        invalid.push(payload_principal(jwt_metadata(
            &[&key, "crit"],
            MatchPattern::PresentMatch(true),
        )));
        allowed.push(any_of(
            issuer
                .algorithms
                .iter()
                .map(|a| string_is(&[&key, "alg"], a.as_str()))
                .collect(),
        ));
    }
    invalid.push(principal(rbac::principal::Identifier::NotId(Box::new(
        any_of(allowed),
    ))));
    per_route(
        rbac::rbac::Action::Deny,
        INVALID_TOKEN_POLICY,
        any_of(invalid),
    )
}

/// The token grants every one of `scopes` (`scope` split on spaces, or `scp`).
pub(super) fn route_scopes(scopes: &[String]) -> rbac_filter::RbacPerRoute {
    use matcher::value_matcher::MatchPattern;
    let all = scopes
        .iter()
        .map(|scope| {
            let granted_by = |claim: &str| {
                payload_principal(jwt_metadata(
                    &[PAYLOAD, claim],
                    MatchPattern::ListMatch(Box::new(matcher::ListMatcher {
                        match_pattern: Some(matcher::list_matcher::MatchPattern::OneOf(Box::new(
                            matcher::ValueMatcher {
                                match_pattern: Some(MatchPattern::StringMatch(exact(scope))),
                            },
                        ))),
                    })),
                ))
            };
            any_of(vec![granted_by("scope"), granted_by("scp")])
        })
        .collect();
    per_route(rbac::rbac::Action::Allow, "scopes", all_of(all))
}
