//! The writer: one OS thread owns the only write connection and commits
//! requests in groups.
//!
//! Every durable change must be fsynced before it is acknowledged, and an
//! fsync costs the same for one request as for hundreds. So the thread
//! blocks for one request, takes everything already queued behind it, and
//! commits all of it in one transaction. When every request of a group
//! comes from a caller that can wait (`Store::commit_pipelined`), it
//! lingers briefly for more (see [`LINGER_GAP`]): a transaction writes every
//! page it touched whole, so the pages and fsyncs per request fall as groups
//! grow. Anyone waiting on an answer (an HTTP caller) is never held.
//!
//! A request that is refused (a failed compare-and-set) is undone alone
//! while the others still commit: the group is then applied again with each
//! request in its own SAVEPOINT (groups with no refusal, the common case,
//! pay for no savepoint). Nobody is answered before the COMMIT returned; if
//! the transaction itself fails, nobody's request was written and everybody
//! is told so.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::codec::store_error;
use super::shm::ShmGuard;
use super::writes::{apply, Failure};
use crate::store::ops::{lingers, Op, Outcome, LINGER_GAP, LINGER_MAX, MAX_REQUESTS_PER_TRANSACTION};
use crate::store::{Committed, StoreError, StoreWatch, WriteNotice};

pub(super) type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

pub(super) struct Job {
    pub op: Op,
    pub reply: Reply,
    /// The caller can wait for a larger group (`Store::commit_pipelined`).
    pub patient: bool,
}

