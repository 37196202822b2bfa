//! The writer: one task owns the store's write connection and commits
//! requests in groups, as SQLite's writer thread does (see
//! `store/sqlite/writer.rs` for why): it takes one request, everything
//! already queued behind it, lingers briefly for more when every request of
//! the group can wait, and commits all of it in one transaction. On
//! PostgreSQL a commit is a round trip and a WAL flush on the server; shared
//! by the group, it costs each request a fraction.
//!
//! A refused request is undone alone: the group is applied straight first,
//! every request's statements pipelined on the connection, and only when a
//! request is refused applied again, one request at a time, each in its own
//! SAVEPOINT. Nobody is answered before COMMIT returned. A broken
//! connection fails the group (everybody hears `Unavailable`) and is
//! replaced before the next one. The COMMIT carries the group's
//! notifications to the other processes on the store (`listen`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connect::Connector;
use super::listen::Notices;
use super::writes::{apply, Failure};
use super::{pg_error, Conn};
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
    /// `entered`, then waits for `release`. Lets tests queue requests behind
    /// a busy writer without timing anything.
    #[cfg(test)]
    Hold {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
}

/// Counters of committed transactions and the requests they carried.
#[derive(Default)]
pub(super) struct Counters {
    pub transactions: AtomicU64,
    pub requests: AtomicU64,
}

#[derive(Clone, Copy)]
enum Isolation {
    Straight,
    Savepoints,
}

enum GroupFailure {
    Refused,
    Broken(&'static str, tokio_postgres::Error),
}

type Results = Vec<Result<Outcome, StoreError>>;

pub(super) struct Writer {
    connector: Connector,
    /// `None` after the connection broke, until the next group reconnects.
    conn: Option<Conn>,
    counters: Arc<Counters>,
    watch: Arc<StoreWatch>,
    notices: Notices,
}

impl Writer {
    pub fn new(
        connector: Connector,
        conn: Conn,
        counters: Arc<Counters>,
        watch: Arc<StoreWatch>,
        notices: Notices,
    ) -> Writer {
        Writer { connector, conn: Some(conn), counters, watch, notices }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub async fn run(mut self, queue: flume::Receiver<Message>) {
        while let Ok(first) = queue.recv_async().await {
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
                            self.transact(std::mem::take(&mut jobs)).await;
                            let _ = entered.send(());
                            let _ = release.await;
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
                match tokio::time::timeout_at(deadline, queue.recv_async()).await {
                    Ok(Ok(message)) => next = Some(message),
                    _ => break,
                }
            }
            self.transact(jobs).await;
        }
    }

    /// The write connection, connecting again if the last one broke.
    /// Borrows only what it needs, so the rest of the writer stays at hand.
    async fn connection<'a>(conn: &'a mut Option<Conn>, connector: &Connector) -> Result<&'a Conn, StoreError> {
        if conn.as_ref().is_some_and(|conn| conn.client.is_closed()) {
            *conn = None;
        }
        if conn.is_none() {
            let client = connector.connect().await.map_err(|e| pg_error(&connector.name, "connect to write", e))?;
            *conn = Some(Conn::new(client));
        }
        Ok(conn.as_ref().expect("connected above"))
    }

    /// One transaction for all `jobs`; answers each only after COMMIT.
    async fn transact(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let conn = match Writer::connection(&mut self.conn, &self.connector).await {
            Ok(conn) => conn,
            Err(e) => return self.tell_all(jobs, e),
        };
        let ops: Vec<&Op> = jobs.iter().map(|job| &job.op).collect();
        let notices = &self.notices;
        let applied = match apply_group(conn, &ops, Isolation::Straight, notices).await {
            Err(GroupFailure::Refused) => apply_group(conn, &ops, Isolation::Savepoints, notices).await,
            other => other,
        };
        match applied {
            Ok(results) => {
                self.watch_committed(&ops, &results);
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                self.counters.requests.fetch_add(results.len() as u64, Ordering::Relaxed);
                metrics::counter!("fanin_store_transactions_total").increment(1);
                metrics::counter!("fanin_store_requests_total").increment(results.len() as u64);
                drop(ops);
                for (job, result) in jobs.into_iter().zip(results) {
                    drop(job.op);
                    let _ = job.reply.send(result);
                }
            }
            Err(GroupFailure::Broken(doing, e)) => {
                let error = pg_error(&self.connector.name, doing, e);
                drop(ops);
                self.tell_all(jobs, error)
            }
            Err(GroupFailure::Refused) => unreachable!("with savepoints a refusal is one request's answer"),
        }
    }

    /// Tells the watch what a committed transaction applied, and that
    /// writes succeed when it changed something.
    fn watch_committed(&self, ops: &[&Op], results: &Results) {
        for (op, result) in ops.iter().zip(results) {
            if let (Op::Commit(encoded), Ok(Outcome::Committed(Committed::Applied))) = (op, result) {
                self.watch.committed(&encoded.batch);
            }
        }
        let changed = results.iter().any(|result| match result {
            Ok(Outcome::Committed(Committed::Applied) | Outcome::Done | Outcome::Redeemed(true)) => true,
            Ok(Outcome::Count(n)) => *n > 0,
            _ => false,
        });
        if changed {
            if let Some(WriteNotice::Recovered { since, refused }) = self.watch.wrote() {
                tracing::warn!(store = %self.connector.name, %since, refused, "store writes succeed again");
            }
        }
    }

    /// Every request of a lost transaction hears `Unavailable`; logged when
    /// writes start failing, not for every lost transaction.
    fn tell_all(&self, jobs: Vec<Job>, error: StoreError) {
        let message = match error {
            StoreError::Unavailable(m) | StoreError::Invalid(m) | StoreError::Conflict(m) => m,
        };
        metrics::counter!("fanin_store_failed_transactions_total").increment(1);
        match self.watch.refused(&message, Utc::now()) {
            Some(WriteNotice::Failing { reason }) => tracing::error!(
                requests = jobs.len(),
                "store writes failing: {reason}; transactions are lost until a write succeeds"
            ),
            _ => tracing::debug!(requests = jobs.len(), "{message}; transaction lost"),
        }
        for job in jobs {
            let _ = job.reply.send(Err(StoreError::Unavailable(message.clone())));
        }
    }
}

