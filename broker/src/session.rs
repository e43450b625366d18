//! One subscriber's WebSocket connection: its commands (`subscribe`,
//! `unsubscribe`), its outbox written to the socket, heartbeats, and the
//! close codes it can end with:
//!
//! | code | when |
//! |---|---|
//! | 1001 | the broker is stopping: reconnect (to another instance) |
//! | 1003 | a binary frame (commands are JSON text) |
//! | 1008 | more commands than allowed (20 a second, bursts of 50) |
//! | 1009 | a command over 4 KiB |
//! | 4000 | its queue was full on a `disconnect` topic: a slow consumer |
//!
//! A connection that answers no ping for two intervals is dropped, and so
//! is one that takes no frame for [`WRITE_TIMEOUT`] (a client that never
//! reads holds one message, its queue and its socket's buffers: bounded).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    Broker, Slot,
    hub::{Closing, EventId, Outbox},
    metrics::{ReasonLabel, TopicLabel},
    topics::{Identity, is_topic_name},
};

/// Longest command frame.
pub const MAX_COMMAND_BYTES: usize = 4 * 1024;
const COMMANDS_PER_SECOND: f64 = 20.0;
const COMMAND_BURST: f64 = 50.0;
/// Longest wait for a client to take a frame.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for each half of a closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Command {
    Subscribe {
        topic: String,
        #[serde(default)]
        after: Option<String>,
    },
    Unsubscribe {
        topic: String,
    },
}

