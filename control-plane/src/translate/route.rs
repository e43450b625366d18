//! Routes → one RouteConfiguration: a virtual host per distinct host name
//! (plus `*`; routes without hosts apply on every virtual host), the most
//! specific route first: exact paths, then regexes, then longer prefixes,
//! then routes with more conditions.

use std::{cmp::Reverse, collections::BTreeMap};

use gatehouse_proto::{matcher, protobuf, route};

use super::{
    actions, auth, balancing, cors, duration_ms, gateway, grpc, quota, ratelimit, retry, shedding,
    version, websocket,
};
use crate::model::{ConfigState, HeaderMatch, PathMatch, Route};

/// Name of the route configuration every listener loads over RDS.
pub const HTTP_ROUTES: &str = "gatehouse_http";

/// What translating a route needs from the rest of the configuration.
pub struct RouteContext<'a> {
    /// Identity headers a client could spoof on public routes.
    pub spoofable: Vec<String>,
    pub state: &'a ConfigState,
}

/// Routes grouped into virtual hosts and ordered most specific first.
pub fn route_configuration(routes: &[&Route], context: &RouteContext) -> route::RouteConfiguration {
    let mut by_host: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    let mut wildcard = Vec::new();
    for r in routes {
        if r.matches.hosts.is_empty() {
            wildcard.push(*r);
        } else {
            for host in &r.matches.hosts {
                by_host.entry(host.as_str()).or_default().push(*r);
            }
        }
    }
    let mut virtual_hosts: Vec<route::VirtualHost> = by_host
        .into_iter()
        .map(|(host, mut routes)| {
            routes.extend(wildcard.iter().copied());
            virtual_host(host, vec![host.to_owned()], routes, context)
        })
        .collect();
    virtual_hosts.push(virtual_host("default", vec!["*".into()], wildcard, context));
    route::RouteConfiguration {
        name: HTTP_ROUTES.into(),
        virtual_hosts,
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

fn virtual_host(
    name: &str,
    domains: Vec<String>,
    mut routes: Vec<&Route>,
    context: &RouteContext,
) -> route::VirtualHost {
    routes.sort_by_key(|r| precedence(r));
    route::VirtualHost {
        name: name.into(),
        domains,
        routes: routes
            .into_iter()
            .flat_map(|r| {
                let mut envoy = envoy_route(r);
                actions::apply(r, &mut envoy);
                auth::apply_route_policy(r, &mut envoy, &context.spoofable, context.state);
                // After auth: the route's header rules add to its removals.
                cors::apply(r, &mut envoy);
                shedding::apply(r, &mut envoy);
                websocket::apply(r, &mut envoy);
                version::apply(r, &mut envoy);
                grpc::apply(r, context.state, &mut envoy);
                // Refused before translation when there are two.
                let quota_policy = quota::route_policy(r, context.state).ok().flatten();
                quota::apply(r, &mut envoy, quota_policy);
                ratelimit::apply(r, context.state, &mut envoy);
                if let Some(route::route::Action::Route(action)) = envoy.action.as_mut() {
                    retry::apply(r, action);
                    let services: Vec<_> = r
                        .destination
                        .services()
                        .into_iter()
                        .filter_map(|name| context.state.services.get(name))
                        .collect();
                    action.hash_policy = balancing::hash_policy(&services);
                }
                // A TLS-only route is refused in the clear before it matches.
                let refusal = r.require_tls.then(|| gateway::tls_refusal(&envoy));
                refusal.into_iter().chain([envoy])
            })
            .collect(),
        ..Default::default()
    }
}

/// Sort key: exact paths, then regexes, then longer prefixes; more conditions
/// first; routes for a specific host before host-less ones; then by name.
fn precedence(r: &Route) -> impl Ord + '_ {
    let (rank, len) = match r.matches.path() {
        Some(PathMatch::Exact(p)) => (0, p.len()),
        Some(PathMatch::Regex(_)) => (1, 0),
        Some(PathMatch::Prefix(p)) => (2, p.len()),
        None => (3, 0),
    };
    let conditions = usize::from(!r.matches.methods.is_empty())
        + r.matches.headers.len()
        + r.matches.query_params.len();
    (
        rank,
        Reverse(len),
        Reverse(conditions),
        r.matches.hosts.is_empty(),
        r.name.as_str(),
    )
}

fn regex(pattern: String) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        regex: pattern,
        ..Default::default()
    }
}

fn string_matcher(pattern: matcher::string_matcher::MatchPattern) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

