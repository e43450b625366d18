//! Who may use the xDS port. With a token configured, every stream (ADS,
//! the stats sink and the usage reports) must present as `authorization:
//! Bearer …` either the shared token (compared in constant time) or a node
//! or fleet token minted through the admin API (found by its SHA-256 in the
//! newest configuration). Anything else is refused `UNAUTHENTICATED` before
//! a byte of configuration is sent or a report is read. A node token's
//! binding travels with the request: the ADS stream serves only the nodes
//! it admits and ends when the token is revoked (`server.rs`).

use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

use super::Rollout;
use crate::{model::node_token::StoredNodeToken, secret::Secret};

/// The node token a stream presented (absent: the shared token).
#[derive(Clone, Debug)]
pub struct NodeBinding(pub StoredNodeToken);

impl NodeBinding {
    /// Whether the token is still in the newest configuration.
    pub fn valid(&self, rollout: &Rollout) -> bool {
        rollout.latest().is_some_and(|s| {
            s.node_tokens
                .iter()
                .any(|t| t.name == self.0.name && t.sha256 == self.0.sha256)
        })
    }
}

/// The names a node's client certificate gives it: DNS and URI SANs and
/// the subject's common name (a node id must be one of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNames(pub Vec<String>);

impl PeerNames {
    /// From the first (leaf) certificate of a TLS peer, if it parses.
    pub fn of(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            names.extend(san.value.general_names.iter().filter_map(|n| match n {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            }));
        }
        Some(Self(names))
    }

    pub fn admits(&self, node_id: &str) -> bool {
        self.0.iter().any(|n| n == node_id)
    }
}

/// The check tonic runs on every call to the xDS port.
#[derive(Clone, Debug)]
pub struct NodeToken {
    shared: Option<Secret>,
    /// Where node tokens are looked up (the newest snapshot).
    rollout: Option<Rollout>,
}

impl NodeToken {
    /// `None`: every client is served (the port should then be loopback only).
    pub fn new(token: Option<Secret>) -> Self {
        Self {
            shared: token,
            rollout: None,
        }
    }

    /// Accepts the node and fleet tokens of `rollout`'s newest snapshot too.
    pub fn with_node_tokens(mut self, rollout: Rollout) -> Self {
        self.rollout = Some(rollout);
        self
    }

    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.shared else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
            return Ok(request);
        }
        let hash = crate::secret::hash(presented);
        let bound = self
            .rollout
            .as_ref()
            .and_then(Rollout::latest)
            .and_then(|s| {
                s.node_tokens
                    .iter()
                    .find(|t| bool::from(t.sha256.as_bytes().ct_eq(hash.as_bytes())))
                    .cloned()
            });
        match bound {
            Some(binding) if !presented.is_empty() => {
                request.extensions_mut().insert(NodeBinding(binding));
                Ok(request)
            }
            _ => Err(Status::unauthenticated(
                "this control plane requires its xDS token or a node token",
            )),
        }
    }
}

impl Interceptor for NodeToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        request
    }

    #[test]
    fn only_the_configured_token_passes() {
        let guard = NodeToken::new(Some(Secret::new("s3cret-token".into())));
        assert!(guard.check(with(Some("Bearer s3cret-token"))).is_ok());
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("s3cret-token"),
            Some("Bearer "),
        ] {
            let status = guard.check(with(bad)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
    }

    #[test]
    fn without_a_token_everyone_passes() {
        assert!(NodeToken::new(None).check(with(None)).is_ok());
    }
}
