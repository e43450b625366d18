//! Closed-loop floods for overload tests: `clients` loops sending GETs back
//! to back until stopped, keeping the first 503's `Retry-After` and body;
//! and `successes`, a few clients probing a route to count its 200s.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use serde_json::Value;

use crate::{client, probe};

/// The first 503 one flooding client got: its `Retry-After` and JSON body.
#[derive(Debug, Clone)]
pub struct Shed {
    pub retry_after: Option<String>,
    pub body: Value,
}

pub struct Flood {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(u64, Option<Shed>)>>,
}

/// What the flood got: 200s in all, and each client's first 503.
pub struct FloodReport {
    pub served: u64,
    pub shed: Vec<Shed>,
}

impl Flood {
    pub fn start(url: String, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let http = client();
                    let (mut served, mut shed) = (0, None);
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(response) = http.get(&url).send().await else {
                            continue;
                        };
                        match response.status().as_u16() {
                            200 => served += 1,
                            503 if shed.is_none() => {
                                let retry_after = response
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body = response.json().await.unwrap_or(Value::Null);
                                shed = Some(Shed { retry_after, body });
                            }
                            _ => {}
                        }
                    }
                    (served, shed)
                })
            })
            .collect();
        Self { stop, clients }
    }

    pub async fn stop(self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = FloodReport {
            served: 0,
            shed: Vec::new(),
        };
        for c in self.clients {
            let (served, shed) = c.await.expect("flooding client");
            report.served += served;
            report.shed.extend(shed);
        }
        report
    }
}

/// `clients` clients each probe `url` `each` times at once: how many 200s.
pub async fn successes(url: String, clients: usize, each: usize) -> usize {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = client();
                let mut ok = 0;
                for _ in 0..each {
                    ok += usize::from(probe(&http, &url).await.0 == 200);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("probing client");
    }
    ok
}
