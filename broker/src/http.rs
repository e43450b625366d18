//! The broker's HTTP side: `GET /v1/ws` (the WebSocket upgrade, with an
//! optional first `topic` and `after` in the query), `POST
//! /v1/topics/{topic}/messages` (publish a JSON body), and `/healthz`,
//! `/readyz`, `/metrics`. Refusals are RFC 7807 problems.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    Broker,
    hub::PublishError,
    metrics::TopicLabel,
    topics::{Identity, is_topic_name},
};

/// Identity headers ext-authz sets (clients cannot: Envoy removes them).
const CONSUMER_HEADER: &str = "x-gatehouse-consumer";
const SCOPES_HEADER: &str = "x-gatehouse-scopes";
const ROLES_HEADER: &str = "x-gatehouse-roles";
/// Largest frame a client may send (its commands are checked against a
/// smaller bound).
const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// The control plane's largest `max_message_bytes` (1 MiB), and a byte.
const MAX_BODY: usize = 1024 * 1024 + 1;

pub fn router(broker: Arc<Broker>) -> Router {
    let ready = broker.clone();
    let metrics = broker.metrics.clone();
    Router::new()
        .route("/v1/ws", get(upgrade))
        .route("/v1/topics/{topic}/messages", post(publish))
        // Above any topic's limit, which each publish checks.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(broker)
        .merge(gatehouse_service_kit::endpoints(
            move || ready.topics.load().is_some(),
            move || metrics.render(),
        ))
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(json!({
            "type": format!("urn:gatehouse:broker:{code}"),
            "title": code,
            "status": status.as_u16(),
            "detail": detail,
        })),
    )
        .into_response()
}

fn identity(headers: &HeaderMap) -> Option<Identity> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let consumer = value(CONSUMER_HEADER);
    if consumer.is_empty() {
        return None;
    }
    let list = |name: &str| value(name).split_whitespace().map(str::to_owned).collect();
    Some(Identity {
        consumer: consumer.to_owned(),
        scopes: list(SCOPES_HEADER),
        roles: list(ROLES_HEADER),
    })
}

fn no_identity(broker: &Broker) -> Response {
    broker.metrics.refuse("no_identity");
    problem(
        StatusCode::UNAUTHORIZED,
        "no_identity",
        "no authenticated consumer: the broker is reached through a Gatehouse route with auth",
    )
}

#[derive(Debug, Deserialize)]
struct FirstTopic {
    topic: Option<String>,
    after: Option<String>,
}

async fn upgrade(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    Query(first): Query<FirstTopic>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(who) = identity(&headers) else {
        return no_identity(&broker);
    };
    let Some(slot) = broker.reserve(&who.consumer) else {
        broker.metrics.refuse("too_many_connections");
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "this consumer has as many open connections as it may",
        );
    };
    // A reconnecting client's last id: the query's, or the SSE-style header.
    let after = first.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let first = first.topic.map(|topic| (topic, after));
    let sessions = broker.sessions.clone();
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| {
            sessions.track_future(crate::session::run(socket, broker, who, slot, first))
        })
}

async fn publish(
    State(broker): State<Arc<Broker>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(who) = identity(&headers) else {
        return no_identity(&broker);
    };
    let metrics = &broker.metrics;
    if !is_topic_name(&topic) {
        metrics.refuse("bad_topic");
        return problem(
            StatusCode::BAD_REQUEST,
            "bad_topic",
            "topic names are 1 to 128 of a-z, 0-9, '.', '_', '-'",
        );
    }
    let topics = broker.topics.load();
    let Some(rule) = topics.as_ref().and_then(|t| t.rule(&topic)) else {
        metrics.refuse("unknown_topic");
        return problem(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            "no topic covers this name",
        );
    };
    if !rule.publish.allows(&who) {
        metrics.refuse("forbidden");
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the consumer lacks a scope or role the topic requires to publish",
        );
    }
    if body.len() > rule.max_message_bytes {
        metrics.refuse("too_large");
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!(
                "messages on this topic are at most {} bytes",
                rule.max_message_bytes
            ),
        );
    }
    let Ok(data) = serde_json::from_slice::<serde_json::Value>(&body) else {
        metrics.refuse("invalid_json");
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be JSON",
        );
    };
    let label = TopicLabel {
        topic: rule.name.clone(),
    };
    let id = match &broker.shared {
        // Every instance (this one too) hands it out when Redis announces it.
        Some(shared) => match shared
            .publish(&topic, &rule.name, rule.retain, &data.to_string())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "publish not stored");
                metrics.refuse("store_unavailable");
                return retry_later(
                    "store_unavailable",
                    "the message store cannot be reached; nothing was published",
                );
            }
        },
        None => match broker.hub.publish(&topic, rule, &data) {
            Ok(published) => {
                metrics
                    .dropped
                    .get_or_create(&label)
                    .inc_by(published.dropped);
                published.id
            }
            Err(PublishError::TooManyTopics) => {
                metrics.refuse("too_many_topics");
                return retry_later(
                    "too_many_topics",
                    "the broker holds as many topic names as it may",
                );
            }
        },
    };
    metrics.published.get_or_create(&label).inc();
    (
        StatusCode::ACCEPTED,
        Json(json!({"topic": topic, "id": id.to_string()})),
    )
        .into_response()
}

/// 503 with `Retry-After`.
fn retry_later(code: &str, detail: &str) -> Response {
    let mut response = problem(StatusCode::SERVICE_UNAVAILABLE, code, detail);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}
