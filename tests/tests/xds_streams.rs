//! The xDS port under many streams: 10,000 ADS streams (100 connections of
//! 100 streams, as a misbehaving fleet or a client with a stolen token
//! might open) cost bounded memory, real Envoys keep getting changes while
//! they are open, and the memory comes back once they close.

use std::time::{Duration, Instant};

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Upstream, eventually, free_port, rss_kb,
};
use gatehouse_proto::discovery::{
    DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use serde_json::json;

const CONNECTIONS: usize = 100;
const STREAMS_PER_CONNECTION: usize = 100;
const TOKEN: &str = "the-xds-token-of-the-many-streams-test-0123";

/// Opens one ADS stream on `channel` and waits for its first response; the
/// stream stays open as long as the returned handle lives.
async fn open_stream(
    channel: tonic::transport::Channel,
    node: String,
) -> (
    tokio::sync::mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<gatehouse_proto::discovery::DiscoveryResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        node: Some(gatehouse_proto::core::Node {
            id: node,
            cluster: "many".into(),
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
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .stream_aggregated_resources(request)
        .await
        .expect("stream")
        .into_inner();
    responses
        .message()
        .await
        .expect("answer")
        .expect("a response");
    (tx, responses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_cost_bounded_memory_and_give_it_back() {
    let upstream = Upstream::start("web").await;
    let proxy_port = free_port();
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.xds_token = Some(TOKEN.into());
    let cp = ControlPlane::start(options).await;
    let pid = cp.pid().expect("pid");
    let version = cp.route_all_to(&upstream).await;
    let envoy = Envoy::start_with_xds_token(cp.xds, proxy_port, TOKEN).await;
    cp.until_converged(version).await;
    let start = rss_kb(pid);

    let mut streams = Vec::with_capacity(CONNECTIONS * STREAMS_PER_CONNECTION);
    let opened = Instant::now();
    for c in 0..CONNECTIONS {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.xds))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let opening = (0..STREAMS_PER_CONNECTION)
            .map(|s| tokio::spawn(open_stream(channel.clone(), format!("many-{c}-{s}"))));
        for stream in opening.collect::<Vec<_>>() {
            streams.push(stream.await.expect("opened"));
        }
    }
    let during = rss_kb(pid);
    eprintln!(
        "{} streams open in {:?}: RSS {start} KiB → {during} KiB",
        streams.len(),
        opened.elapsed()
    );
    assert!(
        during - start < 400 * 1024,
        "{} KiB for 10,000 streams",
        during - start
    );

    // A real Envoy still gets a change while they are open.
    let changed = cp
        .apply(
            "/v1/routes/extra",
            json!({"match": {"path_prefix": "/extra"}, "destination": {"service": "web"},
                   "timeout_ms": 4321}),
        )
        .await;
    eventually(
        Duration::from_secs(30),
        "Envoy to take the change",
        || async { envoy.config_dump().await.to_string().contains("4.321s") },
    )
    .await;
    assert!(changed > version);

    drop(streams);
    eventually(Duration::from_secs(30), "the streams to close", || async {
        let metrics = cp.get("/metrics").await.text().await.unwrap_or_default();
        metrics.contains("gatehouse_xds_streams 1\n")
    })
    .await;
    // jemalloc's background threads give pages back on a ~10 s decay.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = rss_kb(pid);
    while now > start + start / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = rss_kb(pid);
    }
    assert!(
        now <= start + start / 5,
        "RSS {now} KiB after the streams closed, {start} KiB before them, {during} KiB with them"
    );
}

/// Whether the server closed `socket` (it sends nothing first).
fn closed_by_server(mut socket: &std::net::TcpStream) -> bool {
    use std::io::Read;
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 64];
    match socket.read(&mut buf) {
        Ok(0) => true,
        // An HTTP/2 server speaks first (its SETTINGS): still open.
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test]
async fn connections_past_the_xds_bound_are_closed_at_once() {
    let mut options = ControlPlaneOptions::new(free_port());
    options.args = vec!["--xds-max-connections=3".into()];
    let cp = ControlPlane::start(options).await;
    let connect = || std::net::TcpStream::connect(cp.xds).expect("connect");
    let held: Vec<_> = (0..3).map(|_| connect()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = connect();
    eventually(
        Duration::from_secs(2),
        "the fourth connection closed",
        || {
            let closed = closed_by_server(&extra);
            async move { closed }
        },
    )
    .await;
    assert!(
        held.iter().all(|s| !closed_by_server(s)),
        "the first three are served"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = connect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!closed_by_server(&again), "their slots came back");
}
