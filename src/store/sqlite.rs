//! The embedded SQLite store: one file in WAL mode, written by one
//! group-committing writer thread, read through a small pool of read-only
//! connections.
//!
//! Why this shape: an acknowledged event must survive a crash and a power
//! cut, so every commit is fsynced (`synchronous = FULL`); group commit
//! shares one fsync among all requests that arrived while the previous one
//! was being written, which is what keeps throughput up under load. Other
//! processes (the `fanin` CLI) may open the same file while the daemon runs;
//! SQLite's locking and a busy timeout serialise their writers with ours.
//! A process that only reads opens the store read-only
//! ([`SqliteStore::open_read_only`]): no writer, no checkpoints, no lock it
//! could wait for, so it reads while a writer elsewhere is stuck mid-commit.

mod checkpoint;
mod codec;
mod export;
mod reads;
mod schema;
mod shm;
mod writer;
mod writes;

#[cfg(test)]
pub(crate) use schema::SCHEMA_VERSION;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;

use super::*;
use crate::store::files;
use crate::store::ops::{EncodedBatch, Op, Outcome};
use checkpoint::Checkpointer;
pub use export::Export;
use reads::Readers;
pub use shm::report_sigbus;
use shm::ShmGuard;
use writer::{Counters, Job, Message, Writer};

/// How long a connection waits for another process's lock before the
/// request fails as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests waiting for the writer; callers wait (back-pressure) beyond it.
const WRITER_QUEUE: usize = 4096;

/// What the writer has committed since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Requests answered from committed transactions (refused ones included).
    pub requests: u64,
}

/// The SQLite [`Store`]. Cheap to share behind an `Arc`; dropping it lets the
/// writer finish what is queued and closes the file.
pub struct SqliteStore {
    path: PathBuf,
    /// `None` only while dropping: closing the channel stops the writer.
    queue: Option<flume::Sender<Message>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
    counters: Arc<Counters>,
    watch: Arc<StoreWatch>,
    readers: Arc<Readers>,
    /// Opened with [`SqliteStore::open_read_only`]: there is no writer.
    read_only: bool,
}

