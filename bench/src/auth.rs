//! Authentication benchmarks (BENCHMARKS.md, "Authentication"):
//!
//! 1. In-process `Check` (decision plus response building) for an API key and
//!    JWTs (cached and uncached).
//! 2. gRPC `Check` latency against the real ext-authz process, open loop.
//! 3. Through Envoy, side by side with the same Envoy settings: no auth;
//!    a no-op ext_authz server that always allows (the floor of the
//!    architecture); the same no-op answering with Gatehouse's identity
//!    headers and metadata (what Envoy must apply); Gatehouse ext-authz (API key, cached JWT); Gatehouse
//!    with the JWT verified in Envoy (`verify_in: envoy`); and Envoy's own
//!    in-process `jwt_authn`, statically configured. Closed loop with `wrk`, open loop at a
//!    fixed rate for latency.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_e2e::{
    ControlPlane, Envoy, ExtAuthz, Upstream, free_port,
    tokens::{TestKey, claims, jwks},
};
use gatehouse_ext_authz::{
    decision::{API_KEY_HEADER, Allow, CONSUMER_HEADER, Method, PLAN_HEADER},
    http_client,
    metrics::Metrics,
    server::{allowed_response, check_response},
    state::AuthState,
};
use gatehouse_proto::{
    auth,
    auth_service::{
        AttributeContext, CheckRequest, CheckResponse, OkHttpResponse, attribute_context,
        authorization_client::AuthorizationClient,
        authorization_server::{Authorization, AuthorizationServer},
        check_response::HttpResponse,
    },
    rpc,
};
use jsonwebtoken::Algorithm;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    percentile,
    side_by_side::{self, Variant},
    us,
};

pub(crate) const ISS: &str = "https://idp.bench/";
pub(crate) const AUD: &str = "bench-api";
const KEY: &str =
    "gk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

pub(crate) type Headers = Vec<(String, String)>;

const BARE: &str = "bare Envoy (no auth)";
const BARE_STATIC: &str = "bare Envoy, static config";
const FLOOR: &str = "Envoy + no-op ext_authz (floor)";
const FLOOR_IDENTITY: &str = "Envoy + no-op ext_authz with identity";
const API_KEY: &str = "Envoy + Gatehouse ext-authz, API key";
const EXT_JWT: &str = "Envoy + Gatehouse ext-authz, RS256 JWT";
const ENVOY_JWT: &str = "Envoy + Gatehouse, RS256 JWT verified in Envoy";
const JWT_AUTHN: &str = "Envoy jwt_authn, RS256 JWT (static)";

pub struct Settings {
    pub seconds: u64,
    pub rounds: usize,
    pub connections: u32,
    pub rate: u32,
}

fn check_request(path: &str, headers: &[(&str, &str)], methods: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: HashMap::from([
                (auth::context::ROUTE.to_owned(), "bench".to_owned()),
                (auth::context::METHODS.to_owned(), methods.to_owned()),
                (auth::context::STRIP_CREDENTIALS.to_owned(), "1".to_owned()),
            ]),
            ..Default::default()
        }),
    }
}

