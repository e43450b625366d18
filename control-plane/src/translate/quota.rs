//! Policies with `enforcement: quota`: Envoy's rate limit quota filter
//! (RLQS) decides their requests in process, from token buckets
//! ratelimit-service assigns each Envoy by demand; no call per request.
//!
//! Envoy's quota filter takes no per-route configuration, so a route under a
//! quota policy names it in a request header (`x-gatehouse-quota`, set by
//! the header mutation filter's per-route configuration, before the quota
//! filter): the filter's bucket matchers map that header to the policy's
//! bucket settings. The matchers depend on policies only, and travel over
//! ECDS so a change never replaces a listener. Clients cannot send the
//! header (removed before any filter runs), and upstreams never see it.

use std::collections::HashMap;

use gatehouse_proto::{
    core, hcm, header_mutation, http_types, matcher, mutation_rules, network_inputs, protobuf,
    quota_filter, ratelimit as rl, route, to_any, xds_core, xds_matcher,
};
use prost::Name;
use quota_filter::rate_limit_quota_bucket_settings as settings;

use super::{TranslateError, auth::IDENTITY_HEADERS, ratelimit::RATELIMIT_CLUSTER};
use crate::model::{
    ConfigState, Route,
    ratelimit::{CountBy, RateLimitPolicy, StoreFailure},
};

pub const QUOTA_FILTER: &str = "envoy.filters.http.rate_limit_quota";
pub const HEADER_MUTATION_FILTER: &str = "envoy.filters.http.header_mutation";
/// The quota policy of the route (set per route, read by the bucket matchers).
pub const QUOTA_HEADER: &str = "x-gatehouse-quota";
/// The route's name, for policies counted by route.
pub const QUOTA_ROUTE_HEADER: &str = "x-gatehouse-quota-route";
/// How often Envoy reports each bucket's use.
pub const REPORTING_INTERVAL_MS: u32 = 1_000;
/// How long Envoy keeps enforcing an expired assignment (one it stopped
/// hearing about) before the policy's failure mode applies.
pub const ASSIGNMENT_GRACE_MS: u32 = 10_000;

/// The quota policy a route is under, if any; two are refused.
pub fn route_policy<'a>(
    r: &Route,
    state: &'a ConfigState,
) -> Result<Option<&'a RateLimitPolicy>, TranslateError> {
    let mut policies = state
        .rate_limit_policies
        .values()
        .filter(|p| p.is_quota() && (p.global || p.routes.contains(&r.name)));
    let first = policies.next();
    if let (Some(first), Some(second)) = (first, policies.next()) {
        return Err(TranslateError::TwoQuotaPolicies {
            route: r.name.clone(),
            first: first.name.clone(),
            second: second.name.clone(),
        });
    }
    Ok(first)
}

/// Names the route's quota policy (and the route) in request headers for
/// the bucket matchers; the router removes them before the upstream.
pub fn apply(r: &Route, envoy: &mut route::Route, policy: Option<&RateLimitPolicy>) {
    let Some(policy) = policy else {
        return;
    };
    let set = |key: &str, value: &str| mutation_rules::HeaderMutation {
        action: Some(mutation_rules::header_mutation::Action::Append(
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: key.into(),
                    value: value.into(),
                    ..Default::default()
                }),
                append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                    as i32,
                ..Default::default()
            },
        )),
    };
    // The route's name only for a policy counting by route: every header
    // set here is work on each request (set, matched, removed).
    let by_route = policy
        .by
        .iter()
        .any(|b| CountBy::parse(b) == Some(CountBy::Route));
    let mut headers = vec![(QUOTA_HEADER, policy.name.as_str())];
    if by_route {
        headers.push((QUOTA_ROUTE_HEADER, r.name.as_str()));
    }
    let per_route = header_mutation::HeaderMutationPerRoute {
        mutations: Some(header_mutation::Mutations {
            request_mutations: headers.iter().map(|(k, v)| set(k, v)).collect(),
            ..Default::default()
        }),
    };
    envoy
        .typed_per_filter_config
        .insert(HEADER_MUTATION_FILTER.into(), to_any(&per_route));
    super::enable_filter(envoy, QUOTA_FILTER);
    envoy
        .request_headers_to_remove
        .extend(headers.iter().map(|(k, _)| (*k).to_owned()));
}

/// The header mutation filter: nothing of its own, per-route settings only.
pub fn header_mutation_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: HEADER_MUTATION_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &header_mutation::HeaderMutation::default(),
        ))),
        ..Default::default()
    }
}