impl SqliteStore {
    /// Opens (creating it and its directories if needed) the store at `path`
    /// and starts its writer thread. A store that others may read is made
    /// owner-only (with a warning); one that cannot be written is refused.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, BUSY_TIMEOUT)
    }

    fn open_with(path: &Path, busy_timeout: Duration) -> Result<SqliteStore, StoreError> {
        files::create_store_dir(path)?;
        files::create_private_db(path)?;
        make_owner_only(path);
        files::check_store_writable(path)?;
        let guard = Arc::new(ShmGuard::new(path));
        let mut conn = schema::open_writer(path, busy_timeout)?;
        schema::migrate(&conn, path)?;
        let checkpointer = Checkpointer::start(path, busy_timeout, &mut conn, Arc::clone(&guard))?;
        let counters = Arc::new(Counters::default());
        let watch = Arc::new(StoreWatch::default());
        let (queue, inbox) = flume::bounded(WRITER_QUEUE);
        let writer =
            Writer::new(conn, path.to_path_buf(), Arc::clone(&counters), Arc::clone(&guard), Arc::clone(&watch));
        let thread =
            std::thread::Builder::new().name("fanin-store-writer".into()).spawn(move || writer.run(inbox)).map_err(
                |e| StoreError::Unavailable(format!("store {}: cannot start writer thread: {e}", path.display())),
            )?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            queue: Some(queue),
            writer: Some(thread),
            checkpointer: Some(checkpointer),
            counters,
            watch,
            readers: Arc::new(Readers::new(path.to_path_buf(), busy_timeout, Some(guard))),
            read_only: false,
        })
    }

    /// Opens the existing store at `path` for reading only: nothing is
    /// created, upgraded or written, and no write lock is ever taken, so
    /// this works beside a daemon that is stuck (stopped, or mid-commit on a
    /// slow disk). Writes answer `Invalid`. The file must be at the current
    /// schema version.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::Invalid(format!(
                "store {}: no such file; nothing was ever written to this store (is store.url right?)",
                path.display()
            )));
        }
        // A -shm that cannot be written now SQLite maps read-only and never
        // writes (reading still works); one it can write must stay so.
        let guard = ShmGuard::new(path);
        let guard = guard.check().is_ok().then(|| Arc::new(guard));
        let conn = schema::open_reader(path, BUSY_TIMEOUT)?;
        schema::check_version(&conn, path)?;
        let readers = Arc::new(Readers::new(path.to_path_buf(), BUSY_TIMEOUT, guard));
        readers.give_back(conn);
        Ok(SqliteStore {
            path: path.to_path_buf(),
            queue: None,
            writer: None,
            checkpointer: None,
            counters: Arc::new(Counters::default()),
            watch: Arc::new(StoreWatch::default()),
            readers,
            read_only: true,
        })
    }

    /// Group commit at work: how many transactions carried how many requests.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Hands `op` to the writer and waits until its transaction committed
    /// (or failed).
    async fn submit(&self, op: Op) -> Result<Outcome, StoreError> {
        self.submit_with(op, false).await
    }

    /// `patient`: the caller can wait for the writer to gather a larger
    /// group (see `Store::commit_pipelined`).
    async fn submit_with(&self, op: Op, patient: bool) -> Result<Outcome, StoreError> {
        let queue = self.queue.as_ref().ok_or_else(|| self.writer_gone())?;
        let (reply, answer) = oneshot::channel();
        queue.send_async(Message::Job(Job { op, reply, patient })).await.map_err(|_| self.writer_gone())?;
        answer.await.map_err(|_| self.writer_gone())?
    }

    fn writer_gone(&self) -> StoreError {
        if self.read_only {
            return StoreError::Invalid(format!("store {}: opened read-only, it takes no writes", self.path.display()));
        }
        StoreError::Unavailable(format!("store {}: the writer thread has stopped", self.path.display()))
    }

    async fn commit_with(&self, batch: Batch, patient: bool) -> Result<Committed, StoreError> {
        let encoded = Arc::new(EncodedBatch::new(batch));
        match self.submit_with(Op::Commit(Arc::clone(&encoded)), patient).await? {
            Outcome::Committed(committed) => Ok(committed),
            other => Err(self.unexpected("commit", other)),
        }
    }

    fn unexpected(&self, doing: &str, outcome: Outcome) -> StoreError {
        StoreError::Unavailable(format!("store {}: {doing}: the writer answered {outcome:?}", self.path.display()))
    }
}

/// Test hook: makes the writer finish what it has gathered and block;
/// returns the release.
#[cfg(test)]
pub(crate) async fn hold_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
    let (entered, entered_rx) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let hold = Message::Hold { entered, release: release_rx };
    store.queue.as_ref().expect("queue").send_async(hold).await.expect("writer alive");
    entered_rx.await.expect("writer held");
    release
}

/// Test hook: requests waiting in the writer's queue.
#[cfg(test)]
pub(crate) fn queued(store: &SqliteStore) -> usize {
    store.queue.as_ref().map_or(0, |queue| queue.len())
}

/// Tightens a store that others may read or write, saying so once.
fn make_owner_only(path: &Path) {
    let (tightened, failed) = files::tighten(path);
    if !tightened.is_empty() {
        let list: Vec<String> = tightened.iter().map(|f| f.display().to_string()).collect();
        tracing::warn!(
            store = %path.display(),
            files = %list.join(", "),
            "the store's files were open to group or others (they hold token hashes and pairing codes); made them \
             owner-only"
        );
    }
    if !failed.is_empty() {
        tracing::warn!(store = %path.display(), problems = %failed.join("; "), "could not make the store's files owner-only");
    }
}