/// What travels over the writer's channel.
pub(super) enum Message {
    Job(Job),
    /// Test hook: the writer finishes what it has gathered, says so on
    /// `entered`, then blocks until `release` fires. Lets tests queue
    /// requests behind a busy writer without timing anything.
    #[cfg(test)]
    Hold {
        entered: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// Counters of committed transactions and the requests they carried.
#[derive(Default)]
pub(super) struct Counters {
    pub transactions: AtomicU64,
    pub requests: AtomicU64,
}

/// How the requests of a group are kept apart inside its transaction.
#[derive(Clone, Copy)]
enum Isolation {
    /// Applied one after the other; a refusal undoes the whole group.
    Straight,
    /// Each in its own SAVEPOINT; a refusal undoes that request alone.
    Savepoints,
}

/// Why a group's transaction did not commit.
enum GroupFailure {
    /// A request was refused while applied straight: apply again with savepoints.
    Refused,
    /// The database failed while doing this: nobody's request was written.
    Broken(&'static str, rusqlite::Error),
}

pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    counters: Arc<Counters>,
    guard: Arc<ShmGuard>,
    watch: Arc<StoreWatch>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        path: PathBuf,
        counters: Arc<Counters>,
        guard: Arc<ShmGuard>,
        watch: Arc<StoreWatch>,
    ) -> Writer {
        Writer { conn, path, counters, guard, watch }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub fn run(self, queue: flume::Receiver<Message>) {
        while let Ok(first) = queue.recv() {
            let until = Instant::now() + LINGER_MAX;
            let mut jobs = Vec::new();
            let mut all_patient = true;
            let mut next = Some(first);
            loop {
                while let Some(message) = next.take() {
                    match message {
                        Message::Job(job) => {
                            all_patient &= job.patient;
                            jobs.push(job);
                        }
                        #[cfg(test)]
                        Message::Hold { entered, release } => {
                            self.transact(std::mem::take(&mut jobs));
                            let _ = entered.send(());
                            let _ = release.recv();
                        }
                    }
                    if jobs.len() < MAX_REQUESTS_PER_TRANSACTION {
                        next = queue.try_recv().ok();
                    }
                }
                if !lingers(jobs.len(), all_patient) {
                    break;
                }
                let deadline = (Instant::now() + LINGER_GAP).min(until);
                match queue.recv_deadline(deadline) {
                    Ok(message) => next = Some(message),
                    Err(_) => break,
                }
            }
            self.transact(jobs);
        }
    }

    /// One transaction for all `jobs`; answers each only after COMMIT.
    ///
    /// Most groups have no refused request, so a group is first applied
    /// straight, without savepoints (each costs two statements and a copy of
    /// every page it touches). If a request is refused, the whole group is
    /// rolled back and applied again with each request in its own savepoint,
    /// so the refused one is undone alone.
    fn transact(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        // A transaction writes the -shm; see `shm` for why this is asked first.
        if let Err(StoreError::Unavailable(message) | StoreError::Invalid(message) | StoreError::Conflict(message)) =
            self.guard.check()
        {
            tracing::error!(requests = jobs.len(), "{message}; transaction refused");
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(message.clone())));
            }
            return;
        }
        let ops: Vec<&Op> = jobs.iter().map(|job| &job.op).collect();
        let changes_before = self.conn.total_changes();
        let applied = match self.apply_group(&ops, Isolation::Straight) {
            Err(GroupFailure::Refused) => self.apply_group(&ops, Isolation::Savepoints),
            other => other,
        };
        if let Ok(results) = &applied {
            self.watch_committed(&ops, results, changes_before);
        }
        let jobs = jobs.into_iter();
        match applied {
            Ok(results) => {
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                self.counters.requests.fetch_add(results.len() as u64, Ordering::Relaxed);
                metrics::counter!("fanin_store_transactions_total").increment(1);
                metrics::counter!("fanin_store_requests_total").increment(results.len() as u64);
                for (job, result) in jobs.zip(results) {
                    // The caller holds the other reference to a batch: let
                    // go of ours first, so the batch is freed on its side.
                    drop(job.op);
                    let _ = job.reply.send(result);
                }
            }
            Err(GroupFailure::Broken(doing, e)) => self.tell_all(jobs.map(|job| job.reply).collect(), doing, e),
            Err(GroupFailure::Refused) => unreachable!("with savepoints a refusal is one request's answer"),
        }
    }

    /// Tells the watch what a committed transaction applied: the batches
    /// that were not refused, and that writes succeed (when the transaction
    /// changed something: one that changed nothing, a purge with nothing
    /// expired, proves nothing about a full disk).
    fn watch_committed(&self, ops: &[&Op], results: &[Result<Outcome, StoreError>], changes_before: u64) {
        for (op, result) in ops.iter().zip(results) {
            if let (Op::Commit(encoded), Ok(Outcome::Committed(Committed::Applied))) = (op, result) {
                self.watch.committed(&encoded.batch);
            }
        }
        if self.conn.total_changes() > changes_before {
            if let Some(WriteNotice::Recovered { since, refused }) = self.watch.wrote() {
                tracing::warn!(store = %self.path.display(), %since, refused, "store writes succeed again");
            }
        }
    }

    /// BEGIN, every op, COMMIT. On an error nothing of the group is written
    /// (the transaction is rolled back).
    fn apply_group(&self, ops: &[&Op], isolation: Isolation) -> Result<Vec<Result<Outcome, StoreError>>, GroupFailure> {
        let broken = |doing, e| {
            self.rollback();
            GroupFailure::Broken(doing, e)
        };
        self.exec("BEGIN IMMEDIATE").map_err(|e| broken("begin transaction", e))?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match isolation {
                Isolation::Savepoints => self.apply_in_savepoint(op).map_err(|e| broken("write", e))?,
                Isolation::Straight => match apply(&self.conn, op) {
                    Ok(outcome) => Ok(outcome),
                    Err(Failure::Refused(_)) => {
                        self.rollback();
                        return Err(GroupFailure::Refused);
                    }
                    Err(Failure::Broken(e)) => return Err(broken("write", e)),
                },
            };
            results.push(result);
        }
        self.exec("COMMIT").map_err(|e| broken("commit", e))?;
        Ok(results)
    }

    /// `Ok(Err(_))`: this request was refused and undone alone.
    /// `Err(_)`: the transaction is broken.
    fn apply_in_savepoint(&self, op: &Op) -> Result<Result<Outcome, StoreError>, rusqlite::Error> {
        self.exec("SAVEPOINT request")?;
        match apply(&self.conn, op) {
            Ok(outcome) => {
                self.exec("RELEASE request")?;
                Ok(Ok(outcome))
            }
            Err(Failure::Refused(e)) => {
                self.exec("ROLLBACK TO request")?;
                self.exec("RELEASE request")?;
                Ok(Err(e))
            }
            Err(Failure::Broken(e)) => Err(e),
        }
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// SQLite may already have rolled back on I/O errors; only roll back
    /// what is still open.
    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(store = %self.path.display(), error = %e, "rollback failed");
            }
        }
    }

    /// Every request of a lost transaction hears `Unavailable`. Logged when
    /// writes start failing, not for every lost transaction (a full disk
    /// under load loses thousands a second; each caller hears it anyway, and
    /// `/ready` says so until a write succeeds).
    fn tell_all(&self, replies: Vec<Reply>, doing: &str, e: rusqlite::Error) {
        let message = match store_error(&self.path, doing, e) {
            StoreError::Unavailable(m) | StoreError::Invalid(m) | StoreError::Conflict(m) => m,
        };
        metrics::counter!("fanin_store_failed_transactions_total").increment(1);
        match self.watch.refused(&message, Utc::now()) {
            Some(WriteNotice::Failing { reason }) => {
                tracing::error!(
                    requests = replies.len(),
                    "store writes failing: {reason}; transactions are lost until a write succeeds"
                )
            }
            _ => tracing::debug!(requests = replies.len(), "{message}; transaction lost"),
        }
        for reply in replies {
            let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
        }
    }
}
