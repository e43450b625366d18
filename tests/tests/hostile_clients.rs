//! The admin API under hostile clients: a thousand sockets that send half a
//! request (no token needed: the token is checked after the headers) cost
//! little, are closed when the header timeout passes, never stop a real
//! client being answered, and their memory goes back to the system.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use gatehouse_e2e::{ControlPlane, ControlPlaneOptions, eventually, free_port, reqwest, rss_kb};

const SLOW: usize = 1_000;

/// Half a request: the head never ends.
fn half_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).expect("connect");
    socket
        .write_all(b"GET /v1/routes HTTP/1.1\r\nHost: gatehouse\r\nX-Slow: ")
        .expect("half a request");
    socket
}

/// Median time for a real client's request, each answered 200.
async fn real_client(cp: &ControlPlane) -> Duration {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut took = Vec::new();
    for _ in 0..20 {
        let sent = Instant::now();
        let answer = http
            .get(cp.url("/v1/routes"))
            .send()
            .await
            .expect("the API answers a real client");
        assert_eq!(answer.status(), 200);
        took.push(sent.elapsed());
    }
    took.sort_unstable();
    took[took.len() / 2]
}

/// Whether the server closed `socket` (it sends nothing first).
fn closed_by_server(mut socket: &TcpStream) -> bool {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 64];
    match socket.read(&mut buf) {
        // Closed, or an answer that comes before the close.
        Ok(0) => true,
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test]
async fn a_thousand_slow_sockets_cost_little_and_are_closed() {
    let mut options = ControlPlaneOptions::new(free_port());
    options.args = vec!["--admin-header-timeout-ms=3000".into()];
    let cp = ControlPlane::start(options).await;
    let pid = cp.pid().expect("pid");
    real_client(&cp).await;
    let start = rss_kb(pid);

    let slow: Vec<TcpStream> = (0..SLOW).map(|_| half_request(cp.admin)).collect();
    let median = real_client(&cp).await;
    assert!(
        median < Duration::from_millis(100),
        "a real client waits {median:?} beside {SLOW} slow sockets"
    );
    let held = rss_kb(pid).saturating_sub(start);
    assert!(
        held < SLOW as u64 * 64,
        "{SLOW} slow sockets hold {held} KiB (about 256 KiB each before)"
    );

    // The header timeout closes every one of them.
    eventually(Duration::from_secs(15), "slow sockets to be closed", || {
        let open = slow.iter().filter(|s| !closed_by_server(s)).count();
        async move { open == 0 }
    })
    .await;
    drop(slow);
    real_client(&cp).await;

    // And what they used goes back to the system.
    eventually(Duration::from_secs(40), "RSS to come back", || {
        let now = rss_kb(pid);
        async move { now <= start + start / 10 }
    })
    .await;
}

#[tokio::test]
async fn connections_past_the_bound_are_closed_at_once() {
    let mut options = ControlPlaneOptions::new(free_port());
    options.args = vec!["--admin-max-connections=50".into()];
    let cp = ControlPlane::start(options).await;
    // The harness's own client may keep one connection alive.
    let sockets: Vec<TcpStream> = (0..60).map(|_| half_request(cp.admin)).collect();
    let mut closed = 0;
    eventually(Duration::from_secs(2), "connections past 50 closed", || {
        closed = sockets.iter().filter(|s| closed_by_server(s)).count();
        async move { closed >= 10 }
    })
    .await;
    assert!(closed <= 11, "{closed} of 60 closed: the bound is 50");
    drop(sockets);
    // Their slots come back.
    eventually(
        Duration::from_secs(5),
        "the API to answer again",
        || async { cp.get("/healthz").await.status() == 200 },
    )
    .await;
}