/// The quota filter in the chain; its configuration comes over ECDS.
pub fn quota_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: QUOTA_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::ConfigDiscovery(
            core::ExtensionConfigSource {
                config_source: Some(super::ads()),
                default_config: None,
                apply_default_config_without_warming: false,
                type_urls: vec![quota_filter::RateLimitQuotaFilterConfig::type_url()],
            },
        )),
        ..Default::default()
    }
}

/// The quota filter's configuration (an ECDS resource named as the filter):
/// one bucket setting per quota policy, found by the route's header.
pub fn quota_filter_config(state: &ConfigState) -> core::TypedExtensionConfig {
    let mut map: HashMap<String, xds_matcher::matcher::OnMatch> = state
        .rate_limit_policies
        .values()
        .filter(|p| p.is_quota())
        .map(|p| (p.name.clone(), action(bucket_settings(p))))
        .collect();
    if map.is_empty() {
        // The matchers are required: a name no policy can have (names are
        // DNS labels) stands for "no quota policy".
        let unused = quota_filter::RateLimitQuotaBucketSettings {
            bucket_id_builder: Some(builder(vec![("policy", text("-"))])),
            reporting_interval: Some(super::duration_ms(REPORTING_INTERVAL_MS)),
            ..Default::default()
        };
        map.insert("-".into(), action(unused));
    }
    let config = quota_filter::RateLimitQuotaFilterConfig {
        rlqs_server: Some(super::grpc_service(RATELIMIT_CLUSTER, None)),
        domain: rl::DOMAIN.into(),
        bucket_matchers: Some(xds_matcher::Matcher {
            on_no_match: None,
            matcher_type: Some(xds_matcher::matcher::MatcherType::MatcherTree(
                xds_matcher::matcher::MatcherTree {
                    input: Some(header_input("quota", QUOTA_HEADER)),
                    tree_type: Some(xds_matcher::matcher::matcher_tree::TreeType::ExactMatchMap(
                        xds_matcher::matcher::matcher_tree::MatchMap { map },
                    )),
                },
            )),
        }),
        ..Default::default()
    };
    core::TypedExtensionConfig {
        name: QUOTA_FILTER.into(),
        typed_config: Some(to_any(&config)),
    }
}

fn action(settings: quota_filter::RateLimitQuotaBucketSettings) -> xds_matcher::matcher::OnMatch {
    xds_matcher::matcher::OnMatch {
        keep_matching: false,
        on_match: Some(xds_matcher::matcher::on_match::OnMatch::Action(
            xds_core::TypedExtensionConfig {
                name: "gatehouse.quota_bucket".into(),
                typed_config: Some(to_any(&settings)),
            },
        )),
    }
}

fn header_input(name: &str, header: &str) -> xds_core::TypedExtensionConfig {
    xds_core::TypedExtensionConfig {
        name: name.into(),
        typed_config: Some(to_any(&matcher::HttpRequestHeaderMatchInput {
            header_name: header.into(),
        })),
    }
}

type Value = settings::bucket_id_builder::ValueBuilder;

fn text(s: &str) -> Value {
    Value {
        value_specifier: Some(
            settings::bucket_id_builder::value_builder::ValueSpecifier::StringValue(s.into()),
        ),
    }
}

fn from_input(name: &str, input: protobuf::Any) -> Value {
    Value {
        value_specifier: Some(
            settings::bucket_id_builder::value_builder::ValueSpecifier::CustomValue(
                core::TypedExtensionConfig {
                    name: name.into(),
                    typed_config: Some(input),
                },
            ),
        ),
    }
}

fn header(name: &str, header: &str) -> Value {
    from_input(
        name,
        to_any(&matcher::HttpRequestHeaderMatchInput {
            header_name: header.into(),
        }),
    )
}

