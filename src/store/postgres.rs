//! The PostgreSQL store: the same [`Store`] as SQLite's, in a database that
//! several fanin processes share, replicas among them (docs/cluster.md).
//!
//! Why this shape: the semantics are SQLite's, write for write (the same
//! tables, compare-and-sets and refusals; see `sqlite/writes.rs`), so a
//! deployment moves between the two without a caller noticing. One task
//! owns the write connection and group-commits everything queued, a request
//! per SAVEPOINT only when one is refused (`writer`); reads go over a few
//! pooled connections beside it (`reads`). The schema is created or
//! upgraded at open under an advisory lock (`schema`); `connect` reads the
//! URL and its `sslmode`. What only replicas need lives here too: the
//! leases of singleton duties (`leases`), the wake-ups replicas send each
//! other when work appears (`listen`), and [`DaemonLock`], which admits one
//! daemon, or any number of replicas with distinct node ids, never both.

mod admission;
mod connect;
mod daemon_lock;
mod import;
mod leases;
mod listen;
mod reads;
mod rows;
mod schema;
mod writer;
mod writes;

#[cfg(test)]
pub(crate) use schema::SCHEMA_VERSION;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

pub use super::sqlite::WriterStats;
use super::*;
use crate::store::ops::{EncodedBatch, Op, Outcome};
use admission::Holds;
use connect::Connector;
pub use connect::{display_name, Verify};
pub use daemon_lock::DaemonLock;
pub use import::{Import, TableWriter};
use listen::{Listener, Notices};
use reads::Readers;
use writer::{Counters, Job, Message, Writer};

/// Requests waiting for the writer; callers wait (back-pressure) beyond it.
const WRITER_QUEUE: usize = 4096;

/// A connection and the statements prepared on it: each SQL text is parsed
/// once per connection, then only bound and run.
pub(crate) struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn { client, statements: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(sql).cloned()
    }

    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cached(sql) {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_one(&statement, params).await
    }

    /// Statements without parameters or results (BEGIN, SAVEPOINT, …).
    async fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }
}

/// Names the store and what was being done. The database refusing what
/// fanin sent, or the store's setup, is `Invalid`; everything else (a lost
/// connection, a server shutting down, a full disk there) is `Unavailable`.
fn pg_error(name: &str, doing: &str, e: tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => std::error::Error::source(&e).map_or_else(|| e.to_string(), |cause| format!("{e}: {cause}")),
    };
    let message = format!("store {name}: {doing}: {detail}");
    match e.code().map(|code| code.code()) {
        // Refused SQL or values, a schema the search_path does not name,
        // a missing privilege: what the URL or the database's setup must fix.
        Some(code) if ["42", "22", "3F"].iter().any(|class| code.starts_with(class)) => StoreError::Invalid(message),
        _ => StoreError::Unavailable(message),
    }
}

/// The PostgreSQL [`Store`]. Dropping it lets the writer finish what is
/// queued.
pub struct PostgresStore {
    name: String,
    queue: Option<flume::Sender<Message>>,
    counters: Arc<Counters>,
    watch: Arc<StoreWatch>,
    readers: Arc<Readers>,
    holds: Holds,
    read_only: bool,
    listener: Listener,
}

impl PostgresStore {
    /// Connects, creates or upgrades the schema, and starts the writer.
    /// `base_dir` resolves a relative `sslrootcert`.
    pub async fn open(url: &str, base_dir: &Path) -> Result<PostgresStore, StoreError> {
        let connector = Connector::new(url, base_dir)?;
        let name = connector.name.clone();
        let mut client = connector.connect().await.map_err(|e| pg_error(&name, "connect", e))?;
        schema::migrate(&mut client, &name).await?;
        let channel = listen::channel_of(&client, &name).await?;
        let origin = crate::ids::fresh();
        let counters = Arc::new(Counters::default());
        let watch = Arc::new(StoreWatch::default());
        let (queue, inbox) = flume::bounded(WRITER_QUEUE);
        let notices = Notices::new(&channel, &origin);
        let writer =
            Writer::new(connector.clone(), Conn::new(client), Arc::clone(&counters), Arc::clone(&watch), notices);
        tokio::spawn(writer.run(inbox));
        Ok(PostgresStore {
            name,
            queue: Some(queue),
            counters,
            watch,
            readers: Arc::new(Readers::new(connector.clone())),
            holds: Holds::new(connector.clone()),
            read_only: false,
            listener: Listener::new(connector, channel, origin),
        })
    }

