//! A fresh Postgres database per test.

use crate::process::unique;

/// A fresh Postgres database for one test, on the server named by
/// `GATEHOUSE_TEST_POSTGRES_URL` (default: the local trust-auth server).
pub async fn postgres_database() -> String {
    let admin = std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = unique("gh_e2e");
    let status = tokio::process::Command::new("psql")
        .arg(&admin)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .status()
        .await
        .expect("psql available");
    assert!(status.success(), "cannot create database {name} on {admin}");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}
