use super::*;

const CHAIN: &str = include_str!("../../../../tests/fixtures/tls/localhost.crt");
const KEY: &str = include_str!("../../../../tests/fixtures/tls/localhost.key");
const EXPIRED: &str = include_str!("../../../../tests/fixtures/tls/expired.crt");
const EXPIRED_KEY: &str = include_str!("../../../../tests/fixtures/tls/expired.key");
const OTHER_KEY: &str = include_str!("../../../../tests/fixtures/tls/other.key");

fn cert(json: serde_json::Value) -> Certificate {
    serde_json::from_value(json).expect("certificate")
}

fn fields(c: &Certificate) -> Vec<String> {
    c.validate().into_iter().map(|e| e.field).collect()
}

#[test]
fn file_references_are_absolute_paths() {
    let c = cert(serde_json::json!({
        "name": "edge", "cert_chain_file": "certs/edge.pem", "private_key_file": "/k\n"
    }));
    assert_eq!(fields(&c), ["cert_chain_file", "private_key_file"]);
    let half = cert(serde_json::json!({"name": "edge", "cert_chain_file": "/a.pem"}));
    assert_eq!(fields(&half), ["private_key_file"]);
    let none = cert(serde_json::json!({"name": "edge"}));
    assert_eq!(fields(&none), ["cert_chain_pem"]);
}

#[test]
fn an_uploaded_chain_is_parsed_and_its_key_must_match() {
    let ok = cert(serde_json::json!({
        "name": "edge", "cert_chain_pem": CHAIN, "private_key_pem": KEY
    }));
    assert!(ok.validate().is_empty(), "{:?}", ok.validate());
    let info = ok.info().expect("info");
    assert_eq!(info.dns_names, ["localhost"]);
    assert_eq!(key_spki_sha256(KEY), Ok(info.spki_sha256.clone()));
    assert_eq!(ok.private_keys()[0].0, info.spki_sha256);
    assert_eq!(ok.needs_private_key(), Some(info.spki_sha256));

    let mismatched = cert(serde_json::json!({
        "name": "edge", "cert_chain_pem": CHAIN, "private_key_pem": OTHER_KEY
    }));
    let errors = mismatched.validate();
    assert_eq!(errors[0].field, "private_key_pem");
    assert!(errors[0].message.contains("does not match"), "{errors:?}");

    let expired = cert(serde_json::json!({
        "name": "old", "cert_chain_pem": EXPIRED, "private_key_pem": EXPIRED_KEY
    }));
    let errors = expired.validate();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("expired"), "{errors:?}");

    let garbage = cert(serde_json::json!({
        "name": "edge", "cert_chain_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "private_key_pem": "not a key"
    }));
    assert_eq!(fields(&garbage), ["cert_chain_pem"]);
    let no_block = cert(serde_json::json!({"name": "edge", "cert_chain_pem": "hello"}));
    assert_eq!(fields(&no_block), ["cert_chain_pem"]);
    let bad_key = cert(serde_json::json!({
        "name": "edge", "cert_chain_pem": CHAIN, "private_key_pem": "not a key"
    }));
    assert_eq!(fields(&bad_key), ["private_key_pem"]);
}

#[test]
fn the_key_is_never_serialised_or_printed() {
    let c = cert(serde_json::json!({
        "name": "edge", "cert_chain_pem": CHAIN, "private_key_pem": KEY
    }));
    let json = serde_json::to_string(&c).expect("json");
    assert!(!json.contains("PRIVATE KEY") && !json.contains("private_key"));
    assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    let mixed = cert(serde_json::json!({
        "name": "edge", "cert_chain_file": "/a", "private_key_file": "/b", "private_key_pem": KEY
    }));
    assert_eq!(fields(&mixed), ["private_key_pem"]);
}
