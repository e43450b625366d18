//! Rate limits → Envoy and ratelimit-service: the ratelimit filter and
//! cluster, each route's `rate_limits` descriptors, and the
//! `RateLimitConfig` streamed to ratelimit-service.
//!
//! Descriptors start with what they count for (`policy=<name>`, or
//! `plan_quota=1` for plan quotas), then the parts of the key. Consumer and
//! plan come from ext-authz's dynamic metadata, so a request without an
//! identity (a public route) is not counted by per-consumer limits. Routes
//! whose JWTs Envoy verifies name the consumer from `jwt_authn`'s header
//! instead, and ratelimit-service looks up its plan (`consumer_plans`). The
//! client address is the one Envoy trusts (`xff_num_trusted_hops`).

use std::{collections::HashMap, net::SocketAddr};

use gatehouse_proto::{
    core, hcm, metadata_types, ratelimit as rl, ratelimit_config, ratelimit_filter, route, to_any,
};

use super::{
    auth::{EXT_AUTHZ_FILTER, IDENTITY_HEADERS},
    duration_ms, grpc_cluster,
};
use crate::{
    model::ConfigState,
    model::{
        Route,
        ratelimit::{CountBy, Limit, RateLimitAlgorithm, StoreFailure},
    },
};

pub const RATELIMIT_CLUSTER: &str = "gatehouse_ratelimit";
pub const RATELIMIT_FILTER: &str = "envoy.filters.http.ratelimit";

/// The body of every 429 for a rate limit, exact or quota: the shape of
/// ext-authz's refusals.
pub const RATE_LIMITED: (&str, &str) = ("rate_limited", "too many requests");

/// The exact mode's 429 (the rate limit filter's local reply, flagged `RL`)
/// with the JSON body; its `RateLimit-*` and `Retry-After` headers stay.
pub fn rate_limited_reply() -> hcm::ResponseMapper {
    super::json_reply(super::response_flag("RL"), RATE_LIMITED.0, RATE_LIMITED.1)
}

/// Where Envoy reaches ratelimit-service and how it treats failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub address: SocketAddr,
    pub timeout_ms: u32,
    /// Refuse requests when ratelimit-service itself cannot be reached
    /// (policies' own `on_store_failure` covers the counter store).
    pub deny_when_unreachable: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 18002)),
            timeout_ms: 100,
            deny_when_unreachable: false,
        }
    }
}

pub fn ratelimit_cluster(settings: &RateLimitSettings) -> gatehouse_proto::cluster::Cluster {
    grpc_cluster(RATELIMIT_CLUSTER, settings.address)
}

/// The ratelimit filter: it calls the service only for routes with `rate_limits`.
pub fn ratelimit_filter(settings: &RateLimitSettings) -> hcm::HttpFilter {
    let config = ratelimit_filter::RateLimit {
        domain: rl::DOMAIN.into(),
        timeout: Some(duration_ms(settings.timeout_ms)),
        failure_mode_deny: settings.deny_when_unreachable,
        rate_limit_service: Some(ratelimit_config::RateLimitServiceConfig {
            grpc_service: Some(super::grpc_service(RATELIMIT_CLUSTER, None)),
            transport_api_version: core::ApiVersion::V3 as i32,
        }),
        ..Default::default()
    };
    hcm::HttpFilter {
        name: RATELIMIT_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(&config))),
        ..Default::default()
    }
}

use route::rate_limit::{Action, action::ActionSpecifier};

fn generic(key: &str, value: &str) -> Action {
    Action {
        action_specifier: Some(ActionSpecifier::GenericKey(
            route::rate_limit::action::GenericKey {
                descriptor_key: key.into(),
                descriptor_value: value.into(),
                ..Default::default()
            },
        )),
    }
}

