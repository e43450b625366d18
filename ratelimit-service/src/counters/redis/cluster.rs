//! Redis Cluster: the connection, made in the background, and deciding a
//! request whose counters hash to several slots: each hash-tag group by its
//! own script call, in parallel, with the hits of the groups that counted
//! given back when another refuses.

use std::sync::{PoisonError, atomic::Ordering};

use redis::{cluster::ClusterClient, cluster_async::ClusterConnection};
use tracing::warn;

use super::{Call, Connection, REPLY_WIDTH, RedisStore};
use crate::counters::CounterError;

impl RedisStore {
    /// The cluster connection, or `None` while (re)connecting in the background.
    pub(super) fn cluster_connection(&self) -> Option<ClusterConnection> {
        let Connection::Cluster {
            client,
            connection,
            connecting,
        } = &self.connection
        else {
            return None;
        };
        if let Some(c) = connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(c);
        }
        if !connecting.swap(true, Ordering::AcqRel) {
            let (client, slot, flag) = (
                ClusterClient::clone(client),
                connection.clone(),
                connecting.clone(),
            );
            tokio::spawn(async move {
                match client.get_async_connection().await {
                    Ok(c) => *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(c),
                    Err(e) => warn!(error = e.category(), "cannot connect to Redis Cluster yet"),
                }
                flag.store(false, Ordering::Release);
            });
        }
        None
    }

    /// Decides counters spread over several cluster slots (see the module doc).
    pub(super) async fn check_across_slots(
        &self,
        groups: Vec<Vec<Call<'_>>>,
    ) -> Result<Vec<Vec<i64>>, CounterError> {
        let answers = futures_util::future::join_all(
            groups.iter().map(|group| self.invoke(&self.script, group)),
        )
        .await;
        let mut counted = Vec::new();
        let mut refused = false;
        let mut failure = None;
        let mut values = Vec::new();
        for (group, answer) in groups.iter().zip(answers) {
            match answer {
                Ok(v) if v.len() != group.len() * REPLY_WIDTH => {
                    failure = Some(CounterError::Unavailable("unexpected script reply".into()));
                }
                Ok(v) => {
                    let admitted = group
                        .iter()
                        .zip(v.chunks(REPLY_WIDTH))
                        .all(|(call, r)| call.item.shadow || r[0] == 1);
                    if admitted {
                        // Give back the hits taken, leased ones included.
                        let taken: Vec<Call> = group
                            .iter()
                            .zip(v.chunks(REPLY_WIDTH))
                            .map(|(call, r)| Call {
                                item: call.item,
                                hits: call.hits + r[4].max(0) as u64,
                                lease: 0,
                            })
                            .collect();
                        counted.push(taken);
                    } else {
                        refused = true;
                    }
                    values.push(v);
                }
                Err(e) => failure = Some(e),
            }
        }
        if refused || failure.is_some() {
            for group in counted {
                if let Err(e) = self.invoke(&self.refund, &group).await {
                    warn!(error = %e, "could not give back the hits of a refused request");
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(values),
        }
    }
}

/// The part of a key Redis Cluster hashes: between the first `{` and the
/// next `}` (the whole key without one).
pub(super) fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

#[cfg(test)]
mod tests {

    #[test]
    fn hash_tags_are_what_redis_cluster_hashes() {
        assert_eq!(
            super::hash_tag("gh:policy:{p|consumer=a}:w"),
            "p|consumer=a"
        );
        assert_eq!(super::hash_tag("no-tag"), "no-tag");
        assert_eq!(super::hash_tag("empty{}tag"), "empty{}tag");
    }
}
