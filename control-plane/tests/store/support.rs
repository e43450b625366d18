//! What every store test uses: a fresh database per test (SQLite file or
//! Postgres database), resources to write, and the macro that runs each
//! test once per backend.

use std::sync::atomic::{AtomicU32, Ordering};

use gatehouse_control_plane::{
    model::{ConfigDocument, Route, Service},
    store::{ApplyOptions, DatabaseUrl, Store},
};
use sqlx::Connection;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) async fn sqlite() -> Store {
    let dir = std::env::temp_dir().join(unique("gatehouse_store"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Store::connect_lazy(&DatabaseUrl::sqlite_in(&dir)).expect("store");
    store.migrate().await.expect("migrate");
    store
}

pub(crate) fn postgres_admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the test Postgres server.
pub async fn postgres_url() -> DatabaseUrl {
    let admin = postgres_admin_url();
    let name = unique("gh_test");
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("Postgres reachable (set GATEHOUSE_TEST_POSTGRES_URL)");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}").parse().expect("url")
}

pub(crate) async fn postgres() -> Store {
    let store = Store::connect_lazy(&postgres_url().await).expect("store");
    store.migrate().await.expect("migrate");
    store
}

pub(crate) fn service(name: &str, port: u32) -> Service {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "endpoints": [{"host": "127.0.0.1", "port": port}],
        "connect_timeout_ms": 1000,
    }))
    .expect("a valid service")
}

pub(crate) fn route(name: &str, services: &[&str]) -> Route {
    let weighted = if services.len() > 1 {
        services
            .iter()
            .map(|s| gatehouse_control_plane::model::WeightedService {
                service: (*s).into(),
                weight: 1,
            })
            .collect()
    } else {
        Vec::new()
    };
    Route {
        owner: None,
        labels: Default::default(),
        shared: false,
        name: name.into(),
        matches: gatehouse_control_plane::model::RouteMatch {
            path_prefix: Some(format!("/{name}")),
            ..Default::default()
        },
        destination: gatehouse_control_plane::model::Destination {
            service: (services.len() == 1).then(|| services[0].to_owned()),
            weighted,
        },
        strip_prefix: false,
        prefix_rewrite: None,
        timeout_ms: None,
        auth: None,
        retries: None,
        priority: None,
        load_shedding: false,
        cors: None,
        headers: None,
        host_rewrite: None,
        host_rewrite_to_endpoint: false,
        idle_timeout_ms: None,
        redirect: None,
        direct_response: None,
        mirror: None,
        fault: None,
        max_body_bytes: None,
        websocket: None,
        require_tls: false,
        version: None,
        gateways: Vec::new(),
        grpc: None,
    }
}

pub(crate) fn document(services: &[Service], routes: &[Route]) -> ConfigDocument {
    ConfigDocument {
        services: services.to_vec(),
        routes: routes.to_vec(),
        ..ConfigDocument::default()
    }
}

pub(crate) fn summary(applied: &gatehouse_control_plane::store::Applied) -> Vec<String> {
    applied
        .changes
        .iter()
        .map(|c| format!("{:?} {} {}", c.op, c.kind, c.name))
        .collect()
}

pub(crate) const APPLY: ApplyOptions = ApplyOptions {
    prune: false,
    dry_run: false,
    if_version: None,
    whole: false,
};

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::support::sqlite().await).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::support::postgres().await).await;
                }
            )*
        }
    };
}

pub(crate) use store_suite;
