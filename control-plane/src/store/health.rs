//! Whether the store is reachable, known without waiting: a query that
//! fails for want of a connection is followed by a direct connection
//! attempt outside the pool (refused at once when the database is down;
//! a busy pool is not an outage). While the store is known to be down,
//! the admin API and `/readyz` answer 503 at once, and the sync loop's
//! periodic check probes it again, so its return is noticed within one
//! poll interval.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sqlx::Connection;
use tracing::{info, warn};

use super::{Store, StoreError};

/// Longest wait for the direct connection attempt.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct Health {
    down: AtomicBool,
}

impl StoreError {
    /// The database could not be reached (rather than refused the query).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Down
                | StoreError::Database(
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::Io(_)
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                )
        )
    }
}

impl Store {
    /// True while the store is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.health.down.load(Ordering::Acquire)
    }

    fn set_down(&self, down: bool) {
        let was = self.health.down.swap(down, Ordering::AcqRel);
        match (was, down) {
            (false, true) => {
                warn!(store = %self.url, "store unreachable; answering 503 at once until it is back")
            }
            (true, false) => info!(store = %self.url, "store reachable again"),
            _ => {}
        }
    }

    /// Connects outside the pool: whether the database answers at all.
    pub async fn probe(&self) -> bool {
        let attempt = async {
            let connection = sqlx::AnyConnection::connect(self.url.expose()).await?;
            connection.close().await
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
            Ok(Ok(()))
        )
    }

    /// After a query failed with `e`: if it was for want of a connection,
    /// find out whether the database is down or only the pool busy.
    pub async fn notice(&self, e: &StoreError) {
        if e.is_unavailable() {
            let up = self.probe().await;
            self.set_down(!up);
        }
    }

    /// The current version, as the sync loop's periodic check reads it:
    /// while the store is known to be down only the probe runs (at once),
    /// and a success marks it up again.
    pub async fn checked_version(&self) -> Result<u64, StoreError> {
        if self.is_down() && !self.probe().await {
            return Err(StoreError::Down);
        }
        let version = self.version().await;
        match &version {
            Ok(_) => self.set_down(false),
            Err(e) => self.notice(e).await,
        }
        version
    }
}
