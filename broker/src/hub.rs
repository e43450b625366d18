//! Per topic name, the subscribers of this instance (and in memory the
//! last `retain` messages): a message is put in each subscriber's bounded
//! [`Outbox`]. Event ids are `<ms>-<seq>`, ordered within a topic (Redis
//! stream ids), and each subscriber is handed an id once, in order: a
//! client that reconnects with its last id gets exactly what came after
//! it. With Redis, a subscriber waits while its replay is read (live
//! messages are held for it), then goes live.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::Notify;

use crate::topics::Rule;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(EventId {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

impl EventId {
    /// The id after `last`, from the wall clock when it has moved on.
    pub fn next(last: EventId) -> EventId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now > last.ms {
            EventId { ms: now, seq: 0 }
        } else {
            EventId {
                ms: last.ms,
                seq: last.seq + 1,
            }
        }
    }
}

/// One message, with the frame every subscriber is sent.
#[derive(Debug)]
pub struct Event {
    pub topic: String,
    /// The topic resource (metrics' label).
    pub rule: String,
    pub id: EventId,
    pub frame: String,
    pub published: Instant,
}

impl Event {
    /// `data` is JSON text (checked when published).
    pub fn from_json(topic: &str, rule: &str, id: EventId, data: &str) -> Self {
        let frame = format!(
            r#"{{"type":"message","topic":{},"id":"{id}","data":{data}}}"#,
            serde_json::Value::from(topic)
        );
        Event {
            topic: topic.to_owned(),
            rule: rule.to_owned(),
            id,
            frame,
            published: Instant::now(),
        }
    }
}

/// Why a connection is being closed by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Its queue was full on a `disconnect` topic (close code 4000).
    SlowConsumer,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    closing: Option<Closing>,
}

/// What happened to a message put in an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Queued,
    /// Queued, the oldest queued message dropped to make room.
    DroppedOldest,
    /// Not queued: the connection is closed as a slow consumer.
    Disconnected,
}

/// One connection's bounded queue of messages to send.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::default(),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn put(&self, event: Arc<Event>, drop_oldest: bool) -> Put {
        let mut queue = self.lock();
        if queue.closing.is_some() {
            return Put::Disconnected;
        }
        let put = if queue.events.len() < self.capacity {
            Put::Queued
        } else if drop_oldest {
            queue.events.pop_front();
            Put::DroppedOldest
        } else {
            queue.closing = Some(Closing::SlowConsumer);
            queue.events.clear();
            self.notify.notify_one();
            return Put::Disconnected;
        };
        queue.events.push_back(event);
        drop(queue);
        self.notify.notify_one();
        put
    }

    /// Closes the connection as a slow consumer.
    fn close_slow(&self) {
        let mut queue = self.lock();
        queue.closing = Some(Closing::SlowConsumer);
        queue.events.clear();
        drop(queue);
        self.notify.notify_one();
    }

    /// Waits for messages (all queued are taken) or for a closing.
    pub async fn take(&self) -> Result<Vec<Arc<Event>>, Closing> {
        loop {
            {
                let mut queue = self.lock();
                if let Some(closing) = queue.closing {
                    return Err(closing);
                }
                if !queue.events.is_empty() {
                    return Ok(queue.events.drain(..).collect());
                }
            }
            self.notify.notified().await;
        }
    }
}

/// One connection's subscription to one topic name.
#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    drop_oldest: bool,
    /// The newest id handed to it: no older or equal one is sent again.
    last: Option<EventId>,
    /// While its replay is read from Redis: the live messages held for it.
    waiting: Option<Vec<Arc<Event>>>,
}

impl Subscriber {
    fn offer(&mut self, event: &Arc<Event>) -> Option<Put> {
        if let Some(waiting) = &mut self.waiting {
            if waiting.len() >= self.outbox.capacity {
                self.outbox.close_slow();
                return Some(Put::Disconnected);
            }
            waiting.push(event.clone());
            return Some(Put::Queued);
        }
        if self.last.is_some_and(|last| event.id <= last) {
            return None;
        }
        self.last = Some(event.id);
        Some(self.outbox.put(event.clone(), self.drop_oldest))
    }
}

#[derive(Debug, Default)]
struct Log {
    /// In memory only: the messages kept.
    retained: VecDeque<Arc<Event>>,
    /// The newest id published (in memory) or delivered (with Redis) here.
    last: EventId,
    subscribers: HashMap<u64, Subscriber>,
}

