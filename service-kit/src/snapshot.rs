//! The one resource each service receives over ADS: decoded, handed to the
//! service to build its state, and either accepted (ACK) or refused with
//! the reason (NACK), the last good state kept.

use gatehouse_proto::protobuf::Any;
use gatehouse_xds_client::Refusal;

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("expected exactly one {type_url} resource, got {count}")]
    Count {
        type_url: &'static str,
        count: usize,
    },
    #[error("unexpected resource type {0}")]
    Type(String),
    #[error("undecodable {type_url}: {source}")]
    Decode {
        type_url: &'static str,
        source: prost::DecodeError,
    },
}

/// The one resource of `M` an ADS response must carry.
pub fn single_resource<M: prost::Message + Default>(
    resources: &[Any],
    type_url: &'static str,
) -> Result<M, SnapshotError> {
    let [resource] = resources else {
        return Err(SnapshotError::Count {
            type_url,
            count: resources.len(),
        });
    };
    if resource.type_url != type_url {
        return Err(SnapshotError::Type(resource.type_url.clone()));
    }
    M::decode(resource.value.as_slice())
        .map_err(|source| SnapshotError::Decode { type_url, source })
}

/// A receiver for the xDS client: decodes the single `M` of each response
/// and hands it to `apply` (which builds and swaps in the service's state);
/// `outcome` hears whether each update was taken (for metrics and
/// readiness). A decode error or `apply`'s own error is sent back as the
/// NACK's detail, so the control plane shows why.
pub fn receiver<M, E>(
    type_url: &'static str,
    mut apply: impl FnMut(&str, M) -> Result<(), E> + Send + 'static,
    mut outcome: impl FnMut(bool) + Send + 'static,
) -> impl FnMut(&str, Vec<Any>) -> Result<(), Refusal> + Send + 'static
where
    M: prost::Message + Default,
    E: std::error::Error + Send + Sync + 'static,
{
    move |version, resources| {
        let result = match single_resource::<M>(&resources, type_url) {
            Ok(config) => apply(version, config).map_err(|e| Box::new(e) as Refusal),
            Err(e) => Err(Box::new(e) as Refusal),
        };
        outcome(result.is_ok());
        result
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
    };

    use gatehouse_proto::protobuf;
    use prost::Message;

    use super::*;

    const TYPE_URL: &str = "type.googleapis.com/google.protobuf.StringValue";

    fn any(value: &str) -> Any {
        Any {
            type_url: TYPE_URL.into(),
            value: protobuf::StringValue {
                value: value.into(),
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn decodes_one_resource_and_keeps_the_reason_of_a_refusal() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (s, o) = (seen.clone(), outcomes.clone());
        let mut receive = receiver::<protobuf::StringValue, Infallible>(
            TYPE_URL,
            move |version, config| {
                s.lock()
                    .expect("lock")
                    .push(format!("{version}:{}", config.value));
                Ok(())
            },
            move |ok| o.lock().expect("lock").push(ok),
        );
        assert!(receive("1", vec![any("a")]).is_ok());
        let two = receive("2", vec![any("a"), any("b")]).expect_err("two resources");
        assert!(two.to_string().contains("exactly one"), "{two}");
        let garbage = Any {
            type_url: TYPE_URL.into(),
            value: vec![0xff, 0xff],
        };
        let undecodable = receive("3", vec![garbage]).expect_err("undecodable");
        assert!(
            undecodable.to_string().starts_with("undecodable"),
            "{undecodable}"
        );
        assert_eq!(*seen.lock().expect("lock"), ["1:a"]);
        assert_eq!(*outcomes.lock().expect("lock"), [true, false, false]);
    }
}
