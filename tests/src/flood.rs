//! Load for overload and limit tests: closed-loop floods (`clients` loops
//! sending GETs back to back until stopped, keeping the first 503's
//! `Retry-After` and body); `Paced`, an open-loop load at a fixed rate
//! whatever the answers' latency; and `successes`, a few clients probing a
//! route to count its 200s.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
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

/// GETs at a fixed rate (open loop: each request is sent on its tick, not
/// after the previous answer), counting 200s, 429s and anything else.
pub struct Paced {
    counts: Arc<[AtomicU64; 3]>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a paced load got so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacedCounts {
    pub ok: u64,
    pub limited: u64,
    pub other: u64,
}

impl std::ops::Sub for PacedCounts {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            ok: self.ok - earlier.ok,
            limited: self.limited - earlier.limited,
            other: self.other - earlier.other,
        }
    }
}

impl Paced {
    pub fn start(url: String, per_second: u32) -> Self {
        let counts: Arc<[AtomicU64; 3]> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs(1) / per_second.max(1);
        let task = {
            let (counts, stop) = (counts.clone(), stop.clone());
            tokio::spawn(async move {
                let http = client();
                let mut ticks = tokio::time::interval(period);
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    let (http, url, counts) = (http.clone(), url.clone(), counts.clone());
                    tokio::spawn(async move {
                        let slot = match http.get(&url).send().await.map(|r| r.status().as_u16()) {
                            Ok(200) => 0,
                            Ok(429) => 1,
                            _ => 2,
                        };
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        };
        Self { counts, stop, task }
    }

    pub fn counts(&self) -> PacedCounts {
        let [ok, limited, other] = &*self.counts;
        PacedCounts {
            ok: ok.load(Ordering::Relaxed),
            limited: limited.load(Ordering::Relaxed),
            other: other.load(Ordering::Relaxed),
        }
    }

    /// Stops sending (answers still in flight are not waited for).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}
