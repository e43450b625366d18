//! API versions: a route says which version of which API it serves, and
//! when that version is deprecated and sunset. Versions are told apart by
//! the route's own match: a path prefix (`/v1/…`), a header
//! (`api-version: 2`) or a media type (`accept` matching
//! `application/vnd.orders.v2+json`). Dates are RFC 3339 (a plain date is
//! midnight UTC).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{FieldError, auth::is_token};

/// The version of an API a route serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiVersion {
    /// The API (`orders`).
    pub api: String,
    /// This version's name (`v1`, `2024-06-01`).
    pub name: String,
    /// From then on, responses carry `Deprecation` (RFC 9745); a date in the
    /// future announces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<String>,
    /// Responses carry `Sunset` (RFC 8594); from then on the gateway answers
    /// 410 `gone` instead of calling the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_at: Option<String>,
    /// Where clients should go: `Link: <…>; rel="successor-version"` and the
    /// 410 body. An absolute path or an http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
}

/// Seconds since the Unix epoch of an RFC 3339 date-time or a plain date.
pub fn parse_date(text: &str) -> Option<i64> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    OffsetDateTime::parse(&full, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

impl ApiVersion {
    pub fn deprecated_s(&self) -> Option<i64> {
        self.deprecated_at.as_deref().and_then(parse_date)
    }

    pub fn sunset_s(&self) -> Option<i64> {
        self.sunset_at.as_deref().and_then(parse_date)
    }

    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        for (field, value) in [("version.api", &self.api), ("version.name", &self.name)] {
            if !is_token(value) {
                errors.push(FieldError::new(
                    field,
                    "must be a single token: letters, digits, '.', '_', ':', '/', '-'",
                ));
            }
        }
        let dates = [
            ("version.deprecated_at", &self.deprecated_at),
            ("version.sunset_at", &self.sunset_at),
        ];
        for (field, date) in dates {
            if let Some(date) = date
                && parse_date(date).is_none()
            {
                errors.push(FieldError::new(
                    field,
                    "must be an RFC 3339 date-time (2027-01-01T00:00:00Z) or date (2027-01-01)",
                ));
            }
        }
        if let (Some(deprecated), Some(sunset)) = (self.deprecated_s(), self.sunset_s())
            && sunset <= deprecated
        {
            errors.push(FieldError::new(
                "version.sunset_at",
                "must be after deprecated_at",
            ));
        }
        if let Some(successor) = &self.successor {
            let shape = successor.starts_with('/')
                || successor.starts_with("https://")
                || successor.starts_with("http://");
            let clean = !successor
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'));
            if !shape || !clean || successor.len() > 2048 {
                errors.push(FieldError::new(
                    "version.successor",
                    "must be an absolute path or an http(s) URL, without spaces, quotes or angle brackets",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(json: serde_json::Value) -> ApiVersion {
        serde_json::from_value(json).expect("version")
    }

    fn fields(v: &ApiVersion) -> Vec<String> {
        let mut errors = Vec::new();
        v.validate(&mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn dates_are_rfc3339_and_the_sunset_comes_after_the_deprecation() {
        assert_eq!(parse_date("2027-01-01"), Some(1_798_761_600));
        assert_eq!(parse_date("2027-01-01T00:00:00Z"), Some(1_798_761_600));
        assert_eq!(parse_date("2027-01-01T01:00:00+01:00"), Some(1_798_761_600));
        assert_eq!(parse_date("next week"), None);
        let ok = version(serde_json::json!({
            "api": "orders", "name": "v1", "deprecated_at": "2026-06-01",
            "sunset_at": "2027-01-01", "successor": "/v2/orders"
        }));
        assert!(fields(&ok).is_empty());
        let bad = version(serde_json::json!({
            "api": "orders api", "name": "v1", "deprecated_at": "2027-06-01",
            "sunset_at": "2027-01-01", "successor": "javascript:alert(1)"
        }));
        assert_eq!(
            fields(&bad),
            ["version.api", "version.sunset_at", "version.successor"]
        );
        let garbled = version(serde_json::json!({
            "api": "orders", "name": "v1", "sunset_at": "soon"
        }));
        assert_eq!(fields(&garbled), ["version.sunset_at"]);
    }
}