/// A value ext-authz put in the dynamic metadata (no value: no descriptor).
fn identity(key: &str) -> Action {
    use metadata_types::metadata_key::{PathSegment, path_segment::Segment};
    Action {
        action_specifier: Some(ActionSpecifier::Metadata(
            route::rate_limit::action::MetaData {
                descriptor_key: key.into(),
                metadata_key: Some(metadata_types::MetadataKey {
                    key: EXT_AUTHZ_FILTER.into(),
                    path: vec![PathSegment {
                        segment: Some(Segment::Key(key.into())),
                    }],
                }),
                source: route::rate_limit::action::meta_data::Source::Dynamic as i32,
                ..Default::default()
            },
        )),
    }
}

/// The consumer `jwt_authn` named in its header (routes verified in Envoy;
/// client-sent copies are removed before it runs), as entry `key`.
fn consumer_from_jwt(key: &str) -> Action {
    Action {
        action_specifier: Some(ActionSpecifier::RequestHeaders(
            route::rate_limit::action::RequestHeaders {
                header_name: IDENTITY_HEADERS[0].into(),
                descriptor_key: key.into(),
                skip_if_absent: false,
            },
        )),
    }
}

fn action(part: &CountBy, route: &str, jwt_in_envoy: bool) -> Action {
    use gatehouse_proto::ratelimit::descriptor as d;
    match part {
        CountBy::Consumer if jwt_in_envoy => consumer_from_jwt(d::CONSUMER),
        CountBy::Consumer => identity(d::CONSUMER),
        CountBy::Plan if jwt_in_envoy => consumer_from_jwt(d::PLAN_OF_CONSUMER),
        CountBy::Plan => identity(d::PLAN),
        CountBy::ClientIp => Action {
            action_specifier: Some(ActionSpecifier::RemoteAddress(
                route::rate_limit::action::RemoteAddress {},
            )),
        },
        CountBy::Route => generic(d::ROUTE, route),
        CountBy::Header(name) => Action {
            action_specifier: Some(ActionSpecifier::RequestHeaders(
                route::rate_limit::action::RequestHeaders {
                    header_name: name.clone(),
                    descriptor_key: format!("{}{name}", d::HEADER_PREFIX),
                    skip_if_absent: false,
                },
            )),
        },
    }
}

/// Gives a route its exact policies' descriptors and switches the rate
/// limit filter on for it (only routes with limits pay for the filter).
pub fn apply(r: &Route, state: &ConfigState, envoy: &mut route::Route) {
    let rate_limits = route_rate_limits(r, state);
    if rate_limits.is_empty() {
        return;
    }
    if let Some(route::route::Action::Route(action)) = envoy.action.as_mut() {
        action.rate_limits = rate_limits;
        super::enable_filter(envoy, RATELIMIT_FILTER);
    }
}

/// The `rate_limits` of one route: its policies, then the plan quota.
pub fn route_rate_limits(r: &Route, state: &ConfigState) -> Vec<route::RateLimit> {
    use gatehouse_proto::ratelimit::descriptor as d;
    let jwt_in_envoy = r.auth.as_ref().is_some_and(|a| a.verified_in_envoy());
    let mut limits: Vec<route::RateLimit> = state
        .rate_limit_policies
        .values()
        .filter(|p| !p.is_quota() && (p.global || p.routes.contains(&r.name)))
        .map(|p| {
            let mut actions = vec![generic(d::POLICY, &p.name)];
            actions.extend(
                p.by.iter()
                    .filter_map(|part| CountBy::parse(part))
                    .map(|part| action(&part, &r.name, jwt_in_envoy)),
            );
            route::RateLimit {
                actions,
                ..Default::default()
            }
        })
        .collect();
    let protected = r.auth.as_ref().is_some_and(|a| a.is_protected());
    if protected && !state.plans.is_empty() {
        // ratelimit-service looks up the plan of a consumer Envoy named.
        let actions = if jwt_in_envoy {
            vec![generic(d::PLAN_QUOTA, "1"), consumer_from_jwt(d::CONSUMER)]
        } else {
            vec![
                generic(d::PLAN_QUOTA, "1"),
                identity(d::PLAN),
                identity(d::CONSUMER),
            ]
        };
        limits.push(route::RateLimit {
            actions,
            ..Default::default()
        });
    }
    limits
}