fn auth_config(keys: &[&TestKey]) -> auth::AuthConfig {
    auth::AuthConfig {
        consumers: vec![auth::Consumer {
            name: "bench".into(),
            plan: "pro".into(),
            api_keys: vec![auth::ApiKey {
                id: KEY[3..15].to_owned(),
                sha256: Sha256::digest(KEY.as_bytes()).to_vec(),
                scopes: vec![],
                expires_at: 0,
            }],
            ..Default::default()
        }],
        jwt_issuers: vec![auth::JwtIssuer {
            name: "idp".into(),
            issuer: ISS.into(),
            jwks_json: jwks(keys).to_string(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            audiences: vec![AUD.into()],
            leeway_seconds: 30,
            consumer_claim: "sub".into(),
            jwks_min_refresh_seconds: 30,
            jwks_refresh_seconds: 300,
            ..Default::default()
        }],
        introspection_providers: vec![],
    }
}

fn allowed(response: &CheckResponse) -> bool {
    matches!(response.http_response, Some(HttpResponse::OkResponse(_)))
}

/// Mean time per `Check` over `requests`, cycling through them.
async fn time_checks(state: &AuthState, requests: &[CheckRequest], iterations: usize) -> Duration {
    let metrics = Metrics::default();
    assert!(allowed(
        &check_response(state, &requests[0], &metrics).await
    ));
    let started = Instant::now();
    for i in 0..iterations {
        let response = check_response(state, &requests[i % requests.len()], &metrics).await;
        std::hint::black_box(response);
    }
    started.elapsed() / iterations as u32
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn in_process() {
    let rsa = TestKey::rsa("rs");
    let ec = TestKey::load("ec-p256.pem", Algorithm::ES256, "es");
    let state = AuthState::build(
        "1",
        auth_config(&[&rsa, &ec]),
        None,
        &http_client(),
        &Metrics::default(),
    );
    let key = [check_request("/orders", &[("x-api-key", KEY)], "api_key")];
    println!(
        "in-process Check, API key: {} per check",
        us(time_checks(&state, &key, 200_000).await)
    );
    {
        use gatehouse_ext_authz::decision::{RequestView, decide};
        let http = key[0]
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .expect("http");
        let context = &key[0]
            .attributes
            .as_ref()
            .expect("attributes")
            .context_extensions;
        let view = RequestView {
            headers: &http.headers,
            path: &http.path,
            context,
            peer_certificate: "",
        };
        let started = Instant::now();
        for _ in 0..200_000 {
            std::hint::black_box(decide(&state, &view).await);
        }
        println!(
            "  of which the decision alone: {}",
            us(started.elapsed() / 200_000)
        );
        let started = Instant::now();
        for _ in 0..200_000 {
            std::hint::black_box(Sha256::digest(std::hint::black_box(KEY).as_bytes()));
        }
        println!(
            "  of which SHA-256 of the key: {}",
            us(started.elapsed() / 200_000)
        );
    }
    for (name, signer) in [("RS256", &rsa), ("ES256", &ec)] {
        let token = bearer(&signer.sign(&claims(ISS, AUD, "bench")));
        let cached = [check_request(
            "/orders",
            &[("authorization", &token)],
            "jwt",
        )];
        println!(
            "in-process Check, {name} JWT cached: {} per check",
            us(time_checks(&state, &cached, 200_000).await)
        );
        let fresh: Vec<CheckRequest> = (0..300)
            .map(|i| {
                let mut c = claims(ISS, AUD, "bench");
                c["jti"] = json!(i);
                check_request(
                    "/orders",
                    &[("authorization", &bearer(&signer.sign(&c)))],
                    "jwt",
                )
            })
            .collect();
        // Each token once: every check verifies a signature.
        let state = AuthState::build(
            "1",
            auth_config(&[&rsa, &ec]),
            None,
            &http_client(),
            &Metrics::default(),
        );
        println!(
            "in-process Check, {name} JWT uncached: {} per check",
            us(time_checks(&state, &fresh, fresh.len()).await)
        );
    }
}

/// gRPC `Check` in an open loop at `rate` per second (see
/// [`crate::load::open_loop`]); every check must be allowed.
async fn grpc_latency(
    addr: SocketAddr,
    request: CheckRequest,
    rate: u32,
    seconds: u64,
) -> Vec<Duration> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect to ext-authz");
    let client = AuthorizationClient::new(channel);
    let request = Arc::new(request);
    let (latencies, failed) = crate::load::open_loop(rate, seconds, move |_| {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            let response = client.check((*request).clone()).await;
            response.is_ok_and(|r| allowed(r.get_ref()))
        }
    })
    .await;
    assert_eq!(failed, 0, "checks failed or refused during the benchmark");
    latencies
}

/// Open loop through Envoy at `rate` per second; every request must get a 200.
pub(crate) async fn http_latency(
    url: &str,
    headers: &[(String, String)],
    rate: u32,
    seconds: u64,
) -> Vec<Duration> {
    let http = gatehouse_e2e::client();
    let (url, headers) = (url.to_owned(), headers.to_vec());
    let (latencies, failed) = crate::load::open_loop(rate, seconds, move |_| {
        let mut request = http.get(&url);
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        async move { request.send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert_eq!(failed, 0, "requests failed during the benchmark");
    latencies
}

/// A no-op ext_authz server: allows everything without looking at the
/// request, answering `response`.
struct NoopAuthz {
    response: CheckResponse,
}

impl NoopAuthz {
    /// Adds nothing to the request: the floor of the architecture.
    fn bare() -> Self {
        Self {
            response: CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
                dynamic_metadata: None,
            },
        }
    }

    /// Answers what Gatehouse answers for the bench's API key, built by
    /// ext-authz's own response builder: identity headers, the key header
    /// removed, consumer and plan as dynamic metadata. Envoy's work to apply
    /// them is what the issue asks for; this floor separates it from the
    /// service's own cost.
    fn with_identity() -> Self {
        Self {
            response: allowed_response(Allow {
                method: Method::ApiKey,
                consumer: "bench".into(),
                plan: "pro".into(),
                set_headers: vec![
                    (CONSUMER_HEADER.into(), "bench".into()),
                    (PLAN_HEADER.into(), "pro".into()),
                ],
                remove_headers: vec![API_KEY_HEADER.into()],
                remove_query: Vec::new(),
            }),
        }
    }
}

#[tonic::async_trait]
impl Authorization for NoopAuthz {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.response.clone()))
    }
}

