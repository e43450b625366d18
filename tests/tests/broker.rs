//! The broker through a real Envoy (issue 23): clients subscribe over a
//! WebSocket route Envoy authenticated, services publish through an
//! API-key route with a publish scope; topics come from the control plane;
//! permissions, retention and reconnection with the last event id; slow
//! consumers, floods and per-consumer connection limits cut off without
//! hurting others; SIGTERM closes every connection with 1001.

use std::time::Duration;

use gatehouse_e2e::{
    Stack,
    broker::Realtime,
    eventually,
    websocket::{Next, connect, next, send, send_binary},
};
use serde_json::{Value, json};

#[tokio::test]
async fn subscribers_get_what_services_publish_through_the_gateway() {
    let r = Realtime::start(&[&[]]).await;
    let mut alice = r.subscribe(0, "orders.eu", None).await;

    let (status, first) = r.publish(&r.publisher, "orders.eu", r#"{"n": 1}"#).await;
    assert_eq!(status, 202, "{first}");
    let got = next(&mut alice, Duration::from_secs(5)).await.json();
    assert_eq!(
        (&got["type"], &got["topic"], &got["data"], &got["id"]),
        (
            &json!("message"),
            &json!("orders.eu"),
            &json!({"n": 1}),
            &first["id"]
        )
    );

    // Refusals: a reader cannot publish, bad bodies and unknown topics.
    assert_eq!(r.publish(&r.reader, "orders.eu", "{}").await.0, 403);
    assert_eq!(
        r.publish(&r.publisher, "orders.eu", "not json").await.0,
        400
    );
    let big = format!("\"{}\"", "x".repeat(70_001));
    assert_eq!(r.publish(&r.publisher, "orders.eu", &big).await.0, 413);
    assert_eq!(r.publish(&r.publisher, "news", "{}").await.0, 404);
    assert_eq!(
        r.publish("gk_000000000000_nope", "orders.eu", "{}").await.0,
        401
    );
    // An invalid key on the upgrade: 401 from the gateway.
    assert_eq!(
        connect(
            &r.ws(0, "api_key=gk_000000000000_nope&topic=orders.eu"),
            &[]
        )
        .await
        .err(),
        Some(401)
    );
    // Unknown topic and a topic needing a role: refused on the connection,
    // which stays open.
    send(&mut alice, r#"{"type": "subscribe", "topic": "nope"}"#)
        .await
        .expect("sent");
    let refused = next(&mut alice, Duration::from_secs(5)).await.json();
    assert_eq!(refused["error"], "unknown_topic", "{refused}");
    send(&mut alice, r#"{"type": "subscribe", "topic": "audit"}"#)
        .await
        .expect("sent");
    let refused = next(&mut alice, Duration::from_secs(5)).await.json();
    assert_eq!(refused["error"], "forbidden", "{refused}");

    // Away, then back with the last id: exactly what was missed, in order.
    drop(alice);
    let mut missed = Vec::new();
    for n in 2..=4 {
        let (status, published) = r
            .publish(&r.publisher, "orders.eu", &format!(r#"{{"n": {n}}}"#))
            .await;
        assert_eq!(status, 202);
        missed.push(published["id"].clone());
    }
    let last = first["id"].as_str().expect("an id");
    let mut back = r.subscribe(0, "orders.eu", Some(last)).await;
    for id in &missed {
        let got = next(&mut back, Duration::from_secs(5)).await.json();
        assert_eq!(&got["id"], id, "{got}");
    }
    assert_eq!(
        next(&mut back, Duration::from_millis(300)).await,
        Next::Silent,
        "nothing twice"
    );
    let metrics = r.brokers[0].metrics().await;
    assert!(
        metrics.contains("gatehouse_broker_messages_published_total{topic=\"orders\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_broker_connections 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn slow_consumers_floods_and_extra_connections_are_cut_off_alone() {
    let r = Realtime::start(&[&["--queue-size=4", "--max-connections-per-consumer=3"]]).await;
    let version =
        r.g.cp
            .apply("/v1/topics/bulk", json!({"max_message_bytes": 1048576}))
            .await;
    r.g.cp.until_converged(version).await;
    let mut steady = r.subscribe(0, "bulk", None).await;
    // A client that never reads.
    let _stuck = r.subscribe(0, "bulk", None).await;
    // Big messages fill the stuck client's socket buffers and Envoy's,
    // then its queue.
    let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(1_000_000));
    for _ in 0..60 {
        assert_eq!(r.publish(&r.publisher, "bulk", &body).await.0, 202);
        // The steady reader takes each as it comes.
        assert!(matches!(
            next(&mut steady, Duration::from_secs(5)).await,
            Next::Text(_)
        ));
    }
    eventually(
        Duration::from_secs(30),
        "the stuck client cut off",
        || async {
            let metrics = r.brokers[0].metrics().await;
            metrics.contains("gatehouse_broker_disconnects_total{reason=\"slow_consumer\"} 1")
                || metrics.contains("gatehouse_broker_disconnects_total{reason=\"stalled\"} 1")
        },
    )
    .await;

    // The stuck one's slot is free again: alice may hold three at once.
    let _second = r.subscribe(0, "bulk", None).await;
    let _third = r.subscribe(0, "bulk", None).await;
    let fourth = connect(&r.ws(0, &format!("api_key={}", r.reader)), &[]).await;
    assert_eq!(fourth.err(), Some(429), "more connections than allowed");

    // A flood of subscribe commands: closed with 1008; others unaffected.
    let mut flood = connect(&r.ws(0, &format!("api_key={}", r.publisher)), &[])
        .await
        .expect("101")
        .socket;
    let mut closed = None;
    for i in 0..200 {
        let command = format!(r#"{{"type": "subscribe", "topic": "orders.f{i}"}}"#);
        if send(&mut flood, &command).await.is_err() {
            break;
        }
    }
    for _ in 0..300 {
        match next(&mut flood, Duration::from_secs(5)).await {
            Next::Closed(code) => {
                closed = code;
                break;
            }
            Next::Silent => break,
            Next::Text(_) => {}
        }
    }
    assert_eq!(closed, Some(1008));
    // Commands are JSON text: a binary frame is closed with 1003.
    let mut binary = connect(&r.ws(0, &format!("api_key={}", r.publisher)), &[])
        .await
        .expect("101")
        .socket;
    send_binary(&mut binary, b"\x00\x01").await.expect("sent");
    assert_eq!(
        next(&mut binary, Duration::from_secs(5)).await,
        Next::Closed(Some(1003))
    );
    assert_eq!(r.publish(&r.publisher, "bulk", "{}").await.0, 202);
    assert!(matches!(
        next(&mut steady, Duration::from_secs(5)).await,
        Next::Text(_)
    ));
}

#[tokio::test]
async fn a_stopping_broker_tells_its_clients_to_go_away() {
    let mut r = Realtime::start(&[&[]]).await;
    let mut alice = r.subscribe(0, "orders.eu", None).await;
    let exit = r.brokers[0].terminate().await;
    assert_eq!(
        next(&mut alice, Duration::from_secs(5)).await,
        Next::Closed(Some(1001))
    );
    assert_eq!(exit, Some(0));
}

#[tokio::test]
async fn bad_topics_are_refused_by_field_and_nothing_is_stored() {
    let g = Stack::new().start().await;
    for (body, field) in [
        (json!({"pattern": "Orders.*"}), "pattern"),
        (json!({"retain": 10001}), "retain"),
        (json!({"max_message_bytes": 0}), "max_message_bytes"),
        (
            json!({"publish": {"scopes": ["two words"]}}),
            "publish.scopes[0]",
        ),
        (json!({"slow_consumer": "ignore"}), "slow_consumer"),
    ] {
        let response = g.cp.put("/v1/topics/orders", body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.expect("problem");
        assert!(problem.to_string().contains(field), "{body} → {problem}");
    }
    assert_eq!(g.cp.get("/v1/topics/orders").await.status(), 404);
}

/// A client that stops answering pings (here: never reads, so its pongs
/// are never sent) is dropped after two ping intervals, while a client
/// that reads stays.
#[tokio::test]
async fn connections_that_stop_answering_pings_are_dropped() {
    let r = Realtime::start(&[&["--ping-interval-ms=200"]]).await;
    let _silent = r.subscribe(0, "orders.eu", None).await;
    let mut alive = r.subscribe(0, "orders.eu", None).await;
    let mut dropped = false;
    for _ in 0..200 {
        // Reading answers the broker's pings.
        let _ = next(&mut alive, Duration::from_millis(50)).await;
        let metrics = r.brokers[0].metrics().await;
        if metrics.contains("gatehouse_broker_disconnects_total{reason=\"dead\"} 1") {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the silent client was dropped");
    assert!(
        r.brokers[0]
            .metrics()
            .await
            .contains("gatehouse_broker_connections 1")
    );
}
