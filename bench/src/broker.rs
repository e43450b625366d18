//! Delivery through the broker (issue 23's "sub-100 ms data delivery"):
//! `subscribers` WebSocket clients through Envoy on one topic, a publisher
//! posting through Envoy at `rate` messages a second; each message carries
//! the time it was sent, and each subscriber records when it arrived. With
//! `--shared`, two brokers on one Redis (subscribers split over both,
//! publishes through the first). Reports the delivery delay's percentiles
//! over every (message, subscriber) pair.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gatehouse_e2e::{
    broker::Realtime,
    redis::RedisServer,
    websocket::{Next, next},
};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn run(subscribers: usize, messages: usize, rate: u32, shared: bool) {
    let redis = if shared {
        Some(RedisServer::start().await)
    } else {
        None
    };
    let url = redis.as_ref().map(|r| format!("--redis-url={}", r.url()));
    // Every subscriber is the same consumer.
    let mut args = vec!["--max-connections-per-consumer=100000"];
    args.extend(url.iter().map(String::as_str));
    let brokers: Vec<&[&str]> = if shared {
        vec![&args, &args]
    } else {
        vec![&args]
    };
    let r = Realtime::start(&brokers).await;
    let delays = Arc::new(Mutex::new(Vec::with_capacity(subscribers * messages)));
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let mut socket = r.subscribe(i % brokers.len(), "orders.bench", None).await;
        let delays = delays.clone();
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < messages {
                match next(&mut socket, Duration::from_secs(10)).await {
                    Next::Text(text) => {
                        let frame: serde_json::Value =
                            serde_json::from_str(&text).unwrap_or_default();
                        if let Some(sent) = frame["data"]["sent_us"].as_u64() {
                            let delay = now_us().saturating_sub(sent);
                            if let Ok(mut d) = delays.lock() {
                                d.push(delay);
                            }
                            got += 1;
                        }
                    }
                    _ => break,
                }
            }
            got
        }));
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut refused = 0;
    for _ in 0..messages {
        ticks.tick().await;
        let body = format!(r#"{{"sent_us": {}}}"#, now_us());
        if r.publish(&r.publisher, "orders.bench", &body).await.0 != 202 {
            refused += 1;
        }
    }
    let mut received = 0;
    for reader in readers {
        received += reader.await.unwrap_or(0);
    }
    let mut delays = delays.lock().map(|d| d.clone()).unwrap_or_default();
    delays.sort_unstable();
    let at = |p: f64| {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!(
        "broker delivery through Envoy: {} broker(s){}, {subscribers} subscribers, {messages} messages at {rate}/s",
        brokers.len(),
        if shared {
            " on one Redis"
        } else {
            " in memory"
        },
    );
    println!(
        "  received {received} of {} ({refused} publishes refused); delay publish → subscriber: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        subscribers * messages,
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