/// Serves the no-op ext_authz server on `port` (run as its own process,
/// like ext-authz, so both compete for the CPU the same way).
pub async fn serve_noop(port: u16, with_identity: bool) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let _ = tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(if with_identity {
            NoopAuthz::with_identity()
        } else {
            NoopAuthz::bare()
        }))
        .serve_with_incoming(incoming)
        .await;
}

pub(crate) async fn start_noop(with_identity: bool) -> (SocketAddr, tokio::process::Child) {
    let port = free_port();
    let child = tokio::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["noop-authz", "--port", &port.to_string()])
        .args(with_identity.then_some("--with-identity"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the no-op ext_authz server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    gatehouse_e2e::eventually(
        Duration::from_secs(10),
        "no-op ext_authz to listen",
        || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await;
    (addr, child)
}

/// Envoy with `jwt_authn` (and no ext_authz), statically configured.
fn jwt_authn_bootstrap(proxy_port: u16, upstream: SocketAddr, jwks: &str) -> String {
    crate::static_envoy(
        proxy_port,
        upstream,
        "",
        &jwt_authn_filter(jwks, "/jwt", None),
    )
}

/// Envoy's `jwt_authn` (YAML, indented for [`crate::static_listener`]):
/// the bench issuer's tokens required under `prefix`, cached, and the
/// `sub` claim copied to `claim_header` when given.
pub(crate) fn jwt_authn_filter(jwks: &str, prefix: &str, claim_header: Option<&str>) -> String {
    let claim = claim_header.map_or(String::new(), |header| {
        format!(
            "                  claim_to_headers: [{{header_name: {header}, claim_name: sub}}]\n"
        )
    });
    format!(
        r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: "{ISS}"
                  audiences: ["{AUD}"]
                  local_jwks: {{inline_string: '{jwks}'}}
                  jwt_cache_config: {{jwt_cache_size: 1000}}
{claim}              rules:
              - match: {{prefix: "{prefix}"}}
                requires: {{provider_name: bench}}
"#
    )
}

/// A control plane and Envoy whose ext_authz cluster points at `authz`,
/// with the bench routes: /bare (public), /key (API key), /jwt (JWT
/// through ext-authz), /envoyjwt (JWT verified in Envoy, `verify_in: envoy`).
async fn gateway(
    authz: SocketAddr,
    upstream: &Upstream,
    keys: &[&TestKey],
) -> (ControlPlane, Envoy) {
    let (cp, envoy) = crate::gateway_with(upstream, |options| {
        options.ext_authz_addr = Some(authz);
    })
    .await;
    cp.apply("/v1/consumers/bench", json!({"plan": "pro"}))
        .await;
    cp.apply(
        "/v1/jwt-issuers/idp",
        json!({"issuer": ISS, "jwks": jwks(keys), "algorithms": ["RS256", "ES256"], "audiences": [AUD]}),
    )
    .await;
    for (name, auth) in [
        ("bare", None),
        ("key", Some(json!({"method": "api_key"}))),
        ("jwt", Some(json!({"method": "jwt"}))),
        (
            "envoyjwt",
            Some(json!({"method": "jwt", "verify_in": "envoy"})),
        ),
    ] {
        crate::route_to_up(&cp, name, auth).await;
    }
    (cp, envoy)
}

pub(crate) async fn until_ok(url: &str, headers: &[(String, String)]) {
    let http = gatehouse_e2e::client();
    gatehouse_e2e::eventually(Duration::from_secs(10), url, || {
        let mut request = http.get(url);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}

pub async fn run(settings: Settings) {
    in_process().await;

    let upstream = Upstream::start("up").await;
    let rsa = TestKey::rsa("rs");
    let ec = TestKey::load("ec-p256.pem", Algorithm::ES256, "es");
    let token = rsa.sign(&claims(ISS, AUD, "bench"));

    // Gatehouse: control plane, ext-authz, Envoy; one API key.
    let ext_port = free_port();
    let (cp, envoy) = gateway(
        SocketAddr::from(([127, 0, 0, 1], ext_port)),
        &upstream,
        &[&rsa, &ec],
    )
    .await;
    let ext = ExtAuthz::start(cp.xds, ext_port, &[]).await;
    let key_headers = vec![crate::bench_key_header(&cp).await];
    let key = key_headers[0].1.clone();
    let jwt_headers = vec![("authorization".to_owned(), bearer(&token))];
    until_ok(&envoy.url("/key"), &key_headers).await;
    until_ok(&envoy.url("/jwt"), &jwt_headers).await;
    until_ok(&envoy.url("/envoyjwt"), &jwt_headers).await;

    let (noop, noop_process) = start_noop(false).await;
    let (noop_identity, noop_identity_process) = start_noop(true).await;
    for (name, addr, request) in [
        (
            "no-op server",
            noop,
            check_request("/key", &[("x-api-key", &key)], "api_key"),
        ),
        (
            "no-op server with identity",
            noop_identity,
            check_request("/key", &[("x-api-key", &key)], "api_key"),
        ),
        (
            "ext-authz, API key",
            ext.addr,
            check_request("/key", &[("x-api-key", &key)], "api_key"),
        ),
        (
            "ext-authz, RS256 JWT (cached)",
            ext.addr,
            check_request("/jwt", &[("authorization", &bearer(&token))], "jwt"),
        ),
    ] {
        let latencies = grpc_latency(addr, request, 2_000, settings.seconds).await;
        println!(
            "gRPC Check, {name}, open loop 2000/s: p50 {} p99 {} p99.9 {}",
            us(percentile(&latencies, 0.5)),
            us(percentile(&latencies, 0.99)),
            us(percentile(&latencies, 0.999)),
        );
    }

    // The floor: the same Envoy settings with a no-op ext_authz server.
    let (_noop_cp, noop_envoy) = gateway(noop, &upstream, &[&rsa, &ec]).await;
    until_ok(&noop_envoy.url("/key"), &key_headers).await;
    let (_noop_identity_cp, noop_identity_envoy) =
        gateway(noop_identity, &upstream, &[&rsa, &ec]).await;
    until_ok(&noop_identity_envoy.url("/key"), &key_headers).await;

    // Envoy's own jwt_authn, statically configured.
    let static_port = free_port();
    let jwks_text = jwks(&[&rsa, &ec]).to_string();
    let static_envoy = Envoy::start_static(
        &jwt_authn_bootstrap(static_port, upstream.addr, &jwks_text),
        static_port,
    )
    .await;
    until_ok(&static_envoy.url("/jwt"), &jwt_headers).await;

    let none: Headers = Vec::new();
    let variant = |name, envoy: &Envoy, path, headers, service: Option<u32>| Variant {
        name,
        url: envoy.url(path),
        headers,
        processes: [("envoy", envoy.pid())]
            .into_iter()
            .chain(service.map(|pid| ("service", Some(pid))))
            .collect(),
    };
    let variants = [
        variant(BARE, &envoy, "/bare", &none, None),
        variant(BARE_STATIC, &static_envoy, "/bare", &none, None),
        variant(FLOOR, &noop_envoy, "/key", &key_headers, noop_process.id()),
        variant(
            FLOOR_IDENTITY,
            &noop_identity_envoy,
            "/key",
            &key_headers,
            noop_identity_process.id(),
        ),
        variant(API_KEY, &envoy, "/key", &key_headers, ext.pid()),
        variant(EXT_JWT, &envoy, "/jwt", &jwt_headers, ext.pid()),
        variant(ENVOY_JWT, &envoy, "/envoyjwt", &jwt_headers, None),
        variant(JWT_AUTHN, &static_envoy, "/jwt", &jwt_headers, None),
    ];
    println!(
        "\nthrough Envoy (--concurrency 1), wrk -t1 -c{}, {} rounds of {} s per variant, interleaved:",
        settings.connections, settings.rounds, settings.seconds
    );
    let rounds = side_by_side::interleaved(
        &variants,
        settings.rounds,
        settings.seconds,
        settings.connections,
    )
    .await;
    rounds.print();
    println!("shares, taken within each round:");
    rounds.print_ratio(API_KEY, FLOOR);
    rounds.print_ratio(EXT_JWT, FLOOR);
    rounds.print_ratio(API_KEY, FLOOR_IDENTITY);
    rounds.print_ratio(FLOOR_IDENTITY, FLOOR);
    rounds.print_ratio(ENVOY_JWT, JWT_AUTHN);
    rounds.print_ratio(FLOOR, BARE);
    println!(
        "\nopen loop through Envoy at {}/s for {} s:",
        settings.rate, settings.seconds
    );
    for v in &variants {
        let open = http_latency(&v.url, v.headers, settings.rate, settings.seconds).await;
        println!(
            "  {:<46} p50 {} p99 {}",
            v.name,
            us(percentile(&open, 0.5)),
            us(percentile(&open, 0.99)),
        );
    }
    cp.assert_no_nacks().await;
}

#[cfg(test)]
mod tests;
