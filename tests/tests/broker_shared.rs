//! Several brokers on one Redis, through a real Envoy (issue 23): a
//! message published on one reaches the subscribers of both, once each;
//! a broker killed mid-stream: its clients reconnect to the other with
//! their last event id and get what was published meanwhile, none twice;
//! Redis briefly gone: publishing is refused with 503 and nothing is lost
//! for subscribers once it is back.

use std::time::Duration;

use gatehouse_e2e::{
    broker::Realtime,
    redis::RedisServer,
    websocket::{Next, WsClient, next},
};
use serde_json::Value;

async fn message(socket: &mut WsClient) -> Value {
    let got = next(socket, Duration::from_secs(5)).await.json();
    assert_eq!(got["type"], "message", "{got}");
    got
}

#[tokio::test]
async fn a_message_published_on_one_broker_reaches_the_subscribers_of_both_once() {
    let redis = RedisServer::start().await;
    let url = format!("--redis-url={}", redis.url());
    let r = Realtime::start(&[&[&url], &[&url]]).await;
    let mut on_first = r.subscribe(0, "orders.eu", None).await;
    let mut on_second = r.subscribe(1, "orders.eu", None).await;
    for n in 0..5 {
        let (status, published) = r
            .publish(&r.publisher, "orders.eu", &format!(r#"{{"n": {n}}}"#))
            .await;
        assert_eq!(status, 202, "{published}");
        for socket in [&mut on_first, &mut on_second] {
            let got = message(socket).await;
            assert_eq!(
                (&got["id"], &got["data"]["n"]),
                (&published["id"], &n.into())
            );
        }
    }
    for socket in [&mut on_first, &mut on_second] {
        assert_eq!(
            next(socket, Duration::from_millis(300)).await,
            Next::Silent,
            "each message once"
        );
    }
    // Kept in Redis, trimmed to the topic's 10.
    let kept = redis.cli(&["XLEN", "gh:topic:orders.eu"]).await;
    assert_eq!(kept.trim(), "5");
}

#[tokio::test]
async fn clients_of_a_killed_broker_resume_on_the_other_from_their_last_id() {
    let redis = RedisServer::start().await;
    let url = format!("--redis-url={}", redis.url());
    let mut r = Realtime::start(&[&[&url], &[&url]]).await;
    // The reader is on the second broker; publishes go through the first.
    let mut reader = r.subscribe(1, "orders.eu", None).await;
    let (_, first) = r.publish(&r.publisher, "orders.eu", r#"{"n": 1}"#).await;
    assert_eq!(message(&mut reader).await["id"], first["id"]);
    r.brokers[1].kill().await;
    assert!(matches!(
        next(&mut reader, Duration::from_secs(5)).await,
        Next::Closed(_)
    ));
    let mut meanwhile = Vec::new();
    for n in 2..=4 {
        let (status, published) = r
            .publish(&r.publisher, "orders.eu", &format!(r#"{{"n": {n}}}"#))
            .await;
        assert_eq!(status, 202);
        meanwhile.push(published["id"].clone());
    }
    // Back on the first broker with the last id it had.
    let last = first["id"].as_str().expect("an id");
    let mut resumed = r.subscribe(0, "orders.eu", Some(last)).await;
    for id in &meanwhile {
        assert_eq!(&message(&mut resumed).await["id"], id);
    }
    let (_, live) = r.publish(&r.publisher, "orders.eu", r#"{"n": 5}"#).await;
    assert_eq!(message(&mut resumed).await["id"], live["id"]);
    assert_eq!(
        next(&mut resumed, Duration::from_millis(300)).await,
        Next::Silent,
        "none twice"
    );
}

#[tokio::test]
async fn while_redis_is_down_publishing_is_refused_and_subscribers_lose_nothing_after() {
    let mut redis = RedisServer::start().await;
    let url = format!("--redis-url={}", redis.url());
    let r = Realtime::start(&[&[&url]]).await;
    let mut reader = r.subscribe(0, "orders.eu", None).await;
    let (_, first) = r.publish(&r.publisher, "orders.eu", r#"{"n": 1}"#).await;
    assert_eq!(message(&mut reader).await["id"], first["id"]);

    redis.kill().await;
    let (status, problem) = r.publish(&r.publisher, "orders.eu", "{}").await;
    assert_eq!(status, 503, "{problem}");
    assert!(!problem.to_string().contains("redis://"), "{problem}");

    redis.restart().await;
    // Once the broker is back on Redis, messages flow again.
    let mut published = None;
    for _ in 0..200 {
        let (status, body) = r.publish(&r.publisher, "orders.eu", r#"{"n": 2}"#).await;
        if status == 202 {
            published = Some(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = published.expect("published");
    assert_eq!(message(&mut reader).await["id"], published["id"]);
}
