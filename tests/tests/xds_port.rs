//! The xDS port is authenticated by default: a control plane started
//! without a token (and without `--xds-insecure`) generates one into its
//! data directory, keeps it across restarts, and serves only clients that
//! present it; Envoy with it gets its configuration.

use std::os::unix::fs::PermissionsExt;

use gatehouse_e2e::{ControlPlane, ControlPlaneOptions, Envoy, Upstream, free_port, scratch_dir};
use gatehouse_proto::discovery::{
    DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

/// What a client that presents `authorization` (if any) gets: the status
/// of its first response.
async fn first_answer(xds: std::net::SocketAddr, authorization: Option<&str>) -> tonic::Code {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(tokio_stream::iter([DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        node: Some(Default::default()),
        ..Default::default()
    }]));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
    }
    let answer = match client.stream_aggregated_resources(request).await {
        Ok(mut stream) => stream.get_mut().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    answer.err().map_or(tonic::Code::Ok, |s| s.code())
}

#[tokio::test]
async fn without_a_token_the_control_plane_generates_one_and_requires_it() {
    let data_dir = scratch_dir("gatehouse_xds_port");
    let proxy_port = free_port();
    let options = || {
        let mut options = ControlPlaneOptions::new(proxy_port);
        options.data_dir = Some(data_dir.clone());
        options.xds_insecure = false;
        options
    };
    let mut cp = ControlPlane::start(options()).await;
    let path = data_dir.join("xds-token");
    let token = std::fs::read_to_string(&path).expect("a generated token");
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    assert!(token.len() >= 32 && token.bytes().all(|b| b.is_ascii_graphic()));

    assert_eq!(
        first_answer(cp.xds, None).await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        first_answer(cp.xds, Some("Bearer not-the-token")).await,
        tonic::Code::Unauthenticated
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(first_answer(cp.xds, Some(&bearer)).await, tonic::Code::Ok);
    assert!(
        !std::fs::read_to_string(&cp.log)
            .unwrap_or_default()
            .contains(&token),
        "the token is never logged"
    );

    // The same token after a restart: Envoy's bootstrap stays valid.
    cp.terminate().await;
    let cp = ControlPlane::start(options()).await;
    assert_eq!(std::fs::read_to_string(&path).expect("token"), token);
    let envoy = Envoy::start_with_xds_token(cp.xds, proxy_port, &token).await;
    let upstream = Upstream::start("web").await;
    cp.route_all_to(&upstream).await;
    envoy.until_status("/", 200).await;
}

/// A refusal counts only for a response the node was actually sent: a NACK
/// quoting a nonce this stream never carried changes nothing.
#[tokio::test]
async fn a_refusal_of_a_response_never_sent_holds_nothing_back() {
    const TOKEN: &str = "the-xds-token-of-the-forged-refusal-test-01";
    let mut options = ControlPlaneOptions::new(free_port());
    options.xds_token = Some(TOKEN.into());
    let cp = ControlPlane::start(options).await;
    let upstream = Upstream::start("web").await;
    cp.route_all_to(&upstream).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.xds))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    tx.send(DiscoveryRequest {
        type_url: cds.into(),
        node: Some(gatehouse_proto::core::Node {
            id: "invented".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("queued");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(request)
        .await
        .expect("stream")
        .into_inner();
    let sent = responses.message().await.expect("ok").expect("a response");
    tx.send(DiscoveryRequest {
        type_url: cds.into(),
        response_nonce: format!("{}9", sent.nonce),
        error_detail: Some(gatehouse_proto::rpc::Status {
            code: 3,
            message: "forged".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("queued");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let status = cp.nodes().await;
    assert_eq!(status["held_back"], serde_json::json!(false), "{status}");
    assert_eq!(status["rejections"], serde_json::json!([]), "{status}");
}
