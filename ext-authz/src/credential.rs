//! Where a request's credential comes from: the `x-api-key` header or the
//! `api_key` query parameter for API keys, `Authorization: Bearer` for
//! tokens; on WebSocket routes (browsers cannot set headers there) also the
//! `access_token` query parameter and `Sec-WebSocket-Protocol` entries
//! `gatehouse.key.<key>` and `gatehouse.bearer.<token>`. More than one
//! credential the route accepts is ambiguous. What is taken from the query
//! or the protocol header on a WebSocket route is removed upstream.

use std::{borrow::Cow, collections::HashMap};

pub const API_KEY_HEADER: &str = "x-api-key";
pub const API_KEY_QUERY: &str = "api_key";
/// RFC 6750's query parameter for a bearer token (WebSocket routes only).
pub const ACCESS_TOKEN_QUERY: &str = "access_token";
pub const PROTOCOL_HEADER: &str = "sec-websocket-protocol";
const PROTOCOL_KEY_PREFIX: &str = "gatehouse.key.";
const PROTOCOL_BEARER_PREFIX: &str = "gatehouse.bearer.";

/// What the route accepts.
pub struct Accepted {
    pub api_key: bool,
    pub bearer: bool,
    pub websocket: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    /// The query parameter of this name.
    Query(&'static str),
    /// An entry of `Sec-WebSocket-Protocol`.
    Protocol,
    /// The TLS client certificate (nothing to remove from the request).
    Certificate,
}

pub enum Credential<'a> {
    ApiKey(Cow<'a, str>, Source),
    Bearer(Cow<'a, str>, Source),
}

impl Credential<'_> {
    pub fn source(&self) -> Source {
        match self {
            Credential::ApiKey(_, source) | Credential::Bearer(_, source) => *source,
        }
    }
}

/// More than one credential the route accepts: refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// The one credential the route accepts; `Err` when there are several.
pub fn find<'a>(
    accepted: &Accepted,
    headers: &'a HashMap<String, String>,
    path: &'a str,
) -> Result<Option<Credential<'a>>, Ambiguous> {
    let mut found = None;
    let mut offer = |credential: Credential<'a>| match found {
        None => {
            found = Some(credential);
            Ok(())
        }
        Some(_) => Err(Ambiguous),
    };
    if accepted.api_key {
        if let Some(key) = headers.get(API_KEY_HEADER) {
            offer(Credential::ApiKey(Cow::Borrowed(key), Source::Header))?;
        }
        if path.contains('?') {
            for key in query_values(path, API_KEY_QUERY) {
                offer(Credential::ApiKey(key, Source::Query(API_KEY_QUERY)))?;
            }
        }
    }
    if accepted.bearer
        && let Some(value) = headers.get("authorization")
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        offer(Credential::Bearer(
            Cow::Borrowed(token.trim()),
            Source::Header,
        ))?;
    }
    if !accepted.websocket {
        return Ok(found);
    }
    if accepted.bearer && path.contains('?') {
        for token in query_values(path, ACCESS_TOKEN_QUERY) {
            offer(Credential::Bearer(token, Source::Query(ACCESS_TOKEN_QUERY)))?;
        }
    }
    if let Some(protocols) = headers.get(PROTOCOL_HEADER) {
        for entry in protocols.split(',').map(str::trim) {
            if let Some(key) = entry.strip_prefix(PROTOCOL_KEY_PREFIX)
                && accepted.api_key
            {
                offer(Credential::ApiKey(Cow::Borrowed(key), Source::Protocol))?;
            } else if let Some(token) = entry.strip_prefix(PROTOCOL_BEARER_PREFIX)
                && accepted.bearer
            {
                offer(Credential::Bearer(Cow::Borrowed(token), Source::Protocol))?;
            }
        }
    }
    Ok(found)
}

/// `Sec-WebSocket-Protocol` without Gatehouse's credential entries: the
/// value to send upstream, `None` when nothing else was offered.
pub fn protocols_without_credentials(headers: &HashMap<String, String>) -> Option<String> {
    let rest: Vec<&str> = headers
        .get(PROTOCOL_HEADER)?
        .split(',')
        .map(str::trim)
        .filter(|e| {
            !e.is_empty()
                && !e.starts_with(PROTOCOL_KEY_PREFIX)
                && !e.starts_with(PROTOCOL_BEARER_PREFIX)
        })
        .collect();
    (!rest.is_empty()).then(|| rest.join(", "))
}

/// Values of a query parameter, percent-decoded.
pub fn query_values<'a>(path: &'a str, name: &str) -> Vec<Cow<'a, str>> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
        .collect()
}

/// Percent-decodes `s` (`+` as a space, invalid escapes kept as they are).
pub fn percent_decode_str(s: &str) -> Cow<'_, str> {
    percent_decode(s)
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (hex_digit(bytes.get(i + 1)), hex_digit(bytes.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex_digit(byte: Option<&u8>) -> Option<u8> {
    char::from(*byte?).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(query_values("/a?api_key=gk_1&x=2", "api_key"), vec!["gk_1"]);
        assert_eq!(
            query_values("/a?x=1&api%5Fkey=gk%5F2", "api_key"),
            vec!["gk_2"]
        );
        assert_eq!(query_values("/a?api_key=1&api_key=2", "api_key").len(), 2);
        assert!(query_values("/a", "api_key").is_empty());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    fn headers(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn websocket_routes_also_read_the_query_token_and_the_protocol_header() {
        let all = Accepted {
            api_key: true,
            bearer: true,
            websocket: true,
        };
        let plain = Accepted {
            websocket: false,
            ..all
        };
        let none = headers(&[]);
        let found = find(&all, &none, "/ws?access_token=t.k.n").expect("one");
        assert!(
            matches!(found, Some(Credential::Bearer(t, Source::Query(ACCESS_TOKEN_QUERY))) if t == "t.k.n")
        );
        assert!(
            find(&plain, &none, "/ws?access_token=t")
                .expect("none")
                .is_none(),
            "access_token only on WebSocket routes"
        );
        let offered = headers(&[(PROTOCOL_HEADER, "chat, gatehouse.key.gk_abc")]);
        let found = find(&all, &offered, "/ws").expect("one");
        assert!(matches!(found, Some(Credential::ApiKey(k, Source::Protocol)) if k == "gk_abc"));
        assert!(find(&plain, &offered, "/ws").expect("none").is_none());
        assert_eq!(
            protocols_without_credentials(&offered).as_deref(),
            Some("chat")
        );
        let only = headers(&[(PROTOCOL_HEADER, "gatehouse.bearer.x")]);
        assert_eq!(protocols_without_credentials(&only), None);
        let two = headers(&[
            (PROTOCOL_HEADER, "gatehouse.bearer.x"),
            (API_KEY_HEADER, "gk_1"),
        ]);
        assert!(find(&all, &two, "/ws").is_err(), "ambiguous");
    }
}
