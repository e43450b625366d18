//! A route's retries → Envoy's retry policy: the conditions, attempts,
//! per-try timeout and backoff asked for; each retry on an endpoint not
//! tried before; only idempotent methods unless the route says otherwise.
//! And its priority class → the route's routing priority.

use gatehouse_proto::{core, matcher, previous_hosts, route, to_any};

use super::duration_ms;
use crate::model::{Retries, Route, RoutePriority, retry::IDEMPOTENT_METHODS};

/// How many endpoints a retry may pick before settling for one tried.
const HOST_SELECTION_ATTEMPTS: i64 = 5;

/// Sets the route's retry policy and priority on its Envoy route action.
pub fn apply(r: &Route, action: &mut route::RouteAction) {
    if let Some(retries) = &r.retries {
        action.retry_policy = Some(retry_policy(retries));
    }
    if r.priority == Some(RoutePriority::High) {
        action.priority = core::RoutingPriority::High as i32;
    }
}

fn retry_policy(retries: &Retries) -> route::RetryPolicy {
    use route::retry_policy::{RetryBackOff, RetryHostPredicate, retry_host_predicate};

    let mut on = retries.on.clone();
    if !retries.status_codes.is_empty() {
        on.push("retriable-status-codes".into());
    }
    let retriable_request_headers = if retries.non_idempotent {
        Vec::new()
    } else {
        vec![route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                matcher::StringMatcher {
                    match_pattern: Some(matcher::string_matcher::MatchPattern::SafeRegex(
                        matcher::RegexMatcher {
                            regex: format!("^({})$", IDEMPOTENT_METHODS.join("|")),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }]
    };
    route::RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(gatehouse_proto::protobuf::UInt32Value {
            value: retries.attempts,
        }),
        per_try_timeout: retries.per_try_timeout_ms.map(duration_ms),
        retry_back_off: retries.backoff.as_ref().map(|b| RetryBackOff {
            base_interval: Some(duration_ms(b.base_ms)),
            max_interval: Some(duration_ms(
                b.max_ms.unwrap_or(b.base_ms.saturating_mul(10)),
            )),
        }),
        retriable_status_codes: retries.status_codes.iter().map(|s| u32::from(*s)).collect(),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(to_any(
                &previous_hosts::PreviousHostsPredicate {},
            ))),
        }],
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        retriable_request_headers,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn action(retries: serde_json::Value, priority: &str) -> route::RouteAction {
        let r: Route = serde_json::from_value(json!({
            "name": "r", "match": {"path_prefix": "/"}, "destination": {"service": "s"},
            "retries": retries, "priority": priority
        }))
        .expect("route");
        let mut action = route::RouteAction::default();
        apply(&r, &mut action);
        action
    }

    #[test]
    fn only_idempotent_methods_are_retried_by_default() {
        let a = action(
            json!({"status_codes": [503], "per_try_timeout_ms": 200}),
            "high",
        );
        let policy = a.retry_policy.expect("a policy");
        assert_eq!(
            policy.retry_on,
            "gateway-error,reset,connect-failure,retriable-status-codes"
        );
        assert_eq!(policy.retriable_status_codes, [503]);
        assert_eq!(policy.retriable_request_headers.len(), 1);
        assert!(format!("{:?}", policy.retriable_request_headers[0]).contains("GET|HEAD"));
        assert_eq!(policy.retry_host_predicate.len(), 1, "another endpoint");
        assert_eq!(a.priority, core::RoutingPriority::High as i32);

        let a = action(
            json!({"non_idempotent": true, "backoff": {"base_ms": 10}}),
            "default",
        );
        let policy = a.retry_policy.expect("a policy");
        assert!(policy.retriable_request_headers.is_empty());
        let backoff = policy.retry_back_off.expect("backoff");
        assert_eq!(backoff.max_interval, Some(duration_ms(100)));
    }
}
