//! Writes from this process take turns, and single-resource writes that
//! arrive together commit together (group commit).
//!
//! Every write transaction starts by locking the `config_version` row, so
//! writes are serial anyway. Waiting writes queue here, in memory, in
//! arrival order; only the writer whose turn it is holds a connection, and
//! reads keep the rest of the pool. Past [`MAX_QUEUED`] waiting writes a
//! new one is refused as busy (503 with `Retry-After`), never as an outage.
//!
//! The writer whose turn comes takes every queued single-resource edit (up
//! to [`MAX_BATCH`]) and applies them in order in one transaction, each with
//! its own version and history entry, then runs the admission check (the
//! Envoy validation) once, on the configuration the group leaves. Many
//! parallel writers thus cost one validation per group instead of one each.
//! When the check refuses a group, it is split in halves and each half is
//! tried on its own, down to the single edit Envoy refuses, so one bad
//! change never takes good ones down with it. The group runs in its own
//! task: a writer whose client goes away does not abort the others.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_core::future::BoxFuture;
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};

use tracing::Instrument;

use super::{
    AdmissionError, Origin, Store, StoreError,
    edits::{Edit, Effect, apply_edit},
};

/// Writes that may wait for their turn before new ones are refused.
pub const MAX_QUEUED: usize = 1_000;

/// Most single-resource edits committed as one group.
pub const MAX_BATCH: usize = 128;

/// An edit's answer: its effect and the version it made (or found).
pub(super) type Answer = Result<(Effect, u64), StoreError>;

struct Pending {
    edit: Edit,
    origin: Origin,
    reply: oneshot::Sender<Answer>,
    /// The writer's span: the group's span links to it.
    span: tracing::Span,
}

#[derive(Debug)]
pub(super) struct WriteQueue {
    turn: Arc<Semaphore>,
    /// Writers waiting for a turn of their own (documents, keys, rollback).
    waiting: AtomicUsize,
    /// Single-resource edits waiting for a group.
    pending: Mutex<VecDeque<Pending>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.edit.fmt(f)
    }
}

impl Default for WriteQueue {
    fn default() -> Self {
        Self {
            turn: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
            pending: Mutex::default(),
        }
    }
}

impl WriteQueue {
    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire) + self.pending().len()
    }

    /// The next group, without the edits whose writers have gone.
    fn take_group(&self) -> Vec<Pending> {
        let mut pending = self.pending();
        let mut group = Vec::new();
        while group.len() < MAX_BATCH {
            let Some(next) = pending.pop_front() else {
                break;
            };
            if !next.reply.is_closed() {
                group.push(next);
            }
        }
        group
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
        let queue = &self.writes;
        if queue.queued() >= MAX_QUEUED {
            return Err(StoreError::Busy);
        }
        queue.waiting.fetch_add(1, Ordering::AcqRel);
        let permit = queue.turn.acquire().await;
        queue.waiting.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed.
        let permit = permit.map_err(|_| StoreError::Busy)?;
        Ok(Turn { _permit: permit })
    }

    /// Queues a single-resource edit and returns once its group committed
    /// (or it was refused).
    pub(super) async fn submit(&self, edit: Edit) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        {
            let mut pending = self.writes.pending();
            if pending.len() + self.writes.waiting.load(Ordering::Acquire) >= MAX_QUEUED {
                return Err(StoreError::Busy);
            }
            pending.push_back(Pending {
                edit,
                origin: self.origin.clone(),
                reply,
                span: tracing::Span::current(),
            });
        }
        loop {
            let turn = self.writes.turn.clone().acquire_owned().await;
            // A group answers all its writers before it gives the turn back.
            match answer.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let Ok(turn) = turn else {
                return Err(StoreError::Busy);
            };
            let group = self.writes.take_group();
            let store = self.clone();
            let span = tracing::info_span!("store.group_commit", writes = group.len());
            for pending in &group {
                span.follows_from(&pending.span);
            }
            // Its own task: this writer's client going away must not
            // abort a group that holds the others' edits.
            let _ = tokio::spawn(
                async move {
                    store.commit_group(group).await;
                    drop(turn);
                }
                .instrument(span),
            )
            .await;
        }
    }

    /// Commits `group`; when the admission check refuses it, each half on
    /// its own, so the refusal lands on the edit that causes it.
    fn commit_group(&self, group: Vec<Pending>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if group.is_empty() {
                return;
            }
            match self.try_group(&group).await {
                Ok(answers) => {
                    for (pending, answer) in group.into_iter().zip(answers) {
                        let _ = pending.reply.send(answer);
                    }
                }
                Err(StoreError::Admission(AdmissionError::Refused(_))) if group.len() > 1 => {
                    let mut first = group;
                    let second = first.split_off(first.len() / 2);
                    self.commit_group(first).await;
                    self.commit_group(second).await;
                }
                Err(e) => {
                    let mut group = group;
                    let last = group.pop();
                    for pending in group {
                        let _ = pending.reply.send(Err(e.copy_for_each()));
                    }
                    if let Some(last) = last {
                        let _ = last.reply.send(Err(e));
                    }
                }
            }
        })
    }

    /// One transaction: every edit in order, each change its own version,
    /// one admission check, one commit notice.
    async fn try_group(&self, group: &[Pending]) -> Result<Vec<Answer>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locks the writer row; the versions are assigned here, in order.
        let base: i64 = sqlx::query_scalar(
            "UPDATE config_version SET version = version WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut version = base as u64;
        let mut answers = Vec::with_capacity(group.len());
        let mut made = Vec::new();
        for pending in group {
            match apply_edit(&mut tx, &pending.edit, version + 1).await? {
                Ok(effect) if effect.changed => {
                    version += 1;
                    made.push((version, &pending.origin));
                    answers.push(Ok((effect, version)));
                }
                Ok(effect) => answers.push(Ok((effect, version))),
                Err(refused) => answers.push(Err(refused)),
            }
        }
        if made.is_empty() {
            tx.rollback().await?;
            return Ok(answers);
        }
        sqlx::query("UPDATE config_version SET version = $1 WHERE id = 1")
            .bind(version as i64)
            .execute(&mut *tx)
            .await?;
        let prepared = self.admit(&mut tx, version).await?;
        self.finish(tx, &made, version, prepared).await?;
        Ok(answers)
    }
}

/// The group's task ended without answering (it panicked).
fn lost() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

impl StoreError {
    /// The same failure for each writer of a group that shared it.
    fn copy_for_each(&self) -> StoreError {
        match self {
            StoreError::Admission(AdmissionError::Refused(errors)) => {
                StoreError::Admission(AdmissionError::Refused(errors.clone()))
            }
            StoreError::Admission(AdmissionError::Unavailable(why)) => {
                StoreError::Admission(AdmissionError::Unavailable(why.clone()))
            }
            StoreError::Busy => StoreError::Busy,
            e if e.is_unavailable() => StoreError::Down,
            e => StoreError::Database(sqlx::Error::Protocol(e.to_string())),
        }
    }
}
