//! The schema: portable SQL files embedded in the binary, run on start.
//! Nothing else touches the schema before they have run.

use std::{borrow::Cow, time::Duration};

use futures_core::future::BoxFuture;
use sqlx::{
    error::BoxDynError,
    migrate::{Migration, MigrationSource, MigrationType, Migrator},
};

use super::{Store, StoreError};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "change log items",
        include_str!("../../../migrations/0002_change_log_items.sql"),
    ),
    (
        3,
        "history",
        include_str!("../../../migrations/0003_history.sql"),
    ),
    (
        4,
        "admin tokens",
        include_str!("../../../migrations/0004_admin_tokens.sql"),
    ),
    (
        5,
        "api keys",
        include_str!("../../../migrations/0005_api_keys.sql"),
    ),
    (
        6,
        "rejected resources",
        include_str!("../../../migrations/0006_rejections.sql"),
    ),
    (
        7,
        "version notes",
        include_str!("../../../migrations/0007_version_notes.sql"),
    ),
    (
        8,
        "traffic usage",
        include_str!("../../../migrations/0008_traffic_usage.sql"),
    ),
    (
        9,
        "ownership",
        include_str!("../../../migrations/0009_ownership.sql"),
    ),
    (
        10,
        "certificate keys",
        include_str!("../../../migrations/0010_certificate_keys.sql"),
    ),
    (
        11,
        "xds tokens",
        include_str!("../../../migrations/0011_xds_tokens.sql"),
    ),
];

#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

impl Store {
    /// Applies the embedded migrations (idempotent; serialised by sqlx's lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::new(EmbeddedMigrations)
            .await?
            .run(&self.pool)
            .await?;
        self.migrated.send_replace(true);
        Ok(())
    }

    /// True once migrations have run in this process.
    pub fn is_migrated(&self) -> bool {
        *self.migrated.borrow()
    }

    /// Waits at most `timeout` for the migrations to have run; true if they have.
    pub async fn wait_migrated(&self, timeout: Duration) -> bool {
        if self.is_migrated() {
            return true;
        }
        let mut migrated = self.migrated.subscribe();
        matches!(
            tokio::time::timeout(timeout, migrated.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }
}
