//! xDS tokens for one node or one fleet, minted and revoked through the
//! admin API. Only the SHA-256 is kept. A stream presenting one serves only
//! a node of its fleet (and its node id, when bound to one), and is cut off
//! when the token is revoked.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name, gateway::is_fleet};

/// A node or fleet xDS token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredNodeToken {
    pub name: String,
    /// Hex SHA-256 of the token (never shown).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub sha256: String,
    /// The token's first characters, to recognise it.
    pub prefix: String,
    /// Only nodes whose `cluster` is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// Only the node with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub created_at_ms: i64,
}

impl StoredNodeToken {
    /// Checks a new token's name and binding.
    pub fn validate(name: &str, fleet: Option<&str>, node: Option<&str>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(name, "name", &mut errors);
        if let Some(fleet) = fleet
            && !is_fleet(fleet)
        {
            errors.push(FieldError::new(
                "fleet",
                "must be an Envoy node cluster: 1-63 letters, digits, '.', '_' or '-'",
            ));
        }
        if let Some(node) = node
            && (node.is_empty() || node.len() > 256 || node.chars().any(char::is_control))
        {
            errors.push(FieldError::new("node", "must be an Envoy node id"));
        }
        if fleet.is_none() && node.is_none() {
            errors.push(FieldError::new(
                "fleet",
                "bind the token to a fleet, a node, or both (the shared xDS token serves everyone)",
            ));
        }
        errors
    }

    /// Whether a node (`id`, `cluster`) may use this token.
    pub fn admits(&self, id: &str, cluster: &str) -> bool {
        self.fleet.as_deref().is_none_or(|f| f == cluster)
            && self.node.as_deref().is_none_or(|n| n == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_and_admits_only_its_nodes() {
        assert!(StoredNodeToken::validate("edge", Some("internal"), None).is_empty());
        let fields: Vec<String> = StoredNodeToken::validate("Edge", None, None)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["name", "fleet"]);
        let token = StoredNodeToken {
            name: "t".into(),
            sha256: String::new(),
            prefix: "ghn_".into(),
            fleet: Some("internal".into()),
            node: Some("envoy-1".into()),
            created_at_ms: 0,
        };
        assert!(token.admits("envoy-1", "internal"));
        assert!(!token.admits("envoy-1", "gatehouse"));
        assert!(!token.admits("envoy-2", "internal"));
    }
}