/// A token bucket over commands.
struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens
            + now.duration_since(self.at).as_secs_f64() * COMMANDS_PER_SECOND)
            .min(COMMAND_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Session {
    broker: Arc<Broker>,
    who: Identity,
    id: u64,
    outbox: Arc<Outbox>,
    /// Topic name → its topic resource (the metrics' label).
    subscribed: HashMap<String, String>,
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Writes a frame; false when the client is gone or takes too long.
async fn send(sink: &mut Sink, message: Message) -> bool {
    send_within(sink, message, WRITE_TIMEOUT).await
}

/// Writes a frame within `wait`; false when the client is gone or slower.
async fn send_within(sink: &mut Sink, message: Message, wait: Duration) -> bool {
    matches!(
        tokio::time::timeout(wait, sink.send(message)).await,
        Ok(Ok(()))
    )
}

/// Closes with `code` and finishes the closing handshake: what the client
/// sent before it saw our Close is read and dropped until its own Close
/// (or [`CLOSE_WAIT`]). A socket closed with unread input is reset, and a
/// reset can lose the Close frame on its way to the client.
async fn close(sink: &mut Sink, stream: &mut Stream, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if !send_within(sink, frame, CLOSE_WAIT).await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn error(topic: &str, error: &str) -> String {
    json!({"type": "error", "topic": topic, "error": error}).to_string()
}

impl Session {
    /// Answers a subscribe: the reply frame (queued replays follow it).
    async fn subscribe(&mut self, topic: &str, after: Option<&str>) -> String {
        let metrics = &self.broker.metrics;
        if !is_topic_name(topic) {
            metrics.refuse("bad_topic");
            return error(topic, "bad_topic");
        }
        let after = match after.map(str::parse::<EventId>) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(())) => {
                metrics.refuse("bad_event_id");
                return error(topic, "bad_event_id");
            }
        };
        let topics = self.broker.topics.load();
        let Some(rule) = topics.as_ref().and_then(|t| t.rule(topic)) else {
            metrics.refuse("unknown_topic");
            return error(topic, "unknown_topic");
        };
        if !rule.subscribe.allows(&self.who) {
            metrics.refuse("forbidden");
            return error(topic, "forbidden");
        }
        if !self.subscribed.contains_key(topic)
            && self.subscribed.len() >= self.broker.limits.max_subscriptions
        {
            metrics.refuse("too_many_subscriptions");
            return error(topic, "too_many_subscriptions");
        }
        let (rule_name, drop_oldest) = (rule.name.clone(), rule.drop_oldest);
        drop(topics);
        let hub = &self.broker.hub;
        let replayed = match &self.broker.shared {
            None => hub.subscribe(topic, self.id, &self.outbox, after, drop_oldest),
            Some(shared) => {
                // Live messages are held while the replay is read.
                hub.subscribe_waiting(topic, self.id, &self.outbox, drop_oldest);
                let backlog = match after {
                    None => Ok(Vec::new()),
                    Some(after) => shared.after(topic, after).await,
                };
                match backlog {
                    Ok(backlog) => hub.go_live(topic, self.id, backlog, after),
                    Err(e) => {
                        tracing::warn!(error = %e, "replay not read");
                        hub.unsubscribe(topic, self.id);
                        metrics.refuse("store_unavailable");
                        return error(topic, "unavailable");
                    }
                }
            }
        };
        if self
            .subscribed
            .insert(topic.to_owned(), rule_name.clone())
            .is_none()
        {
            metrics
                .subscriptions
                .get_or_create(&TopicLabel { topic: rule_name })
                .inc();
        }
        json!({"type": "subscribed", "topic": topic, "replayed": replayed}).to_string()
    }

    fn unsubscribe(&mut self, topic: &str) -> String {
        if let Some(rule) = self.subscribed.remove(topic) {
            self.broker.hub.unsubscribe(topic, self.id);
            self.broker
                .metrics
                .subscriptions
                .get_or_create(&TopicLabel { topic: rule })
                .dec();
        }
        json!({"type": "unsubscribed", "topic": topic}).to_string()
    }

    async fn command(&mut self, text: &str) -> String {
        match serde_json::from_str::<Command>(text) {
            Ok(Command::Subscribe { topic, after }) => {
                self.subscribe(&topic, after.as_deref()).await
            }
            Ok(Command::Unsubscribe { topic }) => self.unsubscribe(&topic),
            Err(_) => {
                self.broker.metrics.refuse("bad_command");
                json!({"type": "error", "error": "bad_command"}).to_string()
            }
        }
    }

    fn end(&mut self) {
        for topic in self.subscribed.keys().cloned().collect::<Vec<_>>() {
            self.unsubscribe(&topic);
        }
    }
}

/// Serves one connection until it ends; `first` subscribes at once (from
/// the upgrade's query).
pub async fn run(
    socket: WebSocket,
    broker: Arc<Broker>,
    who: Identity,
    slot: Slot,
    first: Option<(String, Option<String>)>,
) {
    let metrics = broker.metrics.clone();
    metrics.connections.inc();
    let outbox = Arc::new(Outbox::new(broker.limits.queue));
    let mut session = Session {
        id: broker.next_connection(),
        broker: broker.clone(),
        who,
        outbox: outbox.clone(),
        subscribed: HashMap::new(),
    };
    let (mut sink, mut stream) = socket.split();
    let reason = serve(&mut session, &mut sink, &mut stream, &outbox, first).await;
    session.end();
    // The connection's slot is free before its end is counted.
    drop(slot);
    metrics.connections.dec();
    metrics
        .disconnects
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

async fn serve(
    session: &mut Session,
    sink: &mut Sink,
    stream: &mut Stream,
    outbox: &Outbox,
    first: Option<(String, Option<String>)>,
) -> &'static str {
    let broker = session.broker.clone();
    if let Some((topic, after)) = first {
        let reply = session.subscribe(&topic, after.as_deref()).await;
        if !send(sink, Message::Text(reply.into())).await {
            return "client";
        }
    }
    let interval = broker.limits.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut heard = Instant::now();
    let mut budget = Budget {
        tokens: COMMAND_BURST,
        at: Instant::now(),
    };
    loop {
        tokio::select! {
            () = broker.going_away.cancelled() => {
                close(sink, stream, 1001, "going away").await;
                return "going_away";
            }
            taken = outbox.take() => match taken {
                Ok(events) => {
                    for event in events {
                        if !send(sink, Message::Text(event.frame.clone().into())).await {
                            return "stalled";
                        }
                        broker.metrics.delivered.get_or_create(&TopicLabel { topic: event.rule.clone() }).inc();
                        broker.metrics.delivery_seconds.observe(event.published.elapsed().as_secs_f64());
                    }
                }
                Err(Closing::SlowConsumer) => {
                    close(sink, stream, 4000, "slow consumer: queue full").await;
                    return "slow_consumer";
                }
            },
            _ = ping.tick() => {
                if heard.elapsed() > interval * 2 {
                    return "dead";
                }
                if !send(sink, Message::Ping(Vec::new().into())).await {
                    return "stalled";
                }
            }
            frame = stream.next() => {
                let Some(Ok(message)) = frame else {
                    return "client";
                };
                heard = Instant::now();
                match message {
                    Message::Text(text) => {
                        if text.len() > MAX_COMMAND_BYTES {
                            close(sink, stream, 1009, "command too big").await;
                            return "protocol";
                        }
                        if !budget.take() {
                            close(sink, stream, 1008, "too many commands").await;
                            return "flood";
                        }
                        let reply = session.command(&text).await;
                        if !send(sink, Message::Text(reply.into())).await {
                            return "stalled";
                        }
                    }
                    Message::Binary(_) => {
                        close(sink, stream, 1003, "commands are JSON text").await;
                        return "protocol";
                    }
                    Message::Close(_) => return "client",
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    }
}
