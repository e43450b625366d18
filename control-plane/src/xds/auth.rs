//! Who may use the xDS port: with a token configured, every stream (ADS and
//! the key usage reports) must present it as `authorization: Bearer …`,
//! compared in constant time; anything else is refused `UNAUTHENTICATED`
//! before a byte of configuration is sent or a report is read.

use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

use crate::secret::Secret;

/// The check tonic runs on every call to the xDS port.
#[derive(Clone, Debug)]
pub struct NodeToken(Option<Secret>);

impl NodeToken {
    /// `None`: every client is served (the port should then be loopback only).
    pub fn new(token: Option<Secret>) -> Self {
        Self(token)
    }

    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "this control plane requires its xDS token",
            ))
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
        let check = NodeToken::new(Some(Secret::new("the-right-token-123".into())));
        assert!(
            check
                .check(with(Some("Bearer the-right-token-123")))
                .is_ok()
        );
        for refused in [
            None,
            Some("Bearer the-wrong-token-123"),
            Some("the-right-token-123"),
            Some("Bearer the-right-token-1234"),
            Some("Bearer "),
        ] {
            let status = check.check(with(refused)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains("right-token"));
        }
    }

    #[test]
    fn without_a_token_everyone_passes() {
        assert!(NodeToken::new(None).check(with(None)).is_ok());
    }
}
