//! Names shared by every kind: DNS labels for resource names, DNS names for
//! hosts, HTTP header names.

use super::FieldError;

/// Names are DNS labels: lower-case alphanumerics and '-', 1..=63 characters,
/// starting and ending with an alphanumeric.
pub fn check_name(name: &str, field: &str, errors: &mut Vec<FieldError>) {
    if !is_dns_label(name) {
        errors.push(FieldError::new(
            field,
            "must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
        ));
    }
}

/// What [`is_dns_label`] accepts, as a regular expression (for JSON Schemas).
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

pub(crate) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let lower = label.to_ascii_lowercase();
            is_dns_label(&lower)
        })
}

pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "users", "users-v2", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
