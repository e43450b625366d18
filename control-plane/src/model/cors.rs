//! A route's CORS policy and its header rules. Translated in
//! `translate/cors.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, check_re2_regex, is_header_name};

/// Cross-origin requests from browsers. Envoy answers a preflight itself,
/// before authentication and rate limits (so it never gets 401 or 429);
/// the real request still needs its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed, exactly (`https://app.example.com`), or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Origins allowed by RE2 pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin_regexes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
}

/// Headers set, added or removed on the request (before it goes upstream)
/// or on the response (before it goes to the client).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// Replaces any value the header had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Adds a value, keeping those there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

const MAX_ENTRIES: usize = 32;
const MAX_VALUE_BYTES: usize = 8 * 1024;
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
];
/// Longest preflight cache a browser honours (Firefox: one day).
const MAX_AGE_S: u32 = 86_400;

/// Headers a route may not touch: pseudo-headers, Host, Envoy's own, and
/// the identity headers Gatehouse sets after authentication (a route that
/// set them would let anyone pose as a consumer).
fn reserved(name: &str) -> bool {
    name.starts_with(':')
        || name == "host"
        || name.starts_with("x-envoy-")
        || name.starts_with("x-gatehouse-")
}

impl Cors {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.allow_origins.is_empty() && self.allow_origin_regexes.is_empty() {
            errors.push(FieldError::new(
                "cors.allow_origins",
                "name at least one origin (or allow_origin_regexes)",
            ));
        }
        for (i, origin) in self.allow_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && origin.len() <= 253
                    && !origin.chars().any(|c| c.is_whitespace() || c.is_control()));
            if !ok {
                errors.push(FieldError::new(
                    format!("cors.allow_origins[{i}]"),
                    "must be * or scheme://host[:port], without a path",
                ));
            }
        }
        if self.allow_credentials && self.allow_origins.iter().any(|o| o == "*") {
            errors.push(FieldError::new(
                "cors.allow_credentials",
                "browsers refuse credentials with the * origin: list the origins",
            ));
        }
        for (i, pattern) in self.allow_origin_regexes.iter().enumerate() {
            if let Err(message) = check_re2_regex(pattern) {
                errors.push(FieldError::new(
                    format!("cors.allow_origin_regexes[{i}]"),
                    message,
                ));
            }
        }
        for (i, method) in self.allow_methods.iter().enumerate() {
            if !METHODS.contains(&method.as_str()) {
                errors.push(FieldError::new(
                    format!("cors.allow_methods[{i}]"),
                    format!("must be one of {}", METHODS.join(", ")),
                ));
            }
        }
        for (list, names) in [
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                if !is_header_name(name) {
                    errors.push(FieldError::new(
                        format!("cors.{list}[{i}]"),
                        "must be a lower-case header name",
                    ));
                }
            }
        }
        if self.max_age_s.is_some_and(|age| age > MAX_AGE_S) {
            errors.push(FieldError::new(
                "cors.max_age_s",
                format!("must be at most {MAX_AGE_S}"),
            ));
        }
    }
}

impl HeaderRules {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        for (side, rule) in [("request", &self.request), ("response", &self.response)] {
            let Some(rule) = rule else { continue };
            let at = |what: &str| format!("headers.{side}.{what}");
            if rule.set.len() + rule.add.len() + rule.remove.len() > MAX_ENTRIES {
                errors.push(FieldError::new(
                    format!("headers.{side}"),
                    format!("at most {MAX_ENTRIES} rules"),
                ));
            }
            for (what, map) in [("set", &rule.set), ("add", &rule.add)] {
                for (name, value) in map {
                    check_name(name, &at(&format!("{what}.{name}")), errors);
                    if value.len() > MAX_VALUE_BYTES
                        || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
                    {
                        errors.push(FieldError::new(
                            at(&format!("{what}.{name}")),
                            "a value of at most 8 KiB, on one line",
                        ));
                    }
                }
            }
            for (i, name) in rule.remove.iter().enumerate() {
                check_name(name, &at(&format!("remove[{i}]")), errors);
            }
        }
    }
}

fn check_name(name: &str, field: &str, errors: &mut Vec<FieldError>) {
    if !is_header_name(name) {
        errors.push(FieldError::new(field, "must be a lower-case header name"));
    } else if reserved(name) {
        errors.push(FieldError::new(
            field,
            "pseudo-headers, host, x-envoy-* and x-gatehouse-* (identity) headers cannot be changed",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cors_and_header_rules_are_checked_by_field() {
        let cors: Cors = serde_json::from_value(json!({
            "allow_origins": ["*", "https://app.example.com/"], "allow_credentials": true,
            "allow_origin_regexes": ["("], "allow_methods": ["FETCH"], "max_age_s": 100000
        }))
        .expect("json");
        let mut errors = Vec::new();
        cors.validate(&mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cors.allow_origins[1]",
                "cors.allow_credentials",
                "cors.allow_origin_regexes[0]",
                "cors.allow_methods[0]",
                "cors.max_age_s"
            ]
        );

        let rules: HeaderRules = serde_json::from_value(json!({
            "request": {"set": {"x-gatehouse-consumer": "admin", "x-ok": "1"}, "remove": [":path"]},
            "response": {"add": {"x-bad": "a\r\nb"}}
        }))
        .expect("json");
        let mut errors = Vec::new();
        rules.validate(&mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "headers.request.set.x-gatehouse-consumer",
                "headers.request.remove[0]",
                "headers.response.add.x-bad"
            ]
        );
    }
}
