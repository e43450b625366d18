//! mTLS client identities through a real Envoy, ext-authz and
//! ratelimit-service (issue 24): an `https` gateway asks for client
//! certificates signed by its CA bundle; an `mtls` route maps a verified
//! certificate (by URI SAN or public key) to a consumer, whose scopes and
//! rate limit then apply as for any other credential. A client-sent
//! `x-forwarded-client-cert` never reaches the upstream; Gatehouse's own
//! does.

use std::{net::SocketAddr, time::Duration};

use gatehouse_e2e::{Pki, Stack, eventually, free_port, scratch_dir};
use serde_json::{Value, json};

use gatehouse_e2e::tls_fixture as fixture;

/// A client trusting the fixture CA (Envoy's server certificate), with
/// `identity` (a leaf of `pki`) as its client certificate when given.
fn client(pki: &Pki, identity: Option<&str>, port: u16) -> reqwest::Client {
    let ca = std::fs::read(fixture("ca.crt")).expect("fixture CA");
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(5));
    if let Some(leaf) = identity {
        let pem = pki.read(&format!("{leaf}.crt")) + &pki.read(&format!("{leaf}.key"));
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

async fn call(client: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = client
        .get(url)
        .header(
            "x-forwarded-client-cert",
            "By=spiffe://evil;URI=spiffe://test/admin",
        )
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_identify_consumers_for_scopes_and_limits() {
    let pki = Pki::new(scratch_dir("gatehouse_mtls"));
    pki.ca("clients");
    pki.ca("rogue");
    let client_leaf = |ca: &str, name: &str, uri: &str| {
        pki.leaf(
            ca,
            name,
            &format!("subjectAltName=URI:{uri}\nextendedKeyUsage=clientAuth\n"),
        );
    };
    client_leaf("clients", "alice", "spiffe://test/alice");
    client_leaf("clients", "bob", "spiffe://test/bob");
    client_leaf("clients", "carol", "spiffe://test/carol");
    client_leaf("rogue", "mallory", "spiffe://test/alice");

    let g = Stack::new()
        .ext_authz(&[])
        .ratelimit(&[])
        .orders()
        .start()
        .await;
    let tls_port = free_port();
    // carol is known by her public key, alice by her URI SAN.
    let carol_spki =
        gatehouse_control_plane::model::certificate::chain_info(&pki.read("carol.crt"))
            .expect("carol")
            .spki_sha256;
    let document = json!({
        "consumers": [
            {"name": "alice", "certificates": [{"uri": "spiffe://test/alice", "scopes": ["orders:read"]}]},
            {"name": "carol", "certificates": [{"spki_sha256": carol_spki}]}
        ],
        "certificates": [{"name": "edge", "cert_chain_file": fixture("localhost.crt"),
                          "private_key_file": fixture("localhost.key")}],
        "gateways": [{"name": "mtls", "address": "127.0.0.1", "port": tls_port,
                      "protocol": "https", "certificate": "edge",
                      "client_certificates": {"mode": "request", "ca_pem": pki.read("clients.crt")}}],
        "routes": [
            {"name": "orders", "match": {"path_prefix": "/orders"},
             "destination": {"service": "orders"},
             "auth": {"method": "mtls", "scopes": ["orders:read"]}},
            {"name": "who", "match": {"path_prefix": "/who"},
             "destination": {"service": "orders"}, "auth": {"method": "mtls"}}
        ]
    });
    let applied = g.cp.put("/v1/config", document).await;
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    g.cp.per_consumer_limit(3, "orders").await;

    let url = format!("https://localhost:{tls_port}/orders");
    let alice = client(&pki, Some("alice"), tls_port);
    eventually(
        Duration::from_secs(10),
        "the mTLS gateway to serve",
        || async { call(&alice, &url).await.is_some_and(|(s, _)| s == 200) },
    )
    .await;
    // One of the three requests was spent waiting above.
    let (status, body) = call(&alice, &url).await.expect("alice");
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-gatehouse-consumer"], json!("alice"));
    assert_eq!(body["headers"]["x-gatehouse-scopes"], json!("orders:read"));
    let xfcc = body["headers"]["x-forwarded-client-cert"]
        .as_str()
        .expect("Gatehouse's own XFCC");
    assert!(xfcc.contains("URI=spiffe://test/alice"), "{xfcc}");
    assert!(!xfcc.contains("evil") && !xfcc.contains("admin"), "{xfcc}");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(call(&alice, &url).await.expect("alice").0);
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "limited as alice: {statuses:?}"
    );

    // By public key; a route's scopes still apply (carol has none).
    let carol = client(&pki, Some("carol"), tls_port);
    let who = format!("https://localhost:{tls_port}/who");
    let (status, body) = call(&carol, &who).await.expect("carol");
    assert_eq!(
        (status, &body["headers"]["x-gatehouse-consumer"]),
        (200, &json!("carol"))
    );
    let (status, body) = call(&carol, &url).await.expect("carol on orders");
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("insufficient_scope"))
    );

    // No certificate: 401; one from the CA but not mapped: 403; one from
    // another CA naming alice: the handshake fails.
    let anonymous = client(&pki, None, tls_port);
    let (status, body) = call(&anonymous, &url).await.expect("anonymous");
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("client_certificate_required"))
    );
    let bob = client(&pki, Some("bob"), tls_port);
    let (status, body) = call(&bob, &url).await.expect("bob");
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("unknown_client_certificate"))
    );
    let mallory = client(&pki, Some("mallory"), tls_port);
    assert!(
        call(&mallory, &url).await.is_none(),
        "a rogue CA's certificate is refused"
    );
    // The plain listener has no client certificate to offer.
    let plain = g
        .envoy
        .send(
            "/who",
            &[("x-forwarded-client-cert", "URI=spiffe://test/alice")],
        )
        .await;
    assert_eq!(plain.status, 401);

    // Bad input: 422 naming the field, nothing stored.
    let before = g.cp.version().await;
    let twice =
        g.cp.put(
            "/v1/consumers/eve",
            json!({"certificates": [{"uri": "spiffe://test/alice"}]}),
        )
        .await;
    assert_eq!(twice.status(), 422);
    assert!(twice.text().await.expect("body").contains("both claim"));
    let bad_ca =
        g.cp.put(
            "/v1/gateways/mtls",
            json!({"address": "127.0.0.1", "port": tls_port, "protocol": "https",
                   "certificate": "edge",
                   "client_certificates": {"mode": "require", "ca_pem": "not a CA"}}),
        )
        .await;
    assert_eq!(bad_ca.status(), 422);
    let problem: Value = bad_ca.json().await.expect("problem");
    assert_eq!(
        problem["errors"][0]["field"],
        json!("client_certificates.ca_pem")
    );
    assert_eq!(g.cp.version().await, before, "nothing stored");
    g.cp.assert_no_nacks().await;

    // Required: without a certificate the handshake itself fails.
    let required =
        g.cp.apply(
            "/v1/gateways/mtls",
            json!({"address": "127.0.0.1", "port": tls_port, "protocol": "https",
                   "certificate": "edge",
                   "client_certificates": {"mode": "require", "ca_pem": pki.read("clients.crt")}}),
        )
        .await;
    g.cp.until_converged(required).await;
    eventually(
        Duration::from_secs(10),
        "anonymous handshakes to fail",
        || async { call(&client(&pki, None, tls_port), &who).await.is_none() },
    )
    .await;
    let (status, _) = call(&client(&pki, Some("carol"), tls_port), &who)
        .await
        .expect("carol still served");
    assert_eq!(status, 200);
}