fn algorithm(a: RateLimitAlgorithm) -> i32 {
    (match a {
        RateLimitAlgorithm::FixedWindow => rl::Algorithm::FixedWindow,
        RateLimitAlgorithm::SlidingWindow => rl::Algorithm::SlidingWindow,
        RateLimitAlgorithm::TokenBucket => rl::Algorithm::TokenBucket,
    }) as i32
}

fn limit(l: &Limit) -> rl::Limit {
    rl::Limit {
        requests: l.requests,
        period_seconds: l.per.seconds(),
    }
}

/// Everything ratelimit-service decides from.
pub fn ratelimit_config(state: &ConfigState) -> rl::RateLimitConfig {
    rl::RateLimitConfig {
        policies: state
            .rate_limit_policies
            .values()
            .map(|p| rl::Policy {
                name: p.name.clone(),
                limit: Some(limit(&p.limit)),
                algorithm: algorithm(p.algorithm),
                burst: p.burst.unwrap_or(p.limit.requests),
                shadow: p.shadow,
                fail_open: p.on_store_failure == StoreFailure::Open,
                quota: p.is_quota(),
            })
            .collect(),
        plans: state
            .plans
            .values()
            .map(|p| rl::Plan {
                name: p.name.clone(),
                limits: p.limits.iter().map(limit).collect(),
                algorithm: algorithm(p.algorithm),
            })
            .collect(),
        consumer_plans: consumer_plans(state),
    }
}