    /// Connects to a store that must exist at this fanin's schema version;
    /// nothing is created, upgraded or written. Writes answer `Invalid`.
    pub async fn open_read_only(url: &str, base_dir: &Path) -> Result<PostgresStore, StoreError> {
        let connector = Connector::new(url, base_dir)?;
        let name = connector.name.clone();
        let client = connector.connect().await.map_err(|e| pg_error(&name, "connect", e))?;
        schema::check_version(&client, &name).await?;
        let channel = listen::channel_of(&client, &name).await?;
        let readers = Arc::new(Readers::new(connector.clone()));
        readers.give_back(Conn::new(client));
        Ok(PostgresStore {
            name,
            queue: None,
            counters: Arc::new(Counters::default()),
            watch: Arc::new(StoreWatch::default()),
            readers,
            holds: Holds::new(connector.clone()),
            read_only: true,
            listener: Listener::new(connector, channel, crate::ids::fresh()),
        })
    }

    /// Group commit at work: how many transactions carried how many requests.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    async fn submit(&self, op: Op) -> Result<Outcome, StoreError> {
        self.submit_with(op, false).await
    }

    async fn submit_with(&self, op: Op, patient: bool) -> Result<Outcome, StoreError> {
        let queue = self.queue.as_ref().ok_or_else(|| self.writer_gone())?;
        let (reply, answer) = oneshot::channel();
        queue.send_async(Message::Job(Job { op, reply, patient })).await.map_err(|_| self.writer_gone())?;
        answer.await.map_err(|_| self.writer_gone())?
    }

    fn writer_gone(&self) -> StoreError {
        if self.read_only {
            return StoreError::Invalid(format!("store {}: opened read-only, it takes no writes", self.name));
        }
        StoreError::Unavailable(format!("store {}: the writer has stopped", self.name))
    }

    async fn commit_with(&self, batch: Batch, patient: bool) -> Result<Committed, StoreError> {
        let encoded = Arc::new(EncodedBatch::new(batch));
        match self.submit_with(Op::Commit(Arc::clone(&encoded)), patient).await? {
            Outcome::Committed(committed) => Ok(committed),
            other => Err(self.unexpected("commit", other)),
        }
    }

    fn unexpected(&self, doing: &str, outcome: Outcome) -> StoreError {
        StoreError::Unavailable(format!("store {}: {doing}: the writer answered {outcome:?}", self.name))
    }

    /// Test hook: makes the writer finish what it has and wait; returns
    /// the release.
    #[cfg(test)]
    pub(crate) async fn hold_writer(&self) -> oneshot::Sender<()> {
        let (entered, entered_rx) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let hold = Message::Hold { entered, release: release_rx };
        self.queue.as_ref().expect("queue").send_async(hold).await.expect("writer alive");
        entered_rx.await.expect("writer held");
        release
    }

    /// Test hook: the server process listening for this store's
    /// wake-ups, once one listens.
    #[cfg(test)]
    pub(crate) fn listener_pid(&self) -> Option<i32> {
        self.listener.pid()
    }

    /// Test hook: requests waiting in the writer's queue.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, |queue| queue.len())
    }
}

/// Runs one read on a pooled connection and names what it was doing.
macro_rules! read {
    ($store:expr, $doing:expr, |$conn:ident| $read:expr) => {{
        let $conn = $store.readers.take().await?;
        let result = $read.await;
        $store.readers.finish($conn, $doing, result)
    }};
}

