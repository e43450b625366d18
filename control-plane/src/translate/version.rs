//! API versions in Envoy. A route with a deprecated or sunset version adds
//! `Deprecation` (RFC 9745, `@<unix seconds>`), `Sunset` (RFC 8594, an HTTP
//! date) and `Link: <successor>; rel="successor-version"` to its responses.
//!
//! The sunset itself is decided inside Envoy, at the second: the route
//! enables the `gatehouse.sunset` RBAC filter with a deny policy whose CEL
//! condition is `request.time >= timestamp("<sunset>")`, and a local-reply
//! mapper turns that denial into 410 `gone` naming the successor (read from
//! the route's metadata). No rebuild at the sunset, nothing to miss while
//! the control plane is away.

use gatehouse_proto::{cel, core, hcm, protobuf, rbac, rbac_filter, route, to_any};
use time::OffsetDateTime;

use super::{details_start_with, set_header as header};
use crate::model::Route;

/// The RBAC filter a sunset route enables (allows everything elsewhere).
pub const SUNSET_FILTER: &str = "gatehouse.sunset";
const SUNSET_POLICY: &str = "gatehouse_sunset";
/// Route metadata namespace of a version's successor and sunset.
const VERSION_METADATA: &str = "gatehouse.version";

pub fn sunset_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: SUNSET_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &rbac_filter::Rbac::default(),
        ))),
        ..Default::default()
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix_s: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

fn string(value: &str) -> protobuf::Value {
    protobuf::Value {
        kind: Some(protobuf::value::Kind::StringValue(value.into())),
    }
}

/// CEL: `request.time >= timestamp("<rfc3339>")`, as the parsed AST RBAC takes.
fn from(unix_s: i64) -> cel::Expr {
    use cel::{constant::ConstantKind, expr::ExprKind};
    let rfc3339 = OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let node = |id, kind| cel::Expr {
        id,
        expr_kind: Some(kind),
    };
    let call = |function: &str, args| {
        ExprKind::CallExpr(Box::new(cel::expr::Call {
            target: None,
            function: function.into(),
            args,
        }))
    };
    let now = ExprKind::SelectExpr(Box::new(cel::expr::Select {
        operand: Some(Box::new(node(
            2,
            ExprKind::IdentExpr(cel::expr::Ident {
                name: "request".into(),
            }),
        ))),
        field: "time".into(),
        test_only: false,
    }));
    let sunset = node(
        5,
        ExprKind::ConstExpr(cel::Constant {
            constant_kind: Some(ConstantKind::StringValue(rfc3339)),
        }),
    );
    node(
        1,
        call(
            "_>=_",
            vec![node(3, now), node(4, call("timestamp", vec![sunset]))],
        ),
    )
}

/// Adds the version's headers, and its sunset, to `envoy`.
pub fn apply(r: &Route, envoy: &mut route::Route) {
    let Some(version) = &r.version else { return };
    if let Some(at) = version.deprecated_s() {
        envoy
            .response_headers_to_add
            .push(header("deprecation", format!("@{at}")));
    }
    if let Some(successor) = &version.successor
        && (version.deprecated_at.is_some() || version.sunset_at.is_some())
    {
        envoy.response_headers_to_add.push(header(
            "link",
            format!("<{successor}>; rel=\"successor-version\""),
        ));
    }
    let Some(sunset) = version.sunset_s() else {
        return;
    };
    envoy
        .response_headers_to_add
        .push(header("sunset", http_date(sunset)));
    let policy = rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::Any(true)),
        }],
        principals: vec![rbac::Principal {
            identifier: Some(rbac::principal::Identifier::Any(true)),
        }],
        condition: Some(from(sunset)),
        ..Default::default()
    };
    let per_route = rbac_filter::RbacPerRoute {
        rbac: Some(rbac_filter::Rbac {
            rules: Some(rbac::Rbac {
                action: rbac::rbac::Action::Deny as i32,
                policies: [(SUNSET_POLICY.to_owned(), policy)].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    envoy
        .typed_per_filter_config
        .insert(SUNSET_FILTER.into(), to_any(&per_route));
    let mut fields = vec![("sunset".to_owned(), string(&http_date(sunset)))];
    if let Some(successor) = &version.successor {
        fields.push(("successor".to_owned(), string(successor)));
    }
    envoy
        .metadata
        .get_or_insert_with(Default::default)
        .filter_metadata
        .insert(
            VERSION_METADATA.into(),
            protobuf::Struct {
                fields: fields.into_iter().collect(),
            },
        );
}

/// A sunset route's denial, as 410 `gone` naming the successor (first of
/// the local-reply mappers: RBAC's other denials are scope refusals).
pub fn sunset_reply() -> hcm::ResponseMapper {
    use core::substitution_format_string::Format;
    let field = |value: &str| string(value);
    let body = protobuf::Struct {
        fields: [
            ("error", field("gone")),
            (
                "message",
                field("this API version has been retired; use its successor"),
            ),
            (
                "sunset",
                field(&format!("%METADATA(ROUTE:{VERSION_METADATA}:sunset)%")),
            ),
            (
                "successor",
                field(&format!("%METADATA(ROUTE:{VERSION_METADATA}:successor)%")),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    };
    hcm::ResponseMapper {
        filter: Some(details_start_with(&format!(
            "rbac_access_denied_matched_policy[{SUNSET_POLICY}]"
        ))),
        status_code: Some(protobuf::UInt32Value { value: 410 }),
        body_format_override: Some(core::SubstitutionFormatString {
            format: Some(Format::JsonFormat(body)),
            omit_empty_values: true,
            content_type: "application/json".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdate() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn a_sunset_route_gets_headers_a_deny_policy_and_its_successor() {
        let r: Route = serde_json::from_value(serde_json::json!({
            "name": "orders-v1", "match": {"path_prefix": "/v1/orders"},
            "destination": {"service": "orders"},
            "version": {"api": "orders", "name": "v1", "deprecated_at": "2026-06-01",
                        "sunset_at": "2027-01-01", "successor": "/v2/orders"}
        }))
        .expect("route");
        let mut envoy = route::Route::default();
        apply(&r, &mut envoy);
        let headers: Vec<(String, String)> = envoy
            .response_headers_to_add
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        assert_eq!(
            headers,
            [
                ("deprecation".into(), "@1780272000".into()),
                (
                    "link".into(),
                    "</v2/orders>; rel=\"successor-version\"".into()
                ),
                ("sunset".into(), "Fri, 01 Jan 2027 00:00:00 GMT".into()),
            ]
        );
        assert!(envoy.typed_per_filter_config.contains_key(SUNSET_FILTER));
        let metadata = &envoy.metadata.expect("metadata").filter_metadata[VERSION_METADATA];
        assert!(metadata.fields.contains_key("successor"));
        let plain: Route = serde_json::from_value(serde_json::json!({
            "name": "orders-v2", "match": {"path_prefix": "/v2/orders"},
            "destination": {"service": "orders"}, "version": {"api": "orders", "name": "v2"}
        }))
        .expect("route");
        let mut envoy = route::Route::default();
        apply(&plain, &mut envoy);
        assert_eq!(
            envoy,
            route::Route::default(),
            "a current version changes nothing"
        );
    }
}
