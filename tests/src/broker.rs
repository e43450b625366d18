//! A gateway in front of one or more brokers, as the broker tests use it:
//! ext-authz, Envoy, the brokers (each reached for WebSockets at
//! `/b<i>/v1/ws`, rewritten to its `/v1/ws`), publishing at `POST
//! /v1/topics/…` through the first, topics `orders.*` (publishing needs
//! `orders:publish`; 10 kept; up to 70 KB) and `audit` (subscribers need
//! the role `auditor`), a publisher and a reader consumer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    Sidecar, Stack,
    websocket::{WsClient, connect, next},
};

pub struct Realtime {
    pub g: Stack,
    pub brokers: Vec<Sidecar>,
    /// A consumer who may publish on `orders.*`.
    pub publisher: String,
    /// A consumer who may only subscribe.
    pub reader: String,
}

impl Realtime {
    /// One broker per entry of `brokers` (its extra flags).
    pub async fn start(brokers: &[&[&str]]) -> Self {
        let g = Stack::auth(&[]).await;
        let mut started = Vec::new();
        for (i, args) in brokers.iter().enumerate() {
            let broker = Sidecar::broker(g.cp.xds, args).await;
            g.cp.apply(&format!("/v1/services/broker-{i}"), broker.service())
                .await;
            g.cp.apply(
                &format!("/v1/routes/realtime-{i}"),
                json!({"match": {"path_prefix": format!("/b{i}/v1/ws")},
                       "destination": {"service": format!("broker-{i}")},
                       "prefix_rewrite": "/v1/ws", "websocket": {}, "auth": {"method": "api_key"}}),
            )
            .await;
            started.push(broker);
        }
        g.cp.apply(
            "/v1/routes/publish",
            json!({"match": {"path_prefix": "/v1/topics/", "methods": ["POST"]},
                   "destination": {"service": "broker-0"}, "auth": {"method": "api_key"}}),
        )
        .await;
        g.cp.apply(
            "/v1/topics/orders",
            json!({"pattern": "orders.*", "publish": {"scopes": ["orders:publish"]},
                   "retain": 10, "max_message_bytes": 70000}),
        )
        .await;
        g.cp.apply(
            "/v1/topics/audit",
            json!({"subscribe": {"roles": ["auditor"]}}),
        )
        .await;
        g.cp.apply("/v1/consumers/shop", json!({})).await;
        let publisher: Value =
            g.cp.post(
                "/v1/consumers/shop/keys",
                json!({"scopes": ["orders:publish"]}),
            )
            .await
            .json()
            .await
            .expect("key");
        let publisher = publisher["key"].as_str().expect("key").to_owned();
        let reader = g.cp.consumer_key("alice").await;
        let version = g.cp.apply("/v1/consumers/alice", json!({})).await;
        g.cp.until_converged(version).await;
        g.cp.assert_no_nacks().await;
        Self {
            g,
            brokers: started,
            publisher,
            reader,
        }
    }

    /// The WebSocket URL of broker `i` with `query`.
    pub fn ws(&self, i: usize, query: &str) -> String {
        self.g
            .envoy
            .url(&format!("/b{i}/v1/ws?{query}"))
            .replacen("http://", "ws://", 1)
    }

    /// The reader subscribed to `topic` on broker `i` (after `after`).
    pub async fn subscribe(&self, i: usize, topic: &str, after: Option<&str>) -> WsClient {
        let mut query = format!("api_key={}&topic={topic}", self.reader);
        if let Some(after) = after {
            query.push_str(&format!("&after={after}"));
        }
        let mut connected = connect(&self.ws(i, &query), &[]).await.expect("101");
        let reply = next(&mut connected.socket, Duration::from_secs(5))
            .await
            .json();
        assert_eq!(reply["type"], "subscribed", "{reply}");
        connected.socket
    }

    /// Publishes `body` on `topic` with `key`: the status and JSON answer.
    pub async fn publish(&self, key: &str, topic: &str, body: &str) -> (u16, Value) {
        let response = crate::client()
            .post(self.g.envoy.url(&format!("/v1/topics/{topic}/messages")))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
