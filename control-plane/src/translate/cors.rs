//! A route's CORS policy → Envoy's CORS filter (first in every connection
//! manager, so a preflight is answered before authentication and rate
//! limits) with the route's policy as its per-route configuration; and the
//! route's header rules → the route's header additions and removals.

use gatehouse_proto::{core, cors, hcm, matcher, protobuf, route, to_any};

use crate::model::{Cors, HeaderRule, Route};

const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The CORS filter: does nothing on routes without a policy.
pub fn cors_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: CORS_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &cors::Cors::default(),
        ))),
        ..Default::default()
    }
}

/// Adds the route's CORS policy and header rules to its Envoy route.
pub fn apply(r: &Route, envoy: &mut route::Route) {
    if let Some(policy) = &r.cors {
        envoy
            .typed_per_filter_config
            .insert(CORS_FILTER.into(), to_any(&cors_policy(policy)));
    }
    if let Some(rules) = &r.headers {
        if let Some(request) = &rules.request {
            envoy.request_headers_to_add.extend(header_options(request));
            envoy
                .request_headers_to_remove
                .extend(request.remove.iter().cloned());
        }
        if let Some(response) = &rules.response {
            envoy
                .response_headers_to_add
                .extend(header_options(response));
            envoy
                .response_headers_to_remove
                .extend(response.remove.iter().cloned());
        }
    }
}

fn cors_policy(policy: &Cors) -> cors::CorsPolicy {
    use matcher::string_matcher::MatchPattern;

    let exact = policy
        .allow_origins
        .iter()
        .map(|origin| match origin.as_str() {
            "*" => MatchPattern::SafeRegex(matcher::RegexMatcher {
                regex: ".*".into(),
                ..Default::default()
            }),
            origin => MatchPattern::Exact(origin.to_owned()),
        });
    let regexes = policy.allow_origin_regexes.iter().map(|pattern| {
        MatchPattern::SafeRegex(matcher::RegexMatcher {
            regex: pattern.clone(),
            ..Default::default()
        })
    });
    cors::CorsPolicy {
        allow_origin_string_match: exact
            .chain(regexes)
            .map(|pattern| matcher::StringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            })
            .collect(),
        allow_methods: policy.allow_methods.join(","),
        allow_headers: policy.allow_headers.join(","),
        expose_headers: policy.expose_headers.join(","),
        max_age: policy.max_age_s.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: policy
            .allow_credentials
            .then_some(protobuf::BoolValue { value: true }),
        // A preflight from an origin not allowed is answered here too (without
        // CORS headers), never passed on to authentication or the upstream.
        forward_not_matching_preflights: Some(protobuf::BoolValue { value: false }),
        ..Default::default()
    }
}

fn header_options(rule: &HeaderRule) -> Vec<core::HeaderValueOption> {
    use core::header_value_option::HeaderAppendAction;

    let option =
        |(name, value): (&String, &String), action: HeaderAppendAction| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: name.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        };
    rule.set
        .iter()
        .map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            rule.add
                .iter()
                .map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_policy_and_header_rules_land_on_the_route() {
        let r: Route = serde_json::from_value(json!({
            "name": "r", "match": {"path_prefix": "/"}, "destination": {"service": "s"},
            "cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["GET", "POST"],
                     "allow_headers": ["x-api-key"], "max_age_s": 600, "allow_credentials": true},
            "headers": {"request": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
                        "response": {"add": {"x-served-by": "gatehouse"}}}
        }))
        .expect("route");
        let mut envoy = route::Route::default();
        apply(&r, &mut envoy);
        let any = &envoy.typed_per_filter_config[CORS_FILTER];
        let policy = cors::CorsPolicy::decode(any.value.as_slice()).expect("decode");
        assert_eq!(policy.allow_methods, "GET,POST");
        assert_eq!(policy.max_age, "600");
        assert_eq!(envoy.request_headers_to_remove, ["x-debug"]);
        assert_eq!(envoy.request_headers_to_add.len(), 1);
        assert_eq!(envoy.response_headers_to_add.len(), 1);
    }
}