/// BEGIN, every op, COMMIT (with the notifications of what was applied).
/// On an error nothing of the group is written, or sent.
async fn apply_group(
    conn: &Conn,
    ops: &[&Op],
    isolation: Isolation,
    notices: &Notices,
) -> Result<Results, GroupFailure> {
    let broken = |doing, e| async move {
        rollback(conn).await;
        GroupFailure::Broken(doing, e)
    };
    if let Err(e) = conn.batch("BEGIN").await {
        return Err(broken("begin transaction", e).await);
    }
    let mut results = Vec::with_capacity(ops.len());
    match isolation {
        Isolation::Savepoints => {
            for op in ops {
                match apply_in_savepoint(conn, op).await {
                    Ok(result) => results.push(result),
                    Err(e) => return Err(broken("write", e).await),
                }
            }
        }
        // Every request at once: the connection pipelines their statements,
        // so a group costs a few round trips, not a few per request. The
        // server runs them in turn in the one transaction; a refusal (or a
        // statement failing after another's error aborted the transaction)
        // sends the group back to be applied one savepoint at a time.
        Isolation::Straight => {
            let mut refused = false;
            for outcome in futures_util::future::join_all(ops.iter().map(|op| apply(conn, op))).await {
                match outcome {
                    Ok(outcome) => results.push(Ok(outcome)),
                    Err(Failure::Refused(_)) => refused = true,
                    Err(Failure::Broken(e)) if aborted(&e) => refused = true,
                    Err(Failure::Broken(e)) => return Err(broken("write", e).await),
                }
            }
            if refused {
                rollback(conn).await;
                return Err(GroupFailure::Refused);
            }
        }
    }
    if let Err(e) = conn.batch(notices.commit(ops, &results)).await {
        return Err(broken("commit", e).await);
    }
    Ok(results)
}

/// `Ok(Err(_))`: this request was refused and undone alone.
async fn apply_in_savepoint(conn: &Conn, op: &Op) -> Result<Result<Outcome, StoreError>, tokio_postgres::Error> {
    conn.batch("SAVEPOINT request").await?;
    match apply(conn, op).await {
        Ok(outcome) => {
            conn.batch("RELEASE request").await?;
            Ok(Ok(outcome))
        }
        Err(Failure::Refused(e)) => {
            conn.batch("ROLLBACK TO request; RELEASE request").await?;
            Ok(Err(e))
        }
        Err(Failure::Broken(e)) => Err(e),
    }
}

/// A statement refused because an earlier one of the transaction failed.
fn aborted(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
}

/// A failed ROLLBACK leaves a connection that is broken anyway: the next
/// group finds it closed, or its BEGIN fails and says why.
async fn rollback(conn: &Conn) {
    if let Err(e) = conn.batch("ROLLBACK").await {
        tracing::debug!(error = %e, "rollback failed");
    }
}
