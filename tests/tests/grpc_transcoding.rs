//! gRPC protocol translation through a real Envoy (issue 24): a `grpc_apis`
//! resource holds a descriptor set compiled from
//! `tests/fixtures/grpc/health.proto`; a route to a real tonic gRPC server
//! (tonic-health) answers JSON/HTTP through Envoy's transcoder (the proto's
//! own `google.api.http` mappings: a GET with a path parameter and a POST
//! with a JSON body), with gRPC errors as HTTP statuses and JSON
//! `google.rpc.Status` bodies, and gRPC-Web for browsers.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use gatehouse_e2e::{Stack, workspace_root};
use serde_json::{Value, json};
use tonic_health::ServingStatus;

fn descriptor_set() -> String {
    // Encoded by protox itself: options it knows as extensions (the
    // `google.api.http` mappings) stay in the bytes.
    let fixtures = workspace_root().join("tests/fixtures/grpc");
    let mut compiler = protox::Compiler::new([fixtures]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_files(["health.proto"])
        .expect("the fixture compiles");
    STANDARD.encode(compiler.encode_file_descriptor_set())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_grpc_web_reach_a_real_grpc_server() {
    let (_reporter, port) = gatehouse_e2e::grpc::health_server(&[
        ("orders", ServingStatus::Serving),
        ("billing", ServingStatus::NotServing),
    ])
    .await;
    let g = Stack::new()
        .configure(|o| o.validate_with_envoy = true)
        .start()
        .await;
    let document = json!({
        "services": [{"name": "health", "protocol": "grpc",
                      "endpoints": [{"host": "127.0.0.1", "port": port}]}],
        "grpc_apis": [{"name": "health", "descriptor_set": descriptor_set(),
                       "services": ["grpc.health.v1.Health"]}],
        "routes": [
            {"name": "health-grpc", "match": {"path_prefix": "/grpc.health.v1.Health/"},
             "destination": {"service": "health"},
             "grpc": {"transcode": "health", "web": true}},
            {"name": "health-rest", "match": {"path_prefix": "/v1/health/"},
             "destination": {"service": "health"}, "grpc": {"transcode": "health"}}
        ]
    });
    let applied = g.cp.put("/v1/config", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let version = g.cp.version().await;
    g.cp.until_converged(version).await;
    g.cp.assert_no_nacks().await;

    let http = gatehouse_e2e::client();
    let post = |body: &'static str| {
        http.post(g.envoy.url("/grpc.health.v1.Health/Check"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // JSON in, JSON out: POST /<package>.<Service>/<Method> (the auto
    // mapping's shape; here an additional binding, since Check has its own).
    let ok = post(r#"{"service": "orders"}"#).await.expect("json call");
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.expect("json");
    assert_eq!(body, json!({"status": "SERVING"}));
    let billing: Value = post(r#"{"service": "billing"}"#)
        .await
        .expect("json call")
        .json()
        .await
        .expect("json");
    assert_eq!(billing, json!({"status": "NOT_SERVING"}));
    // A gRPC error becomes its HTTP status (NOT_FOUND → 404) and a JSON
    // google.rpc.Status body.
    let unknown = post(r#"{"service": "nope"}"#).await.expect("json call");
    assert_eq!(unknown.status(), 404);
    let error: Value = unknown.json().await.expect("a JSON google.rpc.Status");
    assert_eq!(error["code"], json!(5), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    // Not JSON the message can take: 400 before the server is called.
    let bad = post(r#"{"service": 12, "extra": true}"#)
        .await
        .expect("json call");
    assert_eq!(bad.status(), 400);
    // The proto's own mapping: GET /v1/health/{service}.
    let get = http
        .get(g.envoy.url("/v1/health/orders"))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 200);
    assert_eq!(
        get.json::<Value>().await.expect("json"),
        json!({"status": "SERVING"})
    );

    // gRPC-Web: a framed protobuf request (HealthCheckRequest{service:
    // "orders"}) gets a framed answer with the trailers in the body.
    let mut message = vec![0x0a, 6];
    message.extend_from_slice(b"orders");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let web = http
        .post(g.envoy.url("/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame)
        .send()
        .await
        .expect("grpc-web call");
    assert_eq!(web.status(), 200);
    assert!(
        web.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/grpc-web")),
        "{:?}",
        web.headers()
    );
    let answer = web.bytes().await.expect("body");
    assert_eq!(answer[0], 0, "a data frame first");
    let len = u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]) as usize;
    assert_eq!(&answer[5..5 + len], &[0x08, 0x01], "status SERVING");
    let trailers = String::from_utf8_lossy(&answer[5 + len + 5..]).to_lowercase();
    assert_eq!(answer[5 + len], 0x80, "then the trailers frame");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // Bad input: 422 naming the field, nothing stored.
    let before = g.cp.version().await;
    let refusals = [
        (
            "/v1/grpc-apis/broken",
            json!({"descriptor_set": STANDARD.encode([0xff, 0xff]), "services": ["a.B"]}),
            "descriptor_set",
        ),
        (
            "/v1/grpc-apis/broken",
            json!({"descriptor_set": descriptor_set(), "services": ["grpc.health.v1.Nope"]}),
            "services[0]",
        ),
        (
            "/v1/routes/stray",
            json!({"match": {"path_prefix": "/stray"}, "destination": {"service": "health"},
                                   "grpc": {"transcode": "nowhere"}}),
            "grpc.transcode",
        ),
    ];
    for (path, body, field) in refusals {
        let response = g.cp.put(path, body).await;
        assert_eq!(response.status(), 422, "{path}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["field"], json!(field), "{problem}");
    }
    assert_eq!(g.cp.version().await, before, "nothing stored");
}
