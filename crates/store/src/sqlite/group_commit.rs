//! Group commit: the writes of many concurrent callers share one SQLite transaction, and so one
//! `fsync`, without any caller seeing its write acknowledged before it is durable.
//!
//! Each write runs under the writer connection's lock inside a `SAVEPOINT` of the open batch
//! transaction (opened `BEGIN IMMEDIATE` by the first write of a batch). A write that fails is
//! rolled back to its savepoint alone. The write that finds nobody else waiting for the lock —
//! or the batch full or old — commits the batch; every writer of the batch returns only once
//! that `COMMIT` (with `synchronous=FULL`) has returned, with its error if it failed. Waiters
//! that see nobody commit their batch within [`STALL`] commit it themselves, so a writer that
//! died mid-batch cannot strand the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use authkeeper_core::StoreError;

use super::errors::sql_error;

/// Most writes in one batch.
const MAX_WRITES: usize = 512;
/// Oldest a batch gets before the next write commits it.
const MAX_AGE: Duration = Duration::from_millis(10);
/// How long a finished writer waits for someone else to commit its batch before doing it.
const STALL: Duration = Duration::from_millis(20);
/// How many failed batches are remembered for their writers.
const FAILED_KEPT: usize = 64;

/// The open batch transaction.
struct Batch {
    id: u64,
    started: Instant,
    writes: usize,
}

/// The writer connection and its open batch.
struct Writer {
    conn: Connection,
    open: Option<Batch>,
    last_id: u64,
}

/// What happened to finished batches.
#[derive(Default)]
struct Commits {
    /// Every batch up to this one is finished (committed or failed).
    finished_through: u64,
    /// Recent batches whose commit failed, with the reason.
    failed: Vec<(u64, String)>,
}

/// One write connection shared by group commit.
pub(super) struct GroupCommit {
    writer: Mutex<Writer>,
    /// Writers waiting for the writer lock (a batch stays open while there are some).
    waiting: AtomicUsize,
    commits: Mutex<Commits>,
    finished: Condvar,
}

impl GroupCommit {
    /// Group commit over `conn` (WAL, `synchronous=FULL`, no transaction open).
    pub(super) fn new(conn: Connection) -> Self {
        GroupCommit {
            writer: Mutex::new(Writer {
                conn,
                open: None,
                last_id: 0,
            }),
            waiting: AtomicUsize::new(0),
            commits: Mutex::new(Commits::default()),
            finished: Condvar::new(),
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic in a write leaves at most its savepoint open inside the batch: the batch is
        // committed or rolled back as a whole later, never half-applied.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_commits(&self) -> MutexGuard<'_, Commits> {
        self.commits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` as one atomic write and returns once it is durable (or failed).
    pub(super) fn write<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut writer = self.lock_writer();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let batch = match writer.open.as_mut() {
            Some(batch) => batch.id,
            None => {
                writer
                    .conn
                    .execute_batch("BEGIN IMMEDIATE")
                    .map_err(sql_error)?;
                writer.last_id += 1;
                let id = writer.last_id;
                writer.open = Some(Batch {
                    id,
                    started: Instant::now(),
                    writes: 0,
                });
                id
            }
        };
        let outcome = run_in_savepoint(&writer.conn, work);
        let savepoint_failed = outcome.is_err() && writer.conn.is_autocommit();
        if let Some(open) = writer.open.as_mut() {
            open.writes += 1;
        }
        let full = writer
            .open
            .as_ref()
            .is_some_and(|b| b.writes >= MAX_WRITES || b.started.elapsed() >= MAX_AGE);
        if savepoint_failed || full || self.waiting.load(Ordering::SeqCst) == 0 {
            self.commit(&mut writer);
        }
        drop(writer);
        let value = outcome?;
        self.wait_for(batch)?;
        Ok(value)
    }

    /// Commits the open batch (rolling it back if the commit fails) and wakes its writers.
    fn commit(&self, writer: &mut Writer) {
        let Some(batch) = writer.open.take() else {
            return;
        };
        let failure = if writer.conn.is_autocommit() {
            // SQLite already ended the transaction (a failed statement rolled it back).
            Some("the batch transaction was rolled back by SQLite".to_owned())
        } else {
            match writer.conn.execute_batch("COMMIT") {
                Ok(()) => None,
                Err(error) => {
                    let _ = writer.conn.execute_batch("ROLLBACK");
                    Some(sql_error(error).to_string())
                }
            }
        };
        let mut commits = self.lock_commits();
        commits.finished_through = batch.id;
        if let Some(reason) = failure {
            tracing::error!(batch = batch.id, writes = batch.writes, %reason, "a store write batch failed to commit");
            commits.failed.push((batch.id, reason));
            if commits.failed.len() > FAILED_KEPT {
                commits.failed.remove(0);
            }
        }
        drop(commits);
        self.finished.notify_all();
    }

    /// Waits until `batch` is finished; its error if it failed.
    fn wait_for(&self, batch: u64) -> Result<(), StoreError> {
        let mut commits = self.lock_commits();
        loop {
            if commits.finished_through >= batch {
                return match commits.failed.iter().find(|(id, _)| *id == batch) {
                    Some((_, reason)) => Err(StoreError::Unavailable {
                        message: format!("the write was not stored: {reason}"),
                        source: None,
                    }),
                    None => Ok(()),
                };
            }
            let (guard, timeout) = self
                .finished
                .wait_timeout(commits, STALL)
                .unwrap_or_else(PoisonError::into_inner);
            commits = guard;
            if timeout.timed_out() && commits.finished_through < batch {
                drop(commits);
                let mut writer = self.lock_writer();
                if writer.open.as_ref().is_some_and(|open| open.id == batch) {
                    self.commit(&mut writer);
                }
                drop(writer);
                commits = self.lock_commits();
            }
        }
    }
}

/// Runs `work` inside a savepoint: released when it succeeds, rolled back when it fails.
fn run_in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT authkeeper_write")
        .map_err(sql_error)?;
    match work(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE authkeeper_write")
                .map_err(sql_error)?;
            Ok(value)
        }
        Err(error) => {
            if !conn.is_autocommit() {
                let _ =
                    conn.execute_batch("ROLLBACK TO authkeeper_write; RELEASE authkeeper_write");
            }
            Err(error)
        }
    }
}
