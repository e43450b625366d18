//! A minimal ADS client for Gatehouse's own services.
//!
//! ext-authz and ratelimit-service each subscribe to one resource type over
//! state-of-the-world xDS. Every response goes to a [`Receiver`]; what it
//! accepts is ACKed, what it refuses is NACKed with its reason (and the
//! receiver keeps its last good state). The client reconnects with capped
//! exponential backoff and resumes from the last accepted version, so a
//! control-plane restart costs nothing but a fresh response.
//!
//! A control plane started with an xDS token refuses streams without it:
//! [`XdsToken`] presents it as `authorization: Bearer …`.

use std::time::Duration;

use gatehouse_proto::{
    core::Node,
    discovery::{
        DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
    protobuf::Any,
    rpc,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What to subscribe to, and as whom.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The control plane's xDS address, e.g. `http://127.0.0.1:18000`.
    pub endpoint: String,
    pub node_id: String,
    pub node_cluster: String,
    pub type_url: String,
    /// Presented on every stream when the control plane requires one.
    pub token: Option<XdsToken>,
    /// The CA that signed the control plane's xDS certificate (`https://`).
    pub ca: Option<XdsCa>,
}

/// How to reach an `https://` xDS endpoint: the PEM CA bundle its
/// certificate is verified against, and this node's client certificate and
/// key when the control plane requires one (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct XdsCa {
    pub ca: String,
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for XdsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsCa")
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// A channel endpoint for the control plane's port: TLS verified against
/// `ca` for `https://` URLs (which need one), plaintext for `http://`.
pub fn endpoint(
    url: &str,
    ca: Option<&XdsCa>,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
    match ca {
        Some(ca) if url.starts_with("https://") => {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca.ca));
            if let Some((cert, key)) = &ca.identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            endpoint.tls_config(tls)
        }
        _ => Ok(endpoint),
    }
}

/// The shared secret a control plane may require of its xDS clients. Never
/// printed: its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct XdsToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl XdsToken {
    /// Adds the token to a request's metadata.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
    }
}

/// A service's `--xds-token` / `--xds-token-file` flags (flatten into its
/// command line).
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The token the control plane requires of xDS clients, if it requires
    /// one (its GATEHOUSE_XDS_TOKEN).
    #[arg(
        long,
        env = "GATEHOUSE_XDS_TOKEN",
        hide_env_values = true,
        conflicts_with = "xds_token_file"
    )]
    pub xds_token: Option<XdsToken>,

    /// File holding the xDS token.
    #[arg(long, env = "GATEHOUSE_XDS_TOKEN_FILE")]
    pub xds_token_file: Option<std::path::PathBuf>,

    /// PEM CA bundle that signed the control plane's xDS certificate, for
    /// an `https://` --xds-url.
    #[arg(long, env = "GATEHOUSE_XDS_CA_FILE")]
    pub xds_ca_file: Option<std::path::PathBuf>,

    /// PEM client certificate naming this node's id, for a control plane
    /// that requires one (--xds-tls-client-ca-file there).
    #[arg(
        long,
        env = "GATEHOUSE_XDS_CLIENT_CERT_FILE",
        requires_all = ["xds_client_key_file", "xds_ca_file"]
    )]
    pub xds_client_cert_file: Option<std::path::PathBuf>,

    /// PEM private key of --xds-client-cert-file.
    #[arg(
        long,
        env = "GATEHOUSE_XDS_CLIENT_KEY_FILE",
        requires = "xds_client_cert_file"
    )]
    pub xds_client_key_file: Option<std::path::PathBuf>,
}

/// Why an xDS token cannot be used; never shows the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the xDS token is empty")]
    Empty,
    #[error("the xDS token must be printable ASCII")]
    NotAscii,
    #[error("cannot read {flag} {}: {source}", path.display())]
    File {
        flag: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl TokenArgs {
    /// The CA bundle of `--xds-ca-file`, if given.
    pub fn ca(&self) -> Result<Option<XdsCa>, TokenError> {
        let read = |flag: &'static str, path: &std::path::PathBuf| {
            std::fs::read_to_string(path).map_err(|source| TokenError::File {
                flag,
                path: path.clone(),
                source,
            })
        };
        let Some(ca) = &self.xds_ca_file else {
            return Ok(None);
        };
        let identity = match (&self.xds_client_cert_file, &self.xds_client_key_file) {
            (Some(cert), Some(key)) => Some((
                read("--xds-client-cert-file", cert)?,
                read("--xds-client-key-file", key)?,
            )),
            _ => None,
        };
        Ok(Some(XdsCa {
            ca: read("--xds-ca-file", ca)?,
            identity,
        }))
    }

    /// The token from the flag (or environment variable) or the file.
    pub fn token(&self) -> Result<Option<XdsToken>, TokenError> {
        match (&self.xds_token, &self.xds_token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| TokenError::File {
                    flag: "--xds-token-file",
                    path: path.clone(),
                    source,
                })?
                .parse()
                .map(Some),
            (None, None) => Ok(None),
        }
    }
}

