//! Sustained admin writes per second: N parallel clients each writing
//! different routes in a loop, with and without Envoy validating every
//! change, on SQLite and on Postgres (issue 19).
//!
//! Every cell gets a fresh control plane and database; the cells of a round
//! run one after the other and rounds repeat the whole table, so a slow
//! moment of the machine lands on one sample of every cell, not on one
//! cell. Reported: the median over rounds and the range.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_e2e::{ControlPlane, ControlPlaneOptions, free_port, postgres_database, reqwest};
use serde_json::json;

pub struct Settings {
    pub seconds: u64,
    pub rounds: usize,
    pub clients: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy)]
struct Cell {
    backend: Backend,
    validate: bool,
    clients: usize,
}

pub async fn run(settings: Settings) {
    let mut cells = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for validate in [false, true] {
            for &clients in &settings.clients {
                cells.push(Cell {
                    backend,
                    validate,
                    clients,
                });
            }
        }
    }
    let mut samples = vec![Vec::new(); cells.len()];
    for round in 0..settings.rounds {
        for (cell, samples) in cells.iter().zip(&mut samples) {
            let (rate, errors) = measure(*cell, Duration::from_secs(settings.seconds)).await;
            samples.push(rate);
            eprintln!(
                "round {round}: {} → {rate:.0} writes/s, {errors} failed",
                label(cell)
            );
            if errors > 0 {
                println!("{}: {errors} writes failed", label(cell));
            }
        }
    }
    println!("| backend | Envoy validation | clients | writes/s (median) | range |");
    println!("|---|---|---|---|---|");
    for (cell, samples) in cells.iter().zip(&mut samples) {
        samples.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {} | {:.0} | {:.0}–{:.0} |",
            if cell.backend == Backend::Sqlite {
                "SQLite"
            } else {
                "Postgres"
            },
            if cell.validate { "on" } else { "off" },
            cell.clients,
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1],
        );
    }
}

fn label(cell: &Cell) -> String {
    format!(
        "{} validate={} clients={}",
        if cell.backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        },
        cell.validate,
        cell.clients
    )
}

/// Writes per second over `length`, and the failed writes.
async fn measure(cell: Cell, length: Duration) -> (f64, u64) {
    let mut options = ControlPlaneOptions::new(free_port());
    options.validate_with_envoy = cell.validate;
    // A token rather than --xds-insecure, which older builds compared with
    // here do not know.
    options.xds_token = Some("a-token-for-the-writes-benchmark-0123456789".into());
    if cell.backend == Backend::Postgres {
        options.database_url = Some(postgres_database().await);
    }
    let cp = ControlPlane::start(options).await;
    cp.apply(
        "/v1/services/web",
        json!({"endpoints": [{"host": "127.0.0.1", "port": 9}]}),
    )
    .await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let clients: Vec<_> = (0..cell.clients)
        .map(|client| {
            let (http, base) = (http.clone(), cp.url("/v1/routes/"));
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let answer = http
                        .put(format!("{base}w{client}-{n}"))
                        .json(&json!({
                            "match": {"path_exact": format!("/w{client}/{n}")},
                            "destination": {"service": "web"}
                        }))
                        .send()
                        .await;
                    match answer {
                        Ok(a) if a.status().is_success() => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    // Writes in flight when the clock stopped count, over the time they took.
    let elapsed = started.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}