fn builder(parts: Vec<(&str, Value)>) -> settings::BucketIdBuilder {
    settings::BucketIdBuilder {
        bucket_id_builder: parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

/// The bucket key part `by` names, as the bucket id's entry.
fn key_part(part: &CountBy) -> (String, Value) {
    use gatehouse_proto::ratelimit::descriptor as d;
    match part {
        CountBy::Consumer => (d::CONSUMER.into(), header("consumer", IDENTITY_HEADERS[0])),
        CountBy::Plan => (d::PLAN.into(), header("plan", IDENTITY_HEADERS[1])),
        CountBy::ClientIp => (
            d::CLIENT_IP.into(),
            from_input(
                "client_ip",
                to_any(&network_inputs::SourceIpInput::default()),
            ),
        ),
        CountBy::Route => (d::ROUTE.into(), header("route", QUOTA_ROUTE_HEADER)),
        CountBy::Header(name) => (format!("{}{name}", d::HEADER_PREFIX), header(name, name)),
    }
}

fn blanket(on_failure: StoreFailure) -> http_types::RateLimitStrategy {
    use http_types::rate_limit_strategy::{BlanketRule, Strategy};
    let rule = match on_failure {
        StoreFailure::Open => BlanketRule::AllowAll,
        StoreFailure::Closed => BlanketRule::DenyAll,
    };
    http_types::RateLimitStrategy {
        strategy: Some(Strategy::BlanketRule(rule as i32)),
    }
}

/// How Envoy buckets a policy's requests, reports them, and behaves before
/// an assignment and once one has expired (the policy's failure mode).
fn bucket_settings(p: &RateLimitPolicy) -> quota_filter::RateLimitQuotaBucketSettings {
    let mut parts: Vec<(String, Value)> = vec![(
        gatehouse_proto::ratelimit::descriptor::POLICY.into(),
        text(&p.name),
    )];
    parts.extend(
        p.by.iter()
            .filter_map(|b| CountBy::parse(b))
            .map(|b| key_part(&b)),
    );
    let (error, message) = super::ratelimit::RATE_LIMITED;
    let body = super::error_body(error, message);
    quota_filter::RateLimitQuotaBucketSettings {
        bucket_id_builder: Some(settings::BucketIdBuilder {
            bucket_id_builder: parts.into_iter().collect(),
        }),
        reporting_interval: Some(super::duration_ms(REPORTING_INTERVAL_MS)),
        deny_response_settings: Some(settings::DenyResponseSettings {
            http_status: Some(http_types::HttpStatus { code: 429 }),
            http_body: Some(protobuf::BytesValue {
                value: body.into_bytes(),
            }),
            response_headers_to_add: vec![super::json_content_type()],
            ..Default::default()
        }),
        no_assignment_behavior: Some(settings::NoAssignmentBehavior {
            no_assignment_behavior: Some(
                settings::no_assignment_behavior::NoAssignmentBehavior::FallbackRateLimit(
                    blanket(p.on_store_failure),
                ),
            ),
        }),
        expired_assignment_behavior: Some(settings::ExpiredAssignmentBehavior {
            expired_assignment_behavior_timeout: Some(super::duration_ms(ASSIGNMENT_GRACE_MS)),
            // Then the no-assignment behaviour: the policy's failure mode.
            expired_assignment_behavior: Some(
                settings::expired_assignment_behavior::ExpiredAssignmentBehavior::ReuseLastAssignment(
                    settings::expired_assignment_behavior::ReuseLastAssignment {},
                ),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message;

    use super::*;

    fn headers_set(by: &[&str]) -> (Vec<String>, Vec<String>) {
        let policy: RateLimitPolicy = serde_json::from_value(serde_json::json!({
            "name": "q", "limit": {"requests": 100, "per": "minute"}, "by": by,
            "routes": ["orders"], "enforcement": "quota"}))
        .unwrap();
        let route: Route = serde_json::from_value(serde_json::json!({"name": "orders",
            "match": {"path_prefix": "/"}, "destination": {"service": "s"}}))
        .unwrap();
        let mut envoy = route::Route::default();
        apply(&route, &mut envoy, Some(&policy));
        let per_route = header_mutation::HeaderMutationPerRoute::decode(
            envoy.typed_per_filter_config[HEADER_MUTATION_FILTER]
                .value
                .as_slice(),
        )
        .unwrap();
        let set = per_route
            .mutations
            .unwrap()
            .request_mutations
            .into_iter()
            .filter_map(|m| match m.action {
                Some(mutation_rules::header_mutation::Action::Append(h)) => Some(h.header?.key),
                _ => None,
            })
            .collect();
        (set, envoy.request_headers_to_remove)
    }

    #[test]
    fn the_route_is_named_in_a_header_only_for_policies_counting_by_route() {
        let (set, removed) = headers_set(&["consumer"]);
        assert_eq!(set, [QUOTA_HEADER]);
        assert_eq!(removed, [QUOTA_HEADER]);
        let (set, removed) = headers_set(&["consumer", "route"]);
        assert_eq!(set, [QUOTA_HEADER, QUOTA_ROUTE_HEADER]);
        assert_eq!(removed, [QUOTA_HEADER, QUOTA_ROUTE_HEADER]);
    }
}