/// Consumers' plans, needed only by routes whose JWTs Envoy verifies (their
/// descriptors name the consumer; ext-authz names the plan on the others).
fn consumer_plans(state: &ConfigState) -> HashMap<String, String> {
    let by_plan = state.rate_limit_policies.values().any(|p| {
        p.by.iter()
            .any(|b| CountBy::parse(b) == Some(CountBy::Plan))
    });
    let needed = !state.plans.is_empty() || by_plan;
    if !needed
        || !state
            .routes
            .values()
            .any(|r| r.auth.as_ref().is_some_and(|a| a.verified_in_envoy()))
    {
        return HashMap::new();
    }
    state
        .consumers
        .values()
        .filter_map(|c| Some((c.name.clone(), c.plan.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RateLimitPolicy;

    fn state() -> ConfigState {
        let mut state = ConfigState::default();
        for p in [
            serde_json::json!({"name": "per-consumer", "limit": {"requests": 100, "per": "minute"},
                "by": ["consumer", "route"], "routes": ["orders"]}),
            serde_json::json!({"name": "per-ip", "limit": {"requests": 10, "per": "second"},
                "by": ["client_ip", "header:x-tenant"], "global": true, "shadow": true,
                "algorithm": "token_bucket", "burst": 20, "on_store_failure": "closed"}),
        ] {
            let p: RateLimitPolicy = serde_json::from_value(p).unwrap();
            state.rate_limit_policies.insert(p.name.clone(), p);
        }
        state.plans.insert(
            "free".into(),
            serde_json::from_value(
                serde_json::json!({"name": "free", "limits": [{"requests": 5, "per": "second"}]}),
            )
            .unwrap(),
        );
        state
    }

    fn route(name: &str, auth: bool) -> Route {
        let mut r = serde_json::json!({"name": name, "match": {"path_prefix": "/"}, "destination": {"service": "s"}});
        if auth {
            r["auth"] = serde_json::json!({"method": "api_key"});
        }
        serde_json::from_value(r).unwrap()
    }

    fn keys(limit: &route::RateLimit) -> Vec<String> {
        limit
            .actions
            .iter()
            .map(|a| match &a.action_specifier {
                Some(ActionSpecifier::GenericKey(g)) => {
                    format!("{}={}", g.descriptor_key, g.descriptor_value)
                }
                Some(ActionSpecifier::Metadata(m)) => format!("meta:{}", m.descriptor_key),
                Some(ActionSpecifier::RemoteAddress(_)) => "remote_address".into(),
                Some(ActionSpecifier::RequestHeaders(h)) => {
                    format!("{}<-{}", h.descriptor_key, h.header_name)
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn routes_get_their_policies_global_ones_and_the_plan_quota() {
        let state = state();
        let orders = route_rate_limits(&route("orders", true), &state);
        let all: Vec<Vec<String>> = orders.iter().map(keys).collect();
        assert_eq!(
            all,
            vec![
                vec!["policy=per-consumer", "meta:consumer", "route=orders"],
                vec![
                    "policy=per-ip",
                    "remote_address",
                    "header.x-tenant<-x-tenant"
                ],
                vec!["plan_quota=1", "meta:plan", "meta:consumer"],
            ]
        );
        let public = route_rate_limits(&route("public", false), &state);
        assert_eq!(
            public.iter().map(keys).collect::<Vec<_>>(),
            vec![vec![
                "policy=per-ip",
                "remote_address",
                "header.x-tenant<-x-tenant"
            ]]
        );
    }

    #[test]
    fn routes_verified_in_envoy_name_the_consumer_and_the_service_knows_its_plan() {
        let mut state = state();
        let by_plan: RateLimitPolicy = serde_json::from_value(serde_json::json!({
            "name": "per-plan", "limit": {"requests": 1000, "per": "minute"},
            "by": ["plan"], "routes": ["orders"]}))
        .unwrap();
        state
            .rate_limit_policies
            .insert(by_plan.name.clone(), by_plan);
        for c in [
            serde_json::json!({"name": "alice", "plan": "free"}),
            serde_json::json!({"name": "bob"}),
        ] {
            let c: crate::model::Consumer = serde_json::from_value(c).unwrap();
            state.consumers.insert(c.name.clone(), c);
        }
        // Only routes verified in Envoy need the consumers' plans.
        assert!(ratelimit_config(&state).consumer_plans.is_empty());

        let mut orders = route("orders", true);
        orders.auth = Some(
            serde_json::from_value(serde_json::json!({"method": "jwt", "verify_in": "envoy"}))
                .unwrap(),
        );
        state.routes.insert(orders.name.clone(), orders.clone());
        let entries: Vec<Vec<String>> = route_rate_limits(&orders, &state)
            .iter()
            .map(keys)
            .collect();
        assert!(entries.contains(&vec![
            "policy=per-consumer".to_owned(),
            "consumer<-x-gatehouse-consumer".to_owned(),
            "route=orders".to_owned(),
        ]));
        assert!(entries.contains(&vec![
            "policy=per-plan".to_owned(),
            "plan_of_consumer<-x-gatehouse-consumer".to_owned(),
        ]));
        assert!(entries.contains(&vec![
            "plan_quota=1".to_owned(),
            "consumer<-x-gatehouse-consumer".to_owned(),
        ]));
        assert!(!entries.iter().flatten().any(|e| e.starts_with("meta:")));
        assert_eq!(
            ratelimit_config(&state).consumer_plans,
            HashMap::from([("alice".to_owned(), "free".to_owned())])
        );
    }

    #[test]
    fn the_service_gets_limits_in_seconds_and_failure_modes() {
        let config = ratelimit_config(&state());
        let ip = config.policies.iter().find(|p| p.name == "per-ip").unwrap();
        assert_eq!((ip.burst, ip.shadow, ip.fail_open), (20, true, false));
        let consumer = config
            .policies
            .iter()
            .find(|p| p.name == "per-consumer")
            .unwrap();
        assert_eq!(consumer.limit.unwrap().period_seconds, 60);
        assert_eq!(consumer.burst, 100);
        assert!(consumer.fail_open);
        assert_eq!(config.plans[0].limits[0].requests, 5);
    }
}
