//! The store suite, run once against SQLite and once against Postgres.
//!
//! Each test gets a fresh database: a new SQLite file, or a new Postgres
//! database on the server named by `GATEHOUSE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod apply;
mod groups;
mod history;
mod ownership;
mod support;
mod traffic;
mod writes;
