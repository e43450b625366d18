//! Local replies: `jwt_authn`'s and RBAC's refusals rewritten into
//! ext-authz's JSON errors and `WWW-Authenticate` challenges.

use gatehouse_proto::{accesslog, hcm, protobuf};

use super::super::details_start_with;
use super::{INVALID_TOKEN_POLICY, JWT_DENIED, RBAC_DENIED, ROUTE_METADATA, SCOPE_KEY};

pub(super) fn answer(
    filter: accesslog::AccessLogFilter,
    status: Option<u32>,
    code: &str,
    message: &str,
    challenge: &str,
) -> hcm::ResponseMapper {
    hcm::ResponseMapper {
        status_code: status.map(|value| protobuf::UInt32Value { value }),
        headers_to_add: vec![super::super::set_header(
            "www-authenticate",
            challenge.into(),
        )],
        ..super::super::json_reply(filter, code, message)
    }
}

/// `jwt_authn`'s and RBAC's refusals in ext-authz's shape (ext-authz's own
/// answers are left alone); the first match wins.
pub fn local_replies() -> hcm::LocalReplyConfig {
    let invalid = "Bearer realm=\"gatehouse\", error=\"invalid_token\"";
    let token_refused = details_start_with(&format!(
        "{RBAC_DENIED}_matched_policy[{INVALID_TOKEN_POLICY}]"
    ));
    hcm::LocalReplyConfig {
        mappers: vec![
            answer(
                details_start_with(&format!("{JWT_DENIED}{{Jwt_is_missing")),
                None,
                "missing_credentials",
                "credentials are required",
                "Bearer realm=\"gatehouse\"",
            ),
            // Envoy answers 403 for a wrong audience; ext-authz says 401.
            answer(
                details_start_with(JWT_DENIED),
                Some(401),
                "invalid_token",
                "the token is not valid",
                invalid,
            ),
            answer(
                token_refused,
                Some(401),
                "invalid_token",
                "the token is not valid",
                invalid,
            ),
            answer(
                details_start_with(RBAC_DENIED),
                None,
                "insufficient_scope",
                "the credential lacks a required scope",
                &format!(
                    "Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"%METADATA(ROUTE:{ROUTE_METADATA}:{SCOPE_KEY})%\""
                ),
            ),
        ],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_mapped_most_specific_first() {
        let mappers = local_replies().mappers;
        let statuses: Vec<Option<u32>> = mappers
            .iter()
            .map(|m| m.status_code.map(|s| s.value))
            .collect();
        // missing (Envoy's 401), invalid (401), refused by the token checks (401), scope (403).
        assert_eq!(statuses, [None, Some(401), Some(401), None]);
        for mapper in &mappers {
            assert_eq!(
                mapper.headers_to_add[0].header.as_ref().unwrap().key,
                "www-authenticate"
            );
        }
    }
}
