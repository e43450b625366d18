//! Gatehouse's message broker: clients subscribe to topics over WebSocket
//! through Envoy (which authenticated them: the broker reads the identity
//! headers ext-authz sets, so it must listen where only Envoy reaches it),
//! services publish with `POST /v1/topics/{topic}/messages`; topics and who
//! may use them come from the control plane over ADS.
//!
//! Rooms: [`topics`] (the rules in force), [`hub`] (messages fanned out
//! to bounded outboxes, kept in memory by default), [`shared`] (several
//! instances on one Redis: streams keep, pub/sub fans out), [`session`]
//! (one WebSocket connection), [`http`] (the endpoints), [`metrics`].

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use gatehouse_proto::broker as proto;
use gatehouse_xds_client::Subscription;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub mod http;
pub mod hub;
pub mod metrics;
pub mod session;
pub mod shared;
pub mod topics;

use metrics::{Metrics, ResultLabel};
use topics::Topics;

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages queued per connection before its topic's slow-consumer rule.
    pub queue: usize,
    /// Open connections per consumer.
    pub connections_per_consumer: usize,
    /// Topic names one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Time between pings; two silent intervals drop a connection.
    pub ping_interval: Duration,
    /// Topic names held in memory at once.
    pub max_topic_names: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue: 256,
            connections_per_consumer: 16,
            max_subscriptions: 100,
            ping_interval: Duration::from_secs(30),
            max_topic_names: 100_000,
        }
    }
}

pub struct Settings {
    pub xds_endpoint: String,
    pub node_id: String,
    pub xds_token: Option<gatehouse_xds_client::XdsToken>,
    /// The CA of an `https://` xDS endpoint.
    pub xds_ca: Option<gatehouse_xds_client::XdsCa>,
    pub limits: Limits,
    /// Messages shared with other instances through this Redis.
    pub shared: Option<Arc<shared::RedisLog>>,
}

/// The broker's shared state.
pub struct Broker {
    pub topics: ArcSwapOption<Topics>,
    pub hub: hub::Hub,
    /// With Redis: where messages are kept and announced.
    pub shared: Option<Arc<shared::RedisLog>>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Open connections per consumer.
    connections: Mutex<HashMap<String, usize>>,
    next_connection: AtomicU64,
    /// Cancelled on shutdown: every connection is closed with 1001.
    pub going_away: CancellationToken,
    /// The WebSocket sessions, awaited on shutdown.
    pub sessions: TaskTracker,
}

/// A consumer's open-connection slot, given back when dropped.
pub struct Slot {
    broker: Arc<Broker>,
    consumer: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .broker
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.consumer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.consumer);
            }
        }
    }
}

impl Broker {
    pub fn new(limits: Limits, shared: Option<Arc<shared::RedisLog>>) -> Self {
        Self {
            topics: ArcSwapOption::empty(),
            hub: hub::Hub::new(limits.max_topic_names),
            shared,
            metrics: Metrics::new(),
            limits,
            connections: Mutex::default(),
            next_connection: AtomicU64::new(1),
            going_away: CancellationToken::new(),
            sessions: TaskTracker::new(),
        }
    }

    /// A connection slot for `consumer`, unless it holds as many as allowed.
    pub fn reserve(self: &Arc<Self>, consumer: &str) -> Option<Slot> {
        let mut open = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(consumer.to_owned()).or_default();
        if *n >= self.limits.connections_per_consumer {
            return None;
        }
        *n += 1;
        Some(Slot {
            broker: self.clone(),
            consumer: consumer.to_owned(),
        })
    }

    pub fn next_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why the topics from the control plane were refused (never: any topic
/// set is usable; kept for the receiver's signature).
#[derive(Debug, thiserror::Error)]
#[error("unusable topics")]
pub struct TopicsError;

/// Subscribes to the control plane and serves on a pre-bound listener until
/// `shutdown` resolves; then closes every WebSocket with 1001 and waits for
/// them (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), gatehouse_service_kit::ServeError> {
    let broker = Arc::new(Broker::new(settings.limits, settings.shared));
    let stop = CancellationToken::new();
    let mut fan_out = match broker.shared.clone() {
        Some(shared) => tokio::spawn(shared.fan_out(broker.clone(), stop.clone())),
        None => tokio::spawn(std::future::pending()),
    };
    let subscription = Subscription {
        endpoint: settings.xds_endpoint,
        node_id: settings.node_id,
        node_cluster: "gatehouse-broker".into(),
        type_url: proto::TYPE_URL.into(),
        token: settings.xds_token,
        ca: settings.xds_ca.clone(),
    };
    let receiving = broker.clone();
    let counting = broker.metrics.clone();
    let receiver = gatehouse_service_kit::snapshot::receiver(
        proto::TYPE_URL,
        move |version, config: proto::BrokerConfig| {
            let topics = Topics::new(config);
            tracing::info!(version, topics = topics.len(), "topics updated");
            receiving.topics.store(Some(Arc::new(topics)));
            Ok::<_, TopicsError>(())
        },
        move |ok| {
            let result = if ok { "ok" } else { "rejected" };
            counting
                .config_updates
                .get_or_create(&ResultLabel { result })
                .inc();
        },
    );
    let mut xds = tokio::spawn(gatehouse_xds_client::run(
        subscription,
        receiver,
        stop.clone(),
    ));
    let halt = CancellationToken::new();
    let going_away = broker.going_away.clone();
    let halted = halt.clone();
    let mut server = tokio::spawn(gatehouse_service_kit::http::serve_http(
        listener,
        http::router(broker.clone()),
        gatehouse_service_kit::http::HttpLimits::default(),
        async move {
            tokio::select! {
                () = shutdown => {}
                () = halted.cancelled() => {}
            }
            going_away.cancel();
        },
    ));
    let ended = tokio::select! {
        _ = &mut server => None,
        joined = &mut xds => {
            halt.cancel();
            let _ = server.await;
            Some(("the xDS subscription", gatehouse_service_kit::why_ended(joined.map(|()| Ok::<(), TopicsError>(())))))
        }
        joined = &mut fan_out => {
            halt.cancel();
            let _ = server.await;
            Some(("the fan-out from Redis", gatehouse_service_kit::why_ended(joined.map(|()| Ok::<(), TopicsError>(())))))
        }
    };
    broker.going_away.cancel();
    broker.sessions.close();
    broker.sessions.wait().await;
    stop.cancel();
    if let Some((task, why)) = ended {
        tracing::error!(task, error = %why, "a background task stopped; stopping");
        return Err(gatehouse_service_kit::ServeError::TaskEnded { task, why });
    }
    let _ = xds.await;
    fan_out.abort();
    Ok(())
}