pub fn envoy_route(r: &Route) -> route::Route {
    use matcher::string_matcher::MatchPattern;
    use route::{header_matcher::HeaderMatchSpecifier, route_match::PathSpecifier};

    let path = match r.matches.path() {
        Some(PathMatch::Prefix(p)) => PathSpecifier::Prefix(p.to_owned()),
        Some(PathMatch::Exact(p)) => PathSpecifier::Path(p.to_owned()),
        Some(PathMatch::Regex(p)) => PathSpecifier::SafeRegex(regex(p.to_owned())),
        // Unreachable for validated routes: a pattern that matches nothing.
        None => PathSpecifier::SafeRegex(regex("^$.".into())),
    };
    let mut headers = Vec::new();
    match r.matches.methods.as_slice() {
        [] => {}
        [method] => headers.push(route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                MatchPattern::Exact(method.clone()),
            ))),
            ..Default::default()
        }),
        methods => headers.push(route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                MatchPattern::SafeRegex(regex(format!("^({})$", methods.join("|")))),
            ))),
            ..Default::default()
        }),
    }
    headers.extend(r.matches.headers.iter().map(header_matcher));

    let cluster_specifier = match &r.destination.service {
        Some(service) => route::route_action::ClusterSpecifier::Cluster(service.clone()),
        None => route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
            clusters: r
                .destination
                .weighted
                .iter()
                .map(|w| route::weighted_cluster::ClusterWeight {
                    name: w.service.clone(),
                    weight: Some(protobuf::UInt32Value { value: w.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let regex_rewrite = match (r.strip_prefix, &r.matches.path_prefix) {
        (true, Some(prefix)) => Some(matcher::RegexMatchAndSubstitute {
            pattern: Some(regex(format!(
                "^{}/*",
                regex_syntax::escape(prefix.trim_end_matches('/'))
            ))),
            substitution: "/".into(),
        }),
        _ => None,
    };
    route::Route {
        name: r.name.clone(),
        // Per-route stats (`vhost.*.route.<name>.*`) that dashboards join
        // with the Gatehouse route of the same name.
        stat_prefix: r.name.clone(),
        // The name of the request's span when Envoy traces (not sent on).
        decorator: Some(route::Decorator {
            operation: r.name.clone(),
            propagate: Some(protobuf::BoolValue { value: false }),
        }),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(path),
            headers,
            ..Default::default()
        }),
        action: Some(route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(cluster_specifier),
            prefix_rewrite: r.prefix_rewrite.clone().unwrap_or_default(),
            regex_rewrite,
            timeout: r.timeout_ms.map(duration_ms),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn header_matcher(h: &HeaderMatch) -> route::HeaderMatcher {
    use matcher::string_matcher::MatchPattern;
    use route::header_matcher::HeaderMatchSpecifier;

    let specifier = if let Some(exact) = &h.exact {
        HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::Exact(exact.clone())))
    } else if let Some(prefix) = &h.prefix {
        HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::Prefix(prefix.clone())))
    } else if let Some(pattern) = &h.regex {
        HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::SafeRegex(regex(
            pattern.clone(),
        ))))
    } else {
        HeaderMatchSpecifier::PresentMatch(true)
    };
    route::HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(specifier),
        invert_match: h.invert,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::route::route_action::ClusterSpecifier;
    use serde_json::json;

    use super::*;

    fn route(json: serde_json::Value) -> Route {
        serde_json::from_value(json).expect("route")
    }

    fn action(r: &route::Route) -> &route::RouteAction {
        match &r.action {
            Some(route::route::Action::Route(action)) => action,
            other => panic!("not a route action: {other:?}"),
        }
    }

    #[test]
    fn routes_become_virtual_hosts_ordered_most_specific_first() {
        let routes = [
            route(
                json!({"name": "prefix-short", "match": {"path_prefix": "/a"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "prefix-long", "match": {"path_prefix": "/a/b"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "exact", "match": {"path_exact": "/a"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "regex", "match": {"path_regex": "^/a/[0-9]+$"}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "get-only", "match": {"path_prefix": "/a", "methods": ["GET"]}, "destination": {"service": "s"}}),
            ),
            route(
                json!({"name": "hosted", "match": {"path_prefix": "/a", "hosts": ["api.example.com"]}, "destination": {"service": "s"}}),
            ),
        ];
        let refs: Vec<&Route> = routes.iter().collect();
        let empty = ConfigState::default();
        let config = route_configuration(
            &refs,
            &RouteContext {
                spoofable: Vec::new(),
                state: &empty,
            },
        );
        assert!(config.ignore_port_in_host_matching);
        let names =
            |vh: &route::VirtualHost| vh.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let hosted = &config.virtual_hosts[0];
        assert_eq!(hosted.domains, vec!["api.example.com"]);
        assert_eq!(
            names(hosted),
            [
                "exact",
                "regex",
                "prefix-long",
                "get-only",
                "hosted",
                "prefix-short"
            ],
            "host-less routes apply on every host, after equally specific host routes"
        );
        let default = &config.virtual_hosts[1];
        assert_eq!(default.domains, vec!["*"]);
        assert_eq!(
            names(default),
            ["exact", "regex", "prefix-long", "get-only", "prefix-short"]
        );
    }

    #[test]
    fn routes_switch_on_only_the_filters_they_use() {
        let mut state = ConfigState::default();
        for (name, enforcement) in [("exact", "exact"), ("quota", "quota")] {
            let policy: crate::model::ratelimit::RateLimitPolicy = serde_json::from_value(json!({
                "name": name, "limit": {"requests": 10, "per": "minute"}, "by": ["client_ip"],
                "routes": [name], "enforcement": enforcement}))
            .expect("policy");
            state.rate_limit_policies.insert(name.into(), policy);
        }
        let routes = ["public", "exact", "quota"].map(|name| {
            route(
                json!({"name": name, "match": {"path_prefix": format!("/{name}")},
                         "destination": {"service": "s"}}),
            )
        });
        let refs: Vec<&Route> = routes.iter().collect();
        let config = route_configuration(
            &refs,
            &RouteContext {
                spoofable: Vec::new(),
                state: &state,
            },
        );
        let switched_on = |name: &str| {
            let r = config.virtual_hosts[0]
                .routes
                .iter()
                .find(|r| r.name == name)
                .expect("route");
            let mut filters: Vec<&str> = r
                .typed_per_filter_config
                .keys()
                .map(String::as_str)
                .collect();
            filters.sort_unstable();
            filters
        };
        assert!(switched_on("public").is_empty());
        assert_eq!(switched_on("exact"), [ratelimit::RATELIMIT_FILTER]);
        assert_eq!(
            switched_on("quota"),
            [quota::HEADER_MUTATION_FILTER, quota::QUOTA_FILTER]
        );

        // Every listener's filters are off until a route switches them on.
        let manager = super::super::http_connection_manager(&Default::default(), "t");
        let (router, others) = manager.http_filters.split_last().expect("filters");
        assert_eq!(router.name, "envoy.filters.http.router");
        assert!(!router.disabled);
        assert!(others.iter().all(|f| f.disabled), "{others:?}");
    }

    #[test]
    fn route_actions_carry_rewrites_weights_methods_and_timeouts() {
        use matcher::string_matcher::MatchPattern;
        use route::header_matcher::HeaderMatchSpecifier;

        let r = envoy_route(&route(json!({
            "name": "r", "match": {"path_prefix": "/api/", "methods": ["GET", "POST"]},
            "destination": {"weighted": [{"service": "a", "weight": 90}, {"service": "b", "weight": 10}]},
            "strip_prefix": true, "timeout_ms": 2500
        })));
        let a = action(&r);
        let rewrite = a.regex_rewrite.as_ref().expect("strip prefix");
        assert_eq!(
            rewrite.pattern.as_ref().map(|p| p.regex.as_str()),
            Some("^/api/*")
        );
        assert_eq!(rewrite.substitution, "/");
        assert_eq!(
            a.timeout,
            Some(protobuf::Duration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        let Some(ClusterSpecifier::WeightedClusters(weighted)) = &a.cluster_specifier else {
            panic!("weighted")
        };
        let weights: Vec<(String, u32)> = weighted
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
            .collect();
        assert_eq!(weights, [("a".into(), 90), ("b".into(), 10)]);
        let method = &r.r#match.as_ref().expect("match").headers[0];
        assert_eq!(method.name, ":method");
        let Some(HeaderMatchSpecifier::StringMatch(m)) = &method.header_match_specifier else {
            panic!("string match")
        };
        assert!(
            matches!(&m.match_pattern, Some(MatchPattern::SafeRegex(r)) if r.regex == "^(GET|POST)$")
        );

        let single = envoy_route(&route(json!({
            "name": "x", "match": {"path_exact": "/x", "methods": ["DELETE"]},
            "destination": {"service": "s"}, "prefix_rewrite": "/y"
        })));
        assert_eq!(action(&single).prefix_rewrite, "/y");
        assert_eq!(
            action(&single).cluster_specifier,
            Some(ClusterSpecifier::Cluster("s".into()))
        );
        assert!(
            action(&single).timeout.is_none(),
            "Envoy's default timeout applies"
        );
    }
}
