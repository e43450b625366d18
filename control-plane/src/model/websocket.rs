//! WebSocket routes: the upgrade is allowed on a route only when it says
//! so, with a bound on how long a connection may last (the route's
//! `idle_timeout_ms` closes a silent one). Browsers cannot set headers on a
//! WebSocket, so on these routes ext-authz also takes the credential from
//! the query (`api_key`, `access_token`) or from `Sec-WebSocket-Protocol`,
//! and removes it before the request goes upstream.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Route, auth::AuthMethod};

/// A route's WebSocket settings; present (even empty) turns the upgrade on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocket {
    /// A connection is closed after this long, busy or not (no limit by
    /// default; clients are expected to reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_ms: Option<u32>,
}

/// The longest a WebSocket connection may be allowed to last: a week.
pub const MAX_WEBSOCKET_DURATION_MS: u32 = 7 * 24 * 3_600_000;

impl Route {
    /// A WebSocket route proxies (no redirect or direct answer), does not
    /// buffer bodies, and is authenticated by ext-authz (which can read
    /// browsers' credentials).
    pub(super) fn validate_websocket(&self, errors: &mut Vec<FieldError>) {
        let Some(ws) = &self.websocket else {
            return;
        };
        if ws
            .max_duration_ms
            .is_some_and(|ms| !(1..=MAX_WEBSOCKET_DURATION_MS).contains(&ms))
        {
            errors.push(FieldError::new(
                "websocket.max_duration_ms",
                format!("must be between 1 and {MAX_WEBSOCKET_DURATION_MS} (a week)"),
            ));
        }
        for (field, set, why) in [
            (
                "redirect",
                self.redirect.is_some(),
                "a WebSocket route proxies its connections",
            ),
            (
                "direct_response",
                self.direct_response.is_some(),
                "a WebSocket route proxies its connections",
            ),
            (
                "max_body_bytes",
                self.max_body_bytes.is_some(),
                "a WebSocket stream has no body to buffer",
            ),
        ] {
            if set {
                errors.push(FieldError::new(field, format!("not with websocket: {why}")));
            }
        }
        if let Some(auth) = &self.auth
            && auth.method != AuthMethod::None
            && auth.verified_in_envoy()
        {
            errors.push(FieldError::new(
                "auth.verify_in",
                "WebSocket routes verify credentials in ext-authz (browsers send them in the query or Sec-WebSocket-Protocol, which ext-authz reads and removes)",
            ));
        }
        if self.timeout_ms.is_some_and(|t| t > 0) {
            errors.push(FieldError::new(
                "timeout_ms",
                "not with websocket: a connection lasts until websocket.max_duration_ms or idle_timeout_ms",
            ));
        }
    }
}
