//! The client certificate of an `mtls` route: Envoy verified it against the
//! gateway's CA and sends it URL-encoded in the Check request
//! (`attributes.source.certificate`). Its identities, in the order they are
//! looked up: the public key (`spki:<hex SHA-256 of the
//! SubjectPublicKeyInfo>`), then each URI SAN (`uri:`), then each DNS SAN
//! (`dns:`, lower-case).

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use crate::credential::percent_decode_str;

/// The identities of the certificate Envoy forwarded; `None` when there is
/// none or it does not parse.
pub fn identities(url_encoded_pem: &str) -> Option<Vec<String>> {
    if url_encoded_pem.is_empty() {
        return None;
    }
    let pem = percent_decode_str(url_encoded_pem);
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
    let mut out = vec![format!(
        "spki:{}",
        hex::encode(Sha256::digest(cert.public_key().raw))
    )];
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        out.extend(names.iter().filter_map(|n| match n {
            GeneralName::URI(uri) => Some(format!("uri:{uri}")),
            _ => None,
        }));
        out.extend(names.iter().filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some(format!("dns:{}", dns.to_ascii_lowercase())),
            _ => None,
        }));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_or_garbage_is_no_certificate() {
        assert_eq!(identities(""), None);
        assert_eq!(identities("-----BEGIN%20CERTIFICATE-----%0Anope"), None);
    }

    #[test]
    fn a_url_encoded_certificate_gives_its_key_and_names() {
        let pem = include_str!("../../tests/fixtures/tls/localhost.crt");
        let encoded: String = pem
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let ids = identities(&encoded).expect("parses");
        assert!(ids[0].starts_with("spki:") && ids[0].len() == 5 + 64);
        assert!(ids.contains(&"dns:localhost".to_owned()), "{ids:?}");
    }
}
