//! What a route does besides proxying to its destination: a redirect or a
//! direct response instead of it, a mirror of a share of its requests, and
//! injected faults for chaos drills. Translated in `translate/actions.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, NAME_PATTERN, is_dns_name};

/// Answers with a redirect instead of proxying. Unset parts keep the
/// request's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `https` (to HTTPS) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// The whole new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"))]
    pub path: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_query: bool,
}

/// Answers directly, without an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body's content type (default `text/plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A copy of a share of the requests goes to another service too; the
/// client never sees the mirror's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub service: String,
    /// Percent of the requests copied (1–100, default 100).
    #[serde(default = "default_percent")]
    pub percent: u32,
}

/// Injected faults: a share of the requests delayed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub ms: u32,
    pub percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub status: u16,
    pub percent: u32,
}

const REDIRECT_STATUSES: &[u16] = &[301, 302, 303, 307, 308];
const MAX_BODY: usize = 4 * 1024;
const MAX_DELAY_MS: u32 = 60_000;

fn default_redirect_status() -> u16 {
    301
}
fn default_percent() -> u32 {
    100
}

fn percent(value: u32, field: &str, errors: &mut Vec<FieldError>) {
    if !(1..=100).contains(&value) {
        errors.push(FieldError::new(field, "must be between 1 and 100"));
    }
}

impl Redirect {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        if let Some(scheme) = &self.scheme
            && scheme != "https"
            && scheme != "http"
        {
            errors.push(FieldError::new("redirect.scheme", "https or http"));
        }
        if let Some(host) = &self.host
            && !is_dns_name(host)
        {
            errors.push(FieldError::new("redirect.host", "must be a DNS name"));
        }
        if self.port.is_some_and(|p| !(1..=65_535).contains(&p)) {
            errors.push(FieldError::new(
                "redirect.port",
                "must be between 1 and 65535",
            ));
        }
        if let Some(path) = &self.path
            && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            errors.push(FieldError::new(
                "redirect.path",
                "must start with / and hold no spaces",
            ));
        }
        if !REDIRECT_STATUSES.contains(&self.status) {
            errors.push(FieldError::new(
                "redirect.status",
                "301, 302, 303, 307 or 308",
            ));
        }
        if self.scheme.is_none()
            && self.host.is_none()
            && self.port.is_none()
            && self.path.is_none()
            && !self.strip_query
        {
            errors.push(FieldError::new(
                "redirect",
                "change at least one of scheme, host, port, path, query",
            ));
        }
    }
}

impl DirectResponse {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        if !(200..=599).contains(&self.status) {
            errors.push(FieldError::new(
                "direct_response.status",
                "must be between 200 and 599",
            ));
        }
        if self.body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
            errors.push(FieldError::new("direct_response.body", "at most 4 KiB"));
        }
        if let Some(kind) = &self.content_type
            && (kind.is_empty()
                || kind.len() > 128
                || !kind.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            errors.push(FieldError::new(
                "direct_response.content_type",
                "a media type, e.g. application/json",
            ));
        }
    }
}

impl Mirror {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        percent(self.percent, "mirror.percent", errors);
    }
}

impl Fault {
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.delay.is_none() && self.abort.is_none() {
            errors.push(FieldError::new("fault", "set delay, abort or both"));
        }
        if let Some(delay) = &self.delay {
            if !(1..=MAX_DELAY_MS).contains(&delay.ms) {
                errors.push(FieldError::new(
                    "fault.delay.ms",
                    format!("must be between 1 and {MAX_DELAY_MS}"),
                ));
            }
            percent(delay.percent, "fault.delay.percent", errors);
        }
        if let Some(abort) = &self.abort {
            if !(200..=599).contains(&abort.status) {
                errors.push(FieldError::new(
                    "fault.abort.status",
                    "must be between 200 and 599",
                ));
            }
            percent(abort.percent, "fault.abort.percent", errors);
        }
    }
}

impl super::Route {
    /// The route's query conditions, host rewrite, idle timeout, mirror and
    /// faults.
    pub(super) fn validate_extras(&self, errors: &mut Vec<FieldError>) {
        for (i, query) in self.matches.query_params.iter().enumerate() {
            let field = format!("match.query_params[{i}]");
            if query.name.is_empty()
                || query.name.len() > 128
                || query
                    .name
                    .chars()
                    .any(|c| c.is_whitespace() || c == '&' || c == '=')
            {
                errors.push(FieldError::new(
                    format!("{field}.name"),
                    "a parameter name, without spaces, & or =",
                ));
            }
            let set = usize::from(query.exact.is_some())
                + usize::from(query.regex.is_some())
                + usize::from(query.present == Some(true));
            if set != 1 || query.present == Some(false) {
                errors.push(FieldError::new(
                    field.clone(),
                    "exactly one of exact, regex, present: true",
                ));
            }
            if let Some(regex) = &query.regex
                && let Err(e) = super::check_re2_regex(regex)
            {
                errors.push(FieldError::new(format!("{field}.regex"), e));
            }
        }
        if let Some(host) = &self.host_rewrite
            && !is_dns_name(host)
        {
            errors.push(FieldError::new("host_rewrite", "must be a DNS name"));
        }
        if self.host_rewrite_to_endpoint && self.host_rewrite.is_some() {
            errors.push(FieldError::new(
                "host_rewrite_to_endpoint",
                "not with host_rewrite: one Host rewrite at a time",
            ));
        }
        if self
            .idle_timeout_ms
            .is_some_and(|ms| !(1..=super::MAX_TIMEOUT_MS).contains(&ms))
        {
            errors.push(FieldError::new(
                "idle_timeout_ms",
                format!("must be between 1 and {}", super::MAX_TIMEOUT_MS),
            ));
        }
        if let Some(mirror) = &self.mirror {
            mirror.validate(errors);
            super::check_name(&mirror.service, "mirror.service", errors);
        }
        if let Some(fault) = &self.fault {
            fault.validate(errors);
        }
        if self
            .max_body_bytes
            .is_some_and(|bytes| !(1..=MAX_BUFFERED_BODY).contains(&bytes))
        {
            errors.push(FieldError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_BUFFERED_BODY} (32 MiB)"),
            ));
        }
    }
}

/// The largest body limit: bodies are buffered in Envoy up to it.
pub const MAX_BUFFERED_BODY: u32 = 32 * 1024 * 1024;
