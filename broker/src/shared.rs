//! Several broker instances on one Redis: a publish appends to the topic
//! name's stream (`gh:topic:<name>`, trimmed to the topic's `retain`; the
//! stream's id is the event id) and announces it on one pub/sub channel
//! in the same script, so every instance (the publishing one included)
//! hears each message once, in stream order, and hands it to its own
//! subscribers. A client that reconnects to any instance with its last id
//! reads what it missed from the stream. After the pub/sub connection
//! drops, an instance reads each subscribed topic's stream from the last
//! id it delivered, so nothing published meanwhile is lost.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::{
    Broker,
    hub::{Event, EventId},
    metrics::TopicLabel,
};

/// The one channel every instance listens on.
const CHANNEL: &str = "gh:broker:messages";
/// A topic name's stream outlives its last publish by this much.
const KEEP_MS: u64 = 24 * 3_600_000;
/// Most messages read back at once (a replay, a resync).
const READ_BATCH: usize = 10_000;

const PUBLISH: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'r', ARGV[4], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[3] .. '\n' .. ARGV[4] .. '\n' .. id .. '\n' .. ARGV[2])
return id
";

#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct StoreError(String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // The category only: an error's text may quote the URL.
        StoreError(e.category().to_owned())
    }
}

pub struct RedisLog {
    client: redis::Client,
    connection: ConnectionManager,
    script: redis::Script,
}

fn stream_key(topic: &str) -> String {
    format!("gh:topic:{topic}")
}

impl RedisLog {
    /// Connects on first use; `url` is checked here.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            connection,
            script: redis::Script::new(PUBLISH),
        })
    }

    /// Appends a message and announces it: its event id.
    pub async fn publish(
        &self,
        topic: &str,
        rule: &str,
        retain: usize,
        data: &str,
    ) -> Result<EventId, StoreError> {
        let id: String = self
            .script
            .key(stream_key(topic))
            .arg(retain)
            .arg(data)
            .arg(topic)
            .arg(rule)
            .arg(KEEP_MS)
            .arg(CHANNEL)
            .invoke_async(&mut self.connection.clone())
            .await?;
        id.parse()
            .map_err(|()| StoreError(format!("unexpected stream id {id:?}")))
    }

    /// The kept messages of `topic` after `after`, oldest first.
    pub async fn after(&self, topic: &str, after: EventId) -> Result<Vec<Arc<Event>>, StoreError> {
        // Entries as [id, [field, value, ...]]; `(id` excludes `after`.
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream_key(topic))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let id: EventId = id.parse().ok()?;
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|pair| pair[0] == name)
                        .and_then(|pair| pair.get(1))
                        .map(String::as_str)
                };
                Some(Arc::new(Event::from_json(
                    topic,
                    field("r")?,
                    id,
                    field("d")?,
                )))
            })
            .collect())
    }

    /// Hands every announced message to this instance's subscribers until
    /// `stop`; reconnects after a failure, then reads what it missed.
    pub async fn fan_out(self: Arc<Self>, broker: Arc<Broker>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        while !stop.is_cancelled() {
            match self.listen(&broker, &stop, first).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "broker fan-out from Redis interrupted; reconnecting");
                }
            }
            first = false;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen(
        &self,
        broker: &Broker,
        stop: &CancellationToken,
        first: bool,
    ) -> Result<(), StoreError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        if !first {
            // Subscribed again: what was announced while we were away.
            for (topic, last) in broker.hub.live_topics() {
                for event in self.after(&topic, last).await? {
                    deliver(broker, event);
                }
            }
        }
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(StoreError("the pub/sub connection closed".into()));
                    };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(event) = parse(&payload) {
                        deliver(broker, Arc::new(event));
                    }
                }
            }
        }
    }
}

/// Hands a message to this instance's subscribers, counting drops.
fn deliver(broker: &Broker, event: Arc<Event>) {
    let label = TopicLabel {
        topic: event.rule.clone(),
    };
    let published = broker.hub.deliver(event);
    if published.dropped > 0 {
        broker
            .metrics
            .dropped
            .get_or_create(&label)
            .inc_by(published.dropped);
    }
}

/// `topic \n rule \n id \n data` (the script's announcement).
fn parse(payload: &str) -> Option<Event> {
    let mut parts = payload.splitn(4, '\n');
    let topic = parts.next()?;
    let rule = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    let data = parts.next()?;
    Some(Event::from_json(topic, rule, id, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_back_into_events() {
        let event = parse("orders.eu\norders\n17-2\n{\"a\":\"x\\ny\"}").expect("an event");
        assert_eq!(
            (event.topic.as_str(), event.rule.as_str()),
            ("orders.eu", "orders")
        );
        assert_eq!(event.id, EventId { ms: 17, seq: 2 });
        let frame: serde_json::Value = serde_json::from_str(&event.frame).expect("JSON");
        assert_eq!(frame["data"]["a"], "x\ny");
        assert!(parse("no newline").is_none());
    }
}
