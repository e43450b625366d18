//! A route's answers and extras → its Envoy route: a redirect or a direct
//! response instead of the route action; on a proxied route the mirror, the
//! Host rewrite and the idle timeout; injected faults as the fault filter's
//! per-route configuration (the filter sits before the router and does
//! nothing elsewhere); a body limit as the buffer filter's (off unless a
//! route enables it); query parameter conditions on the match.

use gatehouse_proto::{
    buffer, core, fault, fault_common, hcm, http_types, matcher, protobuf, route, to_any,
};

use super::duration_ms;
use crate::model::{
    DirectResponse, Fault, QueryMatch, Redirect, Route, actions::MAX_BUFFERED_BODY,
};

const FAULT_FILTER: &str = "envoy.filters.http.fault";
const BUFFER_FILTER: &str = "envoy.filters.http.buffer";

/// The buffer filter, off unless a route sets a body limit.
pub fn buffer_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: BUFFER_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &buffer::Buffer {
                max_request_bytes: Some(protobuf::UInt32Value {
                    value: MAX_BUFFERED_BODY,
                }),
            },
        ))),
        disabled: true,
        ..Default::default()
    }
}

/// The fault filter, before the router: does nothing on routes without faults.
pub fn fault_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: FAULT_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &fault::HttpFault::default(),
        ))),
        ..Default::default()
    }
}

/// Applies the route's answers and extras to its Envoy route.
pub fn apply(r: &Route, envoy: &mut route::Route) {
    if let Some(m) = envoy.r#match.as_mut() {
        m.query_parameters = r.matches.query_params.iter().map(query_matcher).collect();
    }
    if let Some(redirect) = &r.redirect {
        envoy.action = Some(route::route::Action::Redirect(redirect_action(redirect)));
    } else if let Some(direct) = &r.direct_response {
        envoy.action = Some(route::route::Action::DirectResponse(direct_action(direct)));
        envoy.response_headers_to_add.push(core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: "content-type".into(),
                value: direct
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain".into()),
                ..Default::default()
            }),
            append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                as i32,
            ..Default::default()
        });
    } else if let Some(route::route::Action::Route(action)) = envoy.action.as_mut() {
        if let Some(mirror) = &r.mirror {
            action.request_mirror_policies = vec![route::route_action::RequestMirrorPolicy {
                cluster: mirror.service.clone(),
                runtime_fraction: Some(core::RuntimeFractionalPercent {
                    default_value: Some(http_types::FractionalPercent {
                        numerator: mirror.percent,
                        denominator: http_types::fractional_percent::DenominatorType::Hundred
                            as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }];
        }
        use route::route_action::HostRewriteSpecifier;
        if let Some(host) = &r.host_rewrite {
            action.host_rewrite_specifier =
                Some(HostRewriteSpecifier::HostRewriteLiteral(host.clone()));
        } else if r.host_rewrite_to_endpoint {
            action.host_rewrite_specifier =
                Some(HostRewriteSpecifier::AutoHostRewrite(protobuf::BoolValue {
                    value: true,
                }));
        }
        action.idle_timeout = r.idle_timeout_ms.map(duration_ms);
    }
    if let Some(bytes) = r.max_body_bytes {
        let per_route = buffer::BufferPerRoute {
            r#override: Some(buffer::buffer_per_route::Override::Buffer(buffer::Buffer {
                max_request_bytes: Some(protobuf::UInt32Value { value: bytes }),
            })),
        };
        envoy
            .typed_per_filter_config
            .insert(BUFFER_FILTER.into(), to_any(&per_route));
    }
    if let Some(f) = &r.fault {
        envoy
            .typed_per_filter_config
            .insert(FAULT_FILTER.into(), to_any(&http_fault(f)));
    }
}

fn hundred(percent: u32) -> Option<http_types::FractionalPercent> {
    Some(http_types::FractionalPercent {
        numerator: percent,
        denominator: http_types::fractional_percent::DenominatorType::Hundred as i32,
    })
}

fn http_fault(f: &Fault) -> fault::HttpFault {
    fault::HttpFault {
        delay: f.delay.as_ref().map(|d| fault_common::FaultDelay {
            percentage: hundred(d.percent),
            fault_delay_secifier: Some(fault_common::fault_delay::FaultDelaySecifier::FixedDelay(
                duration_ms(d.ms),
            )),
        }),
        abort: f.abort.as_ref().map(|a| fault::FaultAbort {
            percentage: hundred(a.percent),
            error_type: Some(fault::fault_abort::ErrorType::HttpStatus(u32::from(
                a.status,
            ))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn redirect_action(r: &Redirect) -> route::RedirectAction {
    use route::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier,
    };
    route::RedirectAction {
        scheme_rewrite_specifier: r.scheme.as_deref().map(|scheme| match scheme {
            "https" => SchemeRewriteSpecifier::HttpsRedirect(true),
            other => SchemeRewriteSpecifier::SchemeRedirect(other.to_owned()),
        }),
        host_redirect: r.host.clone().unwrap_or_default(),
        port_redirect: r.port.unwrap_or_default(),
        path_rewrite_specifier: r.path.clone().map(PathRewriteSpecifier::PathRedirect),
        response_code: match r.status {
            302 => Code::Found,
            303 => Code::SeeOther,
            307 => Code::TemporaryRedirect,
            308 => Code::PermanentRedirect,
            _ => Code::MovedPermanently,
        } as i32,
        strip_query: r.strip_query,
    }
}

fn direct_action(d: &DirectResponse) -> route::DirectResponseAction {
    route::DirectResponseAction {
        status: u32::from(d.status),
        body: d.body.clone().map(|body| core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(body)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn query_matcher(q: &QueryMatch) -> route::QueryParameterMatcher {
    use matcher::string_matcher::MatchPattern;
    use route::query_parameter_matcher::QueryParameterMatchSpecifier as Spec;

    let pattern = match (&q.exact, &q.regex) {
        (Some(exact), _) => Some(MatchPattern::Exact(exact.clone())),
        (None, Some(regex)) => Some(MatchPattern::SafeRegex(matcher::RegexMatcher {
            regex: regex.clone(),
            ..Default::default()
        })),
        (None, None) => None,
    };
    route::QueryParameterMatcher {
        name: q.name.clone(),
        query_parameter_match_specifier: Some(match pattern {
            Some(pattern) => Spec::StringMatch(matcher::StringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            }),
            None => Spec::PresentMatch(true),
        }),
    }
}
