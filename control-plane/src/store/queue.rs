//! Writes from this process take turns before they take a connection.
//!
//! Every write transaction starts by locking the `config_version` row, so
//! writes are serial anyway. Without a turn of their own, parallel writers
//! each held a pooled connection while they waited for that lock (with
//! Envoy's check inside the transaction, about 0.1 s each), the pool ran
//! dry, and healthy-store writes failed as "store unreachable" (or, on
//! SQLite, "database is locked"). Now they wait here, in memory, in
//! arrival order, and only the writer whose turn it is holds a connection;
//! reads keep the rest of the pool. Past [`MAX_QUEUED`] waiting writes a
//! new one is refused as busy (503 with `Retry-After`), never as an outage.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Store, StoreError};

/// Writes that may wait for their turn before new ones are refused.
pub const MAX_QUEUED: usize = 1_000;

#[derive(Debug)]
pub(super) struct WriteQueue {
    turn: Semaphore,
    waiting: AtomicUsize,
}

impl Default for WriteQueue {
    fn default() -> Self {
        Self {
            turn: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// This process's turn to write; the next writer goes when it is dropped.
pub(super) struct Turn<'a> {
    _permit: SemaphorePermit<'a>,
}

impl Store {
    /// Waits for this process's turn to write (fair: first come, first
    /// served), or refuses at once when [`MAX_QUEUED`] writes already wait.
    pub(super) async fn write_turn(&self) -> Result<Turn<'_>, StoreError> {
        let queue: &Arc<WriteQueue> = &self.writes;
        if queue.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            queue.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Busy);
        }
        let permit = queue.turn.acquire().await;
        queue.waiting.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed.
        let permit = permit.map_err(|_| StoreError::Busy)?;
        Ok(Turn { _permit: permit })
    }
}
