//! A raw ADS client, for what Envoy cannot show: how the control plane
//! answers a stream from a given node with a given token and certificate.

use std::{net::SocketAddr, time::Duration};

use gatehouse_proto::{core, discovery, type_url};

/// Who a probing stream claims to be, and what it presents.
pub struct AdsProbe<'a> {
    /// PEM CA of the control plane's xDS certificate.
    pub ca: &'a str,
    /// PEM client certificate and key, if any.
    pub identity: Option<(String, String)>,
    pub token: &'a str,
    pub node_id: &'a str,
    pub cluster: &'a str,
}

/// Opens an ADS stream over TLS to `xds` as `probe` says: `Ok` when the
/// control plane answers the first request, else what refused it.
pub async fn first_answer(xds: SocketAddr, probe: AdsProbe<'_>) -> Result<(), String> {
    use discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(probe.ca));
    if let Some((cert, key)) = &probe.identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", xds.port()))
            .map_err(|e| format!("endpoint: {e}"))?
            .tls_config(tls)
            .map_err(|e| format!("tls: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let first = discovery::DiscoveryRequest {
        node: Some(core::Node {
            id: probe.node_id.into(),
            cluster: probe.cluster.into(),
            ..Default::default()
        }),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(tokio_stream::iter([first]));
    let bearer = format!("Bearer {}", probe.token)
        .parse()
        .map_err(|_| "token is not ASCII".to_owned())?;
    request.metadata_mut().insert("authorization", bearer);
    let mut responses = client
        .stream_aggregated_resources(request)
        .await
        .map_err(|s| format!("{:?}", s.code()))?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(5), responses.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Err(status)) => Err(format!("{:?}", status.code())),
        other => Err(format!("no answer: {other:?}")),
    }
}