#[async_trait]
impl Store for PostgresStore {
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
        read!(self, "read idempotency key", |conn| reads::idempotency_response(&conn, scope, key, now))
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        match self.submit(Op::PurgeIdempotency { now }).await? {
            Outcome::Count(purged) => Ok(purged),
            other => Err(self.unexpected("purge idempotency keys", other)),
        }
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        read!(self, "read run", |conn| reads::get_run(&conn, run_id))
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        read!(self, "list runs", |conn| reads::list_runs(&conn, query))
    }

    async fn count_runs(&self, query: &RunQuery) -> Result<u64, StoreError> {
        read!(self, "count runs", |conn| reads::count_runs(&conn, query))
    }

    async fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        read!(self, "count runs per status", |conn| reads::run_counts(&conn))
    }

    async fn runs_per_minute(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, u64)>, StoreError> {
        read!(self, "count runs per minute", |conn| reads::runs_per_minute(&conn, since))
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        read!(self, "read audit", |conn| reads::audit(&conn, query))
    }

    async fn sop_loads(&self) -> Result<Vec<SopLoad>, StoreError> {
        read!(self, "read SOP loads", |conn| reads::sop_loads(&conn))
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
        read!(self, "look up a pairing code", |conn| reads::pairing_lookup(&conn, code_mac, now))
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
        read!(self, "find token", |conn| reads::find_token(&conn, prefix))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        read!(self, "list tokens", |conn| reads::list_tokens(&conn))
    }

    async fn revoke_tokens(&self, prefix: &str, at: DateTime<Utc>) -> Result<usize, StoreError> {
        match self.submit(Op::RevokeTokens { prefix: prefix.to_owned(), at }).await? {
            Outcome::Count(revoked) => Ok(revoked),
            other => Err(self.unexpected("revoke tokens", other)),
        }
    }

    async fn cron_last_check(&self, key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        read!(self, "read cron state", |conn| reads::cron_last_check(&conn, key))
    }

    async fn cursor(&self, source: &str) -> Result<Option<Cursor>, StoreError> {
        read!(self, "read a source cursor", |conn| reads::cursor(&conn, source))
    }

    async fn file_states(&self, source: &str) -> Result<Vec<(String, FileState)>, StoreError> {
        read!(self, "read file states", |conn| reads::file_states(&conn, source))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.read_only && self.queue.as_ref().is_none_or(|queue| queue.is_disconnected()) {
            return Err(self.writer_gone());
        }
        read!(self, "ping", |conn| reads::ping(&conn))
    }

    async fn hold_lease(&self, duty: &str, owner: &str, term: std::time::Duration) -> Result<DutyLease, StoreError> {
        if self.read_only {
            return Err(self.writer_gone());
        }
        read!(self, "hold a lease", |conn| leases::hold(&conn, duty, owner, term))
    }

    async fn hold_admission(&self, sops: &[String]) -> Result<AdmissionHold, StoreError> {
        if self.read_only {
            return Err(self.writer_gone());
        }
        self.holds.hold(sops).await
    }

    async fn release_lease(&self, duty: &str, owner: &str) -> Result<(), StoreError> {
        if self.read_only {
            return Err(self.writer_gone());
        }
        read!(self, "release a lease", |conn| leases::release(&conn, duty, owner))
    }

    async fn leases(&self) -> Result<Vec<DutyLease>, StoreError> {
        read!(self, "list leases", |conn| leases::list(&conn))
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        read!(self, "read steps", |conn| reads::steps(&conn, run_id))
    }

    async fn next_leasable_step(&self, now: DateTime<Utc>) -> Result<Option<StepRecord>, StoreError> {
        read!(self, "find a leasable step", |conn| reads::next_leasable_step(&conn, now))
    }

    async fn agent_steps(&self, limit: usize) -> Result<Vec<StepRecord>, StoreError> {
        read!(self, "list agent steps", |conn| reads::agent_steps(&conn, limit))
    }

    async fn outbox_due(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, StoreError> {
        read!(self, "read due outbox entries", |conn| reads::outbox_due(&conn, destination, now, limit))
    }

    async fn outbox_next_due(&self, destination: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        read!(self, "read next outbox due time", |conn| reads::outbox_next_due(&conn, destination))
    }

    async fn outbox_list(&self, status: Option<OutboxStatus>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        read!(self, "list outbox", |conn| reads::outbox_list(&conn, status, limit))
    }

    async fn count_outbox(&self, status: Option<OutboxStatus>) -> Result<u64, StoreError> {
        read!(self, "count outbox", |conn| reads::count_outbox(&conn, status))
    }

    async fn outbox_get(&self, id: &str) -> Result<Option<OutboxRecord>, StoreError> {
        read!(self, "read outbox entry", |conn| reads::outbox_get(&conn, id))
    }

    async fn outbox_pending_of_run(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        read!(self, "read a run's pending outbox entries", |conn| reads::outbox_pending_of_run(&conn, run_id))
    }

    async fn tallies(&self) -> Result<Tallies, StoreError> {
        read!(self, "count pending entries and approvals", |conn| reads::tallies(&conn))
    }

    fn watch(&self) -> &StoreWatch {
        &self.watch
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        Some(self.listener.subscribe())
    }
}