impl std::fmt::Debug for XdsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for XdsToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let token = s.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| TokenError::NotAscii)?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

/// Why a receiver refused a response; sent back as the NACK's error detail.
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// Takes each response's resources; `Err` is sent back as a NACK.
pub trait Receiver: Send + 'static {
    fn receive(&mut self, version: &str, resources: Vec<Any>) -> Result<(), Refusal>;
}

impl<F> Receiver for F
where
    F: FnMut(&str, Vec<Any>) -> Result<(), Refusal> + Send + 'static,
{
    fn receive(&mut self, version: &str, resources: Vec<Any>) -> Result<(), Refusal> {
        self(version, resources)
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid xDS endpoint: {0}")]
    Endpoint(String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("control plane closed the stream")]
    Closed,
}

/// Runs the subscription until `shutdown`: connects, receives, reconnects.
pub async fn run(
    subscription: Subscription,
    mut receiver: impl Receiver,
    shutdown: CancellationToken,
) {
    let mut accepted = String::new();
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    while !shutdown.is_cancelled() {
        let mut received = false;
        let outcome = session(
            &subscription,
            &mut receiver,
            &mut accepted,
            &mut received,
            &shutdown,
        )
        .await;
        match outcome {
            Ok(()) => return,
            Err(e) if !failing => {
                warn!(endpoint = %subscription.endpoint, error = %e, "xDS stream lost; keeping the last accepted state and retrying");
                failing = true;
            }
            Err(e) => debug!(error = %e, "xDS reconnect failed"),
        }
        if received {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if received {
            failing = false;
        }
    }
}

async fn session(
    subscription: &Subscription,
    receiver: &mut impl Receiver,
    accepted: &mut String,
    received: &mut bool,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let endpoint = endpoint(&subscription.endpoint, subscription.ca.as_ref())
        .map_err(|e| SessionError::Endpoint(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        channel = endpoint.connect() => channel?,
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (requests, outgoing) = mpsc::channel(4);
    // The channel has room: the first send cannot fail.
    let _ = requests
        .send(request(subscription, accepted, "", None))
        .await;
    let mut stream = tonic::Request::new(ReceiverStream::new(outgoing));
    if let Some(token) = &subscription.token {
        token.authorize(&mut stream);
    }
    let mut responses = client
        .stream_aggregated_resources(stream)
        .await?
        .into_inner();
    loop {
        let response: DiscoveryResponse = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = responses.message() => message?.ok_or(SessionError::Closed)?,
        };
        if response.type_url != subscription.type_url {
            continue;
        }
        if !*received {
            info!(endpoint = %subscription.endpoint, version = %response.version_info, "xDS stream established");
        }
        *received = true;
        let reply = match receiver.receive(&response.version_info, response.resources) {
            Ok(()) => {
                accepted.clone_from(&response.version_info);
                request(subscription, accepted, &response.nonce, None)
            }
            Err(detail) => {
                warn!(version = %response.version_info, error = %detail, "rejected xDS update; keeping the last accepted state");
                request(
                    subscription,
                    accepted,
                    &response.nonce,
                    Some(detail.to_string()),
                )
            }
        };
        if requests.send(reply).await.is_err() {
            return Err(SessionError::Closed);
        }
    }
}

fn request(
    subscription: &Subscription,
    version: &str,
    nonce: &str,
    error: Option<String>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: subscription.node_id.clone(),
            cluster: subscription.node_cluster.clone(),
            ..Node::default()
        }),
        type_url: subscription.type_url.clone(),
        response_nonce: nonce.to_owned(),
        error_detail: error.map(|message| rpc::Status {
            code: 3, // INVALID_ARGUMENT, as Envoy reports a rejected update
            message,
            details: Vec::new(),
        }),
        ..DiscoveryRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::XdsToken;

    #[test]
    fn a_token_goes_out_as_a_bearer_header_and_never_prints() {
        let token: XdsToken = " s3cret-value \n".parse().expect("token");
        assert_eq!(format!("{token:?}"), "<redacted>");
        let mut request = tonic::Request::new(());
        token.authorize(&mut request);
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer s3cret-value"))
        );
        assert!("".parse::<XdsToken>().is_err());
        assert!("tab\tinside\u{7f}".parse::<XdsToken>().is_err());
    }
}
