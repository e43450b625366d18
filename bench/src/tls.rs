//! TLS at the edge (issue 24): requests per second through one Envoy on
//! the same route over plaintext and over TLS (a gateway with a certificate
//! by SDS), with kept-alive connections and with a new connection (and TLS
//! handshake) per request, interleaved side by side. Then what rotating the
//! certificate does to new-connection TLS throughput while it happens:
//! slices with a rotation every 500 ms beside slices without, counting
//! failed requests.

use std::time::Duration;

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, Envoy, Pki, Upstream, XdsVariant, free_port, scratch_dir,
};
use serde_json::json;

use crate::side_by_side::{Variant, interleaved};

use gatehouse_e2e::tls_fixture as fixture;

/// `wrk` for `seconds` with a new connection per request: (req/s, errors).
async fn new_connections(url: &str, seconds: u64, connections: u32) -> (f64, u64) {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "-H",
            "Connection: close",
            url,
        ])
        .output()
        .await
        .expect("wrk (apt install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Requests/sec:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // "Socket errors: connect 0, read 0, write 0, timeout 0" and non-2xx.
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors:") || l.contains("Non-2xx"))
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    (rps, errors)
}

pub async fn run(seconds: u64, rounds: usize, connections: u32) {
    let proxy_port = free_port();
    let cp = ControlPlane::start(ControlPlaneOptions {
        access_log: None,
        ..ControlPlaneOptions::new(proxy_port)
    })
    .await;
    let envoy = Envoy::start(cp.xds, proxy_port, XdsVariant::StateOfTheWorld).await;
    let web = Upstream::start("web").await;
    let tls_port = free_port();
    let pki = Pki::new(scratch_dir("gatehouse_bench_tls"));
    pki.ca("ca");
    pki.server("ca", "second", &["localhost", "127.0.0.1"]);
    let document = json!({
        "services": [web.service("web")],
        "routes": [{"name": "web", "match": {"path_prefix": "/"}, "destination": {"service": "web"}}],
        "certificates": [{"name": "edge", "cert_chain_file": fixture("localhost.crt"),
                          "private_key_file": fixture("localhost.key")}],
        "gateways": [{"name": "tls", "address": "127.0.0.1", "port": tls_port,
                      "protocol": "https", "certificate": "edge"}]
    });
    let applied = cp.put("/v1/config", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let version = cp.version().await;
    cp.until_converged(version).await;
    envoy.until_status("/", 200).await;
    let plain = envoy.url("/");
    let tls = format!("https://127.0.0.1:{tls_port}/");
    let keep = Vec::new();
    let close = vec![("Connection".to_owned(), "close".to_owned())];
    let processes = || vec![("envoy", envoy.pid())];
    let variants = [
        Variant {
            name: "plaintext, kept-alive",
            url: plain.clone(),
            headers: &keep,
            processes: processes(),
        },
        Variant {
            name: "TLS, kept-alive",
            url: tls.clone(),
            headers: &keep,
            processes: processes(),
        },
        Variant {
            name: "plaintext, new connection per request",
            url: plain.clone(),
            headers: &close,
            processes: processes(),
        },
        Variant {
            name: "TLS, new connection per request",
            url: tls.clone(),
            headers: &close,
            processes: processes(),
        },
    ];
    println!(
        "TLS termination vs plaintext, one Envoy (1 worker), the same route, wrk -t1 -c{connections}, \
         {rounds} interleaved rounds of {seconds} s:"
    );
    let measured = interleaved(&variants, rounds, seconds, connections).await;
    measured.print();
    measured.print_ratio("TLS, kept-alive", "plaintext, kept-alive");
    measured.print_ratio(
        "TLS, new connection per request",
        "plaintext, new connection per request",
    );

    // Rotation while handshaking: alternate the certificate's files every
    // 500 ms (a new secret each time, by SDS) during some slices.
    let files = [
        (fixture("localhost.crt"), fixture("localhost.key")),
        (
            pki.path("second.crt").display().to_string(),
            pki.path("second.key").display().to_string(),
        ),
    ];
    let mut quiet = Vec::new();
    let mut rotating = Vec::new();
    let mut errors = (0u64, 0u64);
    let mut rotations = 0u64;
    for _ in 0..rounds {
        let (rps, e) = new_connections(&tls, seconds, connections).await;
        quiet.push(rps);
        errors.0 += e;
        let rotate = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                let (chain, key) = &files[(n % 2) as usize];
                cp.apply(
                    "/v1/certificates/edge",
                    json!({"cert_chain_file": chain, "private_key_file": key}),
                )
                .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            n
        };
        let ((rps, e), n) = tokio::join!(new_connections(&tls, seconds, connections), rotate);
        rotating.push(rps);
        errors.1 += e;
        rotations += n;
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let shares: Vec<String> = rotating
        .iter()
        .zip(&quiet)
        .map(|(r, q)| format!("{:.0} %", r / q * 100.0))
        .collect();
    println!(
        "certificate rotation every 500 ms ({rotations} rotations) during new-connection TLS slices:\n  \
         without rotation median {:.0} req/s, with rotation median {:.0} req/s (with / without per round: {}); \
         failed requests: {} without, {} with",
        median(&quiet),
        median(&rotating),
        shares.join(", "),
        errors.0,
        errors.1
    );
}