impl Drop for SqliteStore {
    /// Closes the queue and waits for the writer to finish what was queued,
    /// so the file is closed cleanly when the store is gone.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.writer.take() {
            if thread.join().is_err() {
                tracing::error!(store = %self.path.display(), "store writer thread panicked");
            }
        }
        // The writer's connection is closed now, and with it what signals
        // the checkpoint thread: it stops.
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.join(&self.path);
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        self.commit_with(batch, false).await
    }

    async fn commit_pipelined(&self, batch: Batch) -> Result<Committed, StoreError> {
        self.commit_with(batch, true).await
    }

    async fn idempotency_response(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.readers.run("read idempotency key", move |conn| reads::idempotency_response(conn, &scope, &key, now)).await
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        match self.submit(Op::PurgeIdempotency { now }).await? {
            Outcome::Count(purged) => Ok(purged),
            other => Err(self.unexpected("purge idempotency keys", other)),
        }
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let run_id = run_id.to_owned();
        self.readers.run("read run", move |conn| reads::get_run(conn, &run_id)).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let query = query.clone();
        self.readers.run("list runs", move |conn| reads::list_runs(conn, &query)).await
    }

    async fn count_runs(&self, query: &RunQuery) -> Result<u64, StoreError> {
        let query = query.clone();
        self.readers.run("count runs", move |conn| reads::count_runs(conn, &query)).await
    }

    async fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        self.readers.run("count runs per status", reads::run_counts).await
    }

    async fn runs_per_minute(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, u64)>, StoreError> {
        self.readers.run("count runs per minute", move |conn| reads::runs_per_minute(conn, since)).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let query = query.clone();
        self.readers.run("read audit", move |conn| reads::audit(conn, &query)).await
    }

    async fn sop_loads(&self) -> Result<Vec<SopLoad>, StoreError> {
        self.readers.run("read SOP loads", reads::sop_loads).await
    }

    async fn add_pairing_code(
        &self,
        code_mac: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let op = Op::AddPairingCode { hash: code_mac.to_owned(), created_at, expires_at };
        match self.submit(op).await? {
            Outcome::Done => Ok(()),
            other => Err(self.unexpected("add pairing code", other)),
        }
    }

    async fn pairing_lookup(&self, code_mac: &str, now: DateTime<Utc>) -> Result<PairingLookup, StoreError> {
        let mac = code_mac.to_owned();
        self.readers.run("look up a pairing code", move |conn| reads::pairing_lookup(conn, &mac, now)).await
    }

    async fn redeem_pairing_code(
        &self,
        code_mac: &str,
        now: DateTime<Utc>,
        token: &TokenRecord,
    ) -> Result<bool, StoreError> {
        let op = Op::RedeemPairingCode { hash: code_mac.to_owned(), now, token: token.clone() };
        match self.submit(op).await? {
            Outcome::Redeemed(redeemed) => Ok(redeemed),
            other => Err(self.unexpected("redeem pairing code", other)),
        }
    }

    async fn charge_pairing_guess(&self, now: DateTime<Utc>, budget: u32) -> Result<usize, StoreError> {
        match self.submit(Op::ChargePairingGuess { now, budget }).await? {
            Outcome::Count(retired) => Ok(retired),
            other => Err(self.unexpected("charge a wrong pairing code", other)),
        }
    }

    async fn find_token(&self, prefix: &str) -> Result<Option<TokenRecord>, StoreError> {
        let prefix = prefix.to_owned();
        self.readers.run_point("find token", move |conn| reads::find_token(conn, &prefix)).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.readers.run("list tokens", reads::list_tokens).await
    }

    async fn revoke_tokens(&self, prefix: &str, at: DateTime<Utc>) -> Result<usize, StoreError> {
        let op = Op::RevokeTokens { prefix: prefix.to_owned(), at };
        match self.submit(op).await? {
            Outcome::Count(revoked) => Ok(revoked),
            other => Err(self.unexpected("revoke tokens", other)),
        }
    }

    async fn cron_last_check(&self, key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = key.to_owned();
        self.readers.run("read cron state", move |conn| reads::cron_last_check(conn, &key)).await
    }

    async fn cursor(&self, source: &str) -> Result<Option<Cursor>, StoreError> {
        let source = source.to_owned();
        self.readers.run("read a source cursor", move |conn| reads::cursor(conn, &source)).await
    }

    async fn file_states(&self, source: &str) -> Result<Vec<(String, FileState)>, StoreError> {
        let source = source.to_owned();
        self.readers.run("read file states", move |conn| reads::file_states(conn, &source)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.read_only && self.queue.as_ref().is_none_or(|queue| queue.is_disconnected()) {
            return Err(self.writer_gone());
        }
        self.readers.run("ping", reads::ping).await
    }

    async fn hold_lease(&self, duty: &str, _owner: &str, _term: std::time::Duration) -> Result<DutyLease, StoreError> {
        Err(no_leases(duty))
    }

    async fn hold_admission(&self, _sops: &[String]) -> Result<AdmissionHold, StoreError> {
        Err(StoreError::Invalid("a SQLite store takes one daemon, whose admission is its own".into()))
    }

    async fn release_lease(&self, duty: &str, _owner: &str) -> Result<(), StoreError> {
        Err(no_leases(duty))
    }

    async fn leases(&self) -> Result<Vec<DutyLease>, StoreError> {
        Ok(Vec::new())
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let run_id = run_id.to_owned();
        self.readers.run("read steps", move |conn| reads::steps(conn, &run_id)).await
    }

    async fn next_leasable_step(&self, now: DateTime<Utc>) -> Result<Option<StepRecord>, StoreError> {
        self.readers.run("find a leasable step", move |conn| reads::next_leasable_step(conn, now)).await
    }

    async fn agent_steps(&self, limit: usize) -> Result<Vec<StepRecord>, StoreError> {
        self.readers.run("list agent steps", move |conn| reads::agent_steps(conn, limit)).await
    }

    async fn outbox_due(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, StoreError> {
        let destination = destination.to_owned();
        self.readers.run("read due outbox entries", move |conn| reads::outbox_due(conn, &destination, now, limit)).await
    }

    async fn outbox_next_due(&self, destination: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let destination = destination.to_owned();
        self.readers.run("read next outbox due time", move |conn| reads::outbox_next_due(conn, &destination)).await
    }

    async fn outbox_list(&self, status: Option<OutboxStatus>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.readers.run("list outbox", move |conn| reads::outbox_list(conn, status, limit)).await
    }

    async fn count_outbox(&self, status: Option<OutboxStatus>) -> Result<u64, StoreError> {
        self.readers.run("count outbox", move |conn| reads::count_outbox(conn, status)).await
    }

    async fn outbox_get(&self, id: &str) -> Result<Option<OutboxRecord>, StoreError> {
        let id = id.to_owned();
        self.readers.run("read outbox entry", move |conn| reads::outbox_get(conn, &id)).await
    }

    async fn outbox_pending_of_run(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let run_id = run_id.to_owned();
        self.readers
            .run("read a run's pending outbox entries", move |conn| reads::outbox_pending_of_run(conn, &run_id))
            .await
    }

    async fn tallies(&self) -> Result<Tallies, StoreError> {
        self.readers.run("count pending entries and approvals", reads::tallies).await
    }

    fn watch(&self) -> &StoreWatch {
        &self.watch
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

/// A SQLite file takes one daemon (its lock file), so nothing is handed
/// between replicas: asking for a lease is a mistake of the caller's.
fn no_leases(duty: &str) -> StoreError {
    StoreError::Invalid(format!("lease on {duty}: a SQLite store has no leases (replicas need a PostgreSQL store)"))
}