impl Log {
    fn fan_out(&mut self, event: &Arc<Event>, published: &mut Published) {
        if event.id > self.last {
            self.last = event.id;
        }
        self.subscribers
            .retain(|_, subscriber| match subscriber.offer(event) {
                None => true,
                Some(Put::Queued) => {
                    published.delivered += 1;
                    true
                }
                Some(Put::DroppedOldest) => {
                    published.delivered += 1;
                    published.dropped += 1;
                    true
                }
                Some(Put::Disconnected) => {
                    published.disconnected += 1;
                    false
                }
            });
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("too many topic names are in use")]
    TooManyTopics,
}

/// What a publish did.
#[derive(Debug, Default)]
pub struct Published {
    pub id: EventId,
    pub delivered: u64,
    pub dropped: u64,
    pub disconnected: u64,
}

/// Every topic name's log.
#[derive(Debug)]
pub struct Hub {
    logs: Mutex<HashMap<String, Log>>,
    max_topics: usize,
}

impl Hub {
    pub fn new(max_topics: usize) -> Self {
        Self {
            logs: Mutex::default(),
            max_topics,
        }
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Log>> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a message to `topic` and queues it for its subscribers.
    pub fn publish(
        &self,
        topic: &str,
        rule: &Rule,
        data: &serde_json::Value,
    ) -> Result<Published, PublishError> {
        let mut logs = self.logs();
        if !logs.contains_key(topic) && logs.len() >= self.max_topics {
            // Names nobody listens to and nothing is kept for go first.
            logs.retain(|_, log| !log.subscribers.is_empty() || !log.retained.is_empty());
            if logs.len() >= self.max_topics {
                return Err(PublishError::TooManyTopics);
            }
        }
        let log = logs.entry(topic.to_owned()).or_default();
        let id = EventId::next(log.last);
        let event = Arc::new(Event::from_json(topic, &rule.name, id, &data.to_string()));
        if rule.retain > 0 {
            log.retained.push_back(event.clone());
            while log.retained.len() > rule.retain {
                log.retained.pop_front();
            }
        } else {
            log.retained.clear();
        }
        let mut published = Published {
            id,
            ..Published::default()
        };
        log.fan_out(&event, &mut published);
        Ok(published)
    }

    /// Hands a message published through Redis to this instance's
    /// subscribers of its topic.
    pub fn deliver(&self, event: Arc<Event>) -> Published {
        let mut published = Published {
            id: event.id,
            ..Published::default()
        };
        if let Some(log) = self.logs().get_mut(&event.topic) {
            log.fan_out(&event, &mut published);
        }
        published
    }

    /// Adds a subscriber to `topic` (in memory); with `after`, first queues
    /// the kept messages that came after it (returns how many).
    pub fn subscribe(
        &self,
        topic: &str,
        connection: u64,
        outbox: &Arc<Outbox>,
        after: Option<EventId>,
        drop_oldest: bool,
    ) -> usize {
        let mut logs = self.logs();
        let log = logs.entry(topic.to_owned()).or_default();
        let backlog: Vec<Arc<Event>> = match after {
            Some(after) => log
                .retained
                .iter()
                .filter(|e| e.id > after)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let mut subscriber = Subscriber {
            outbox: outbox.clone(),
            drop_oldest,
            last: after,
            waiting: None,
        };
        let replayed = backlog
            .iter()
            .filter(|e| subscriber.offer(e).is_some())
            .count();
        log.subscribers.insert(connection, subscriber);
        replayed
    }

    /// Adds a subscriber whose replay is still to be read: live messages
    /// are held for it until [`Hub::go_live`].
    pub fn subscribe_waiting(
        &self,
        topic: &str,
        connection: u64,
        outbox: &Arc<Outbox>,
        drop_oldest: bool,
    ) {
        let mut logs = self.logs();
        let log = logs.entry(topic.to_owned()).or_default();
        log.subscribers.insert(
            connection,
            Subscriber {
                outbox: outbox.clone(),
                drop_oldest,
                last: None,
                waiting: Some(Vec::new()),
            },
        );
    }

    /// Queues a waiting subscriber's replay (what came after `after`), then
    /// the live messages held for it, each id once: how many were replayed.
    pub fn go_live(
        &self,
        topic: &str,
        connection: u64,
        backlog: Vec<Arc<Event>>,
        after: Option<EventId>,
    ) -> usize {
        let mut logs = self.logs();
        let Some(subscriber) = logs
            .get_mut(topic)
            .and_then(|log| log.subscribers.get_mut(&connection))
        else {
            return 0;
        };
        let held = subscriber.waiting.take().unwrap_or_default();
        subscriber.last = after;
        let replayed = backlog
            .iter()
            .filter(|e| subscriber.offer(e).is_some())
            .count();
        for event in &held {
            subscriber.offer(event);
        }
        replayed
    }

    /// Topic names with subscribers here, with the newest id delivered to
    /// them (to read what was missed after Redis came back).
    pub fn live_topics(&self) -> Vec<(String, EventId)> {
        self.logs()
            .iter()
            .filter(|(_, log)| !log.subscribers.is_empty() && log.last != EventId::default())
            .map(|(topic, log)| (topic.clone(), log.last))
            .collect()
    }

    pub fn unsubscribe(&self, topic: &str, connection: u64) {
        let mut logs = self.logs();
        if let Some(log) = logs.get_mut(topic) {
            log.subscribers.remove(&connection);
            if log.subscribers.is_empty() && log.retained.is_empty() {
                logs.remove(topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(retain: usize, drop_oldest: bool) -> Rule {
        Rule {
            name: "t".into(),
            publish: Default::default(),
            subscribe: Default::default(),
            max_message_bytes: 1024,
            retain,
            drop_oldest,
        }
    }

    #[test]
    fn ids_order_and_parse() {
        let a = EventId { ms: 5, seq: 9 };
        assert_eq!("5-9".parse::<EventId>(), Ok(a));
        assert_eq!("5".parse::<EventId>(), Ok(EventId { ms: 5, seq: 0 }));
        assert!("x-1".parse::<EventId>().is_err());
        let next = EventId::next(EventId {
            ms: u64::MAX - 1,
            seq: 3,
        });
        assert_eq!(next.seq, 4, "the clock behind: same ms, next seq");
    }

    #[tokio::test]
    async fn a_reconnecting_subscriber_gets_what_came_after_its_last_id() {
        let hub = Hub::new(10);
        let r = rule(3, false);
        let data = serde_json::json!({"n": 1});
        let ids: Vec<EventId> = (0..5)
            .map(|_| hub.publish("t", &r, &data).expect("published").id)
            .collect();
        let outbox = Arc::new(Outbox::new(10));
        // Only 3 are kept: after the first id, the last three come back.
        assert_eq!(hub.subscribe("t", 1, &outbox, Some(ids[0]), false), 3);
        let got = outbox.take().await.expect("messages");
        assert_eq!(
            got.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids[2..].to_vec()
        );
        assert_eq!(hub.publish("t", &r, &data).expect("published").delivered, 1);
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_or_drops_the_oldest_per_topic() {
        let hub = Hub::new(10);
        let data = serde_json::json!(null);
        let strict = Arc::new(Outbox::new(2));
        hub.subscribe("s", 1, &strict, None, false);
        let lenient = Arc::new(Outbox::new(2));
        hub.subscribe("l", 2, &lenient, None, true);
        for _ in 0..3 {
            hub.publish("s", &rule(0, false), &data).expect("published");
            hub.publish("l", &rule(0, true), &data).expect("published");
        }
        assert_eq!(strict.take().await.err(), Some(Closing::SlowConsumer));
        assert_eq!(lenient.take().await.expect("kept").len(), 2);
        let more = hub.publish("s", &rule(0, false), &data).expect("published");
        assert_eq!(more.delivered, 0, "the slow one was unsubscribed");
    }

    #[test]
    fn topic_names_are_bounded() {
        let hub = Hub::new(2);
        let data = serde_json::json!(1);
        hub.publish("a", &rule(1, false), &data).expect("a");
        hub.publish("b", &rule(1, false), &data).expect("b");
        assert_eq!(
            hub.publish("c", &rule(1, false), &data).err(),
            Some(PublishError::TooManyTopics)
        );
        // Names keeping nothing and heard by nobody make room.
        let hub = Hub::new(1);
        hub.publish("a", &rule(0, false), &data).expect("a");
        hub.publish("b", &rule(0, false), &data).expect("b");
    }

    #[tokio::test]
    async fn a_waiting_subscriber_gets_its_replay_then_what_came_meanwhile_each_once() {
        let hub = Hub::new(10);
        let outbox = Arc::new(Outbox::new(10));
        hub.subscribe_waiting("t", 1, &outbox, false);
        let event = |ms| Arc::new(Event::from_json("t", "t", EventId { ms, seq: 0 }, "1"));
        // Announced while the replay is read: 3 (in the replay too) and 4.
        hub.deliver(event(3));
        hub.deliver(event(4));
        let after = Some(EventId { ms: 1, seq: 0 });
        assert_eq!(hub.go_live("t", 1, vec![event(2), event(3)], after), 2);
        let ids = |events: Vec<Arc<Event>>| events.iter().map(|e| e.id.ms).collect::<Vec<_>>();
        assert_eq!(ids(outbox.take().await.expect("messages")), [2, 3, 4]);
        hub.deliver(event(4));
        hub.deliver(event(5));
        assert_eq!(ids(outbox.take().await.expect("messages")), [5]);
        assert_eq!(
            hub.live_topics(),
            [("t".to_owned(), EventId { ms: 5, seq: 0 })]
        );
    }
}
