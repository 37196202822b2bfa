//! The store: the only place fanin's state lives (ARCHITECTURE.md).
//!
//! Everything durable goes through [`Store::commit`], one atomic [`Batch`] at a
//! time, so that "acknowledged" always means "committed": a run and its
//! run-start audit record, the idempotency key that guards them, a deferred
//! trigger, a status change and its audit record are never half-written. The
//! trait is async and object-safe so an embedded SQLite file (the default) and
//! a shared PostgreSQL (several replicas) sit behind the same interface.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Source;
use fanin_core::runs::RunStatus;

pub mod codec;
pub mod copy;
pub mod faults;
pub mod files;
pub mod ops;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;
pub mod watch;

pub use fanin_core::admission::SopLoad;
pub use fanin_core::records::*;
pub use fanin_core::runs::RunRecord;
pub use watch::{StoreWatch, Tallies, WriteNotice, WriteState};

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take or serve data now (disk full, file locked,
    /// database down). Callers answer 503 / do not acknowledge.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set in a batch did not hold; nothing of the batch was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store URL or its contents are not usable.
    #[error("{0}")]
    Invalid(String),
}

/// Filters for listing runs (newest first) and counting them; every filter
/// set must hold.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub sop: Option<String>,
    pub status: Option<RunStatus>,
    pub source: Option<Source>,
    /// Only runs with `started_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// Only runs with `started_at < until`.
    pub until: Option<DateTime<Utc>>,
    /// At most this many; 0 means no limit.
    pub limit: usize,
    /// Skips this many of the matching runs, newest first, before `limit`
    /// counts (paging); 0 skips none.
    pub offset: usize,
}

/// Filters for reading the audit trail; oldest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub run_id: Option<String>,
    /// Only records with `seq > after_seq` (for `audit --follow`).
    pub after_seq: Option<i64>,
    /// At most this many; 0 means no limit.
    pub limit: usize,
}

/// What a presented pairing code (by its MAC) finds in the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairingLookup {
    /// A live code (unused, unexpired, not retired) has this MAC.
    pub matches: bool,
    /// How many codes are live and were issued at or before the time asked
    /// about: those a wrong guess at that time is charged to.
    pub live: u32,
}

/// A bearer token as stored: never the token itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The first 8 hex digits after `fanin_`: how operators name a token.
    pub prefix: String,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    /// The identity rate limits and audit records use (`token:<prefix>`).
    pub subject: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A singleton duty's lease as the store holds it (docs/cluster.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DutyLease {
    /// `mqtt`, `email:ops`, `peripheral:uno`, `outbox:executor`, …
    pub duty: String,
    /// The holder's node id (empty: nobody holds it).
    pub owner: String,
    /// Since when this owner has held it without a break.
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// What is left of it by the store's clock (zero once it has lapsed),
    /// which a replica that waits for it sleeps by: its own clock may not
    /// agree with the store's.
    pub left: std::time::Duration,
}

/// Admission of some SOPs held for one replica across all of them
/// ([`Store::hold_admission`]): their loads as committed when the hold was
/// taken, and the backlog's size over every SOP. Another replica asking for
/// any of these SOPs waits until [`AdmissionHold::release`], which comes
/// once the writes decided under the hold are committed; a hold dropped
/// unreleased ends with its connection.
pub struct AdmissionHold {
    pub loads: Vec<SopLoad>,
    pub deferred_total: usize,
    release: Option<Box<dyn HoldRelease>>,
}

/// How a store ends an [`AdmissionHold`].
#[async_trait]
pub trait HoldRelease: Send + Sync {
    async fn release(self: Box<Self>);
}

impl AdmissionHold {
    pub fn new(loads: Vec<SopLoad>, deferred_total: usize, release: Box<dyn HoldRelease>) -> AdmissionHold {
        AdmissionHold { loads, deferred_total, release: Some(release) }
    }

    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            release.release().await;
        }
    }
}

impl std::fmt::Debug for AdmissionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionHold")
            .field("loads", &self.loads)
            .field("deferred_total", &self.deferred_total)
            .finish()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a batch atomically. Concurrent callers share commits (group
    /// commit); each call returns only after its batch is durable.
    async fn commit(&self, batch: Batch) -> Result<Committed, StoreError>;

    /// [`commit`](Store::commit) for a caller that keeps many commits in
    /// flight (the MQTT and AMQP sources, within the broker's window; the
    /// filesystem source, in a burst of changes) and so can wait
    /// a moment longer for each answer. A store may hold such a commit
    /// briefly to share it with more (fewer fsyncs and pages per request);
    /// a caller someone is waiting on (an HTTP request) uses `commit`.
    async fn commit_pipelined(&self, batch: Batch) -> Result<Committed, StoreError> {
        self.commit(batch).await
    }

    /// The stored response of a live (unexpired) idempotency key.
    async fn idempotency_response(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, StoreError>;

    /// Deletes expired idempotency keys; returns how many.
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// The runs matching every filter of `query`, newest first by
    /// `started_at` (runs started in the same microsecond: the one written
    /// later first), `offset` of them skipped, then at most `limit`.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// How many runs match every filter of `query`; its `limit` and
    /// `offset` are ignored.
    async fn count_runs(&self, query: &RunQuery) -> Result<u64, StoreError>;

    /// How many runs have each status: every status of [`RunStatus::ALL`],
    /// in that order, zeros included. Rows with a status fanin does not
    /// know are not counted.
    async fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError>;

    /// Runs with `started_at >= since`, counted per UTC minute: each minute
    /// that has runs as (the minute's first instant, how many), oldest
    /// first; minutes without runs are left out.
    async fn runs_per_minute(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, u64)>, StoreError>;

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Per-SOP load for every SOP that has runs.
    async fn sop_loads(&self) -> Result<Vec<SopLoad>, StoreError>;

    /// Stores the MAC of a one-time pairing code (a code drawn again is a
    /// fresh one, with its whole budget). Codes expired by `created_at` are
    /// removed.
    async fn add_pairing_code(
        &self,
        code_mac: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Whether a live code has this MAC at `now`, and how many are live.
    async fn pairing_lookup(&self, code_mac: &str, now: DateTime<Utc>) -> Result<PairingLookup, StoreError>;
    /// Atomically uses up a live pairing code and stores the token it buys.
    /// False (and nothing written) when no live code has that MAC;
    /// `Conflict` (code still unused) when the token's prefix is taken.
    async fn redeem_pairing_code(
        &self,
        code_mac: &str,
        now: DateTime<Utc>,
        token: &TokenRecord,
    ) -> Result<bool, StoreError>;
    /// Charges one wrong guess to every code live at `now` and issued at or
    /// before it; those that have absorbed `budget` wrong guesses are
    /// retired, each with a `pairing_code_retired` audit record, in the same
    /// transaction. Returns how many were retired.
    async fn charge_pairing_guess(&self, now: DateTime<Utc>, budget: u32) -> Result<usize, StoreError>;
    async fn find_token(&self, prefix: &str) -> Result<Option<TokenRecord>, StoreError>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes every live token whose prefix starts with `prefix`; returns how
    /// many. An empty prefix is refused (`Invalid`), never "all".
    async fn revoke_tokens(&self, prefix: &str, at: DateTime<Utc>) -> Result<usize, StoreError>;

    async fn cron_last_check(&self, key: &str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Where the source instance (`email:ops`) has read to; moved only by
    /// `Write::SetCursor`, in the commit that dispatches what it read.
    async fn cursor(&self, source: &str) -> Result<Option<Cursor>, StoreError>;

    /// Every file the filesystem source instance `source` has recorded, by
    /// path.
    async fn file_states(&self, source: &str) -> Result<Vec<(String, FileState)>, StoreError>;

    /// Cheap liveness probe for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes the lease on singleton duty `duty` for the replica `owner`
    /// for `term` by the store's clock, or renews it when `owner` holds
    /// it; returns the lease as it stands after the attempt (held by
    /// `owner`, or by whom and for how long yet). Only a store replicas
    /// share has leases: the others answer `Invalid`.
    async fn hold_lease(&self, duty: &str, owner: &str, term: std::time::Duration) -> Result<DutyLease, StoreError>;

    /// Holds admission of `sops` across every replica on the store until
    /// the hold is released, and reads their loads under it, so replicas
    /// count one SOP's slots, cooldown and backlog as one daemon would. Only
    /// a store replicas share holds admission: the others answer `Invalid`.
    async fn hold_admission(&self, sops: &[String]) -> Result<AdmissionHold, StoreError>;

    /// Gives up `owner`'s lease on `duty` (nothing when it is not theirs),
    /// so a replica that stops hands its duties on at once.
    async fn release_lease(&self, duty: &str, owner: &str) -> Result<(), StoreError>;

    /// Every lease, by duty (none in a store without leases).
    async fn leases(&self) -> Result<Vec<DutyLease>, StoreError>;

    /// Every step record of a run, by index.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError>;

    /// The oldest step an agent may lease at `now`: `Pending`, or `Leased`
    /// with `leased_until <= now`, of a run that is `waiting_agent` at that
    /// step (a run ended by an operator leaves nothing to lease); oldest by
    /// the time it became pending.
    async fn next_leasable_step(&self, now: DateTime<Utc>) -> Result<Option<StepRecord>, StoreError>;

    /// The steps an agent holds or may take, whatever the time: `Pending`
    /// or `Leased` (lease ended or not) of a run that is `waiting_agent` at
    /// that step, oldest first by the time each became pending (ties as
    /// [`Store::next_leasable_step`] breaks them), at most `limit`; 0 means
    /// no limit.
    async fn agent_steps(&self, limit: usize) -> Result<Vec<StepRecord>, StoreError>;

    /// Pending outbox entries for `destination` due at `now`
    /// (`next_attempt_at <= now`) that are the oldest undelivered entry of
    /// their run (delivery is in order per run; a dead entry blocks the
    /// later ones of its run), earliest due first (then by `seq`), at most
    /// `limit`, each with its run. Entries for other destinations are not
    /// looked at, so envelopes waiting for a destination that is not
    /// configured cost nothing.
    async fn outbox_due(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, StoreError>;

    /// The earliest `next_attempt_at` among the entries `outbox_due` could
    /// return for `destination` at some time (pending heads of their runs).
    async fn outbox_next_due(&self, destination: &str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Outbox entries, oldest first, optionally of one status; 0 = no limit.
    async fn outbox_list(&self, status: Option<OutboxStatus>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// How many outbox entries have `status` (every entry when `None`).
    async fn count_outbox(&self, status: Option<OutboxStatus>) -> Result<u64, StoreError>;

    async fn outbox_get(&self, id: &str) -> Result<Option<OutboxRecord>, StoreError>;

    /// A run's `Pending` outbox entries as `(id, destination)`, oldest
    /// first.
    async fn outbox_pending_of_run(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// The counts the live ones of [`Store::watch`] start from, read from
    /// the store (a daemon reads them once, at start).
    async fn tallies(&self) -> Result<Tallies, StoreError>;

    /// Whether this store's writes succeed lately, and the live counts;
    /// shared by every caller of this store.
    fn watch(&self) -> &StoreWatch;

    /// Which back end this is (`sqlite`, `postgres`), as `/ready` names it.
    fn kind(&self) -> &'static str;

    /// What other processes commit to this store, as [`Wakeup`]s, for a
    /// store several processes write at once (PostgreSQL: replicas, `fanin
    /// outbox retry`); this process's own commits are not among them.
    /// `None` where there is nothing to hear (a SQLite file: one daemon,
    /// which wakes its own waiters). The first call starts listening, in
    /// the background on the current runtime; a receiver that falls behind
    /// hears `Lagged`, which means [`Wakeup::All`].
    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        None
    }
}

/// What another process committed to a shared store, for whoever waits for
/// it here ([`Store::wakeups`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// A step became pending: long polls of the agent loop look again.
    Step,
    /// An envelope was queued or a dead letter revived: the outbox
    /// workers look again.
    Outbox,
    /// Something else the console lists changed (a run started or moved
    /// on, an envelope delivered or given up on): its live pages look
    /// again. A step or envelope of the first two kinds is said by those.
    Runs,
    /// Anything may have been committed (listening started, or started
    /// again after its connection broke): everybody looks again.
    All,
}

/// What a reader hands back in place of a stored value it cannot read (JSON
/// nested beyond what the parser takes, text that is not JSON, a row with a
/// column fanin never writes that way): `{"unreadable": "<why>",
/// "stored_bytes": n}`. The record around it still lists, so one bad row
/// never hides the others, and the outbox worker dead-letters an envelope
/// that reads as this instead of trying it forever.
pub fn unreadable(reason: String, stored_bytes: usize) -> Value {
    serde_json::json!({"unreadable": reason, "stored_bytes": stored_bytes})
}

/// Why the value was unreadable, when `value` is [`unreadable`]'s stand-in.
pub fn unreadable_reason(value: &Value) -> Option<&str> {
    let fields = value.as_object()?;
    if fields.len() != 2 || !fields.get("stored_bytes")?.is_u64() {
        return None;
    }
    fields.get("unreadable")?.as_str()
}

/// Whether `[store].url` names a PostgreSQL store.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The SQLite file a `[store].url` names. Relative paths resolve against
/// `base_dir` (the directory holding config.toml). A PostgreSQL URL names
/// no file: see [`pairing_key_path`] and [`DaemonLock`] for what fanin keeps
/// on the local disk then.
pub fn local_path(url: &str, base_dir: &Path) -> Result<std::path::PathBuf, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Invalid("sqlite:// needs a file path".into()));
        }
        return Ok(base_dir.join(path));
    }
    if is_postgres(url) {
        return Err(StoreError::Invalid("a PostgreSQL store has no local file".into()));
    }
    Err(StoreError::Invalid(format!("unsupported scheme in {url:?} (expected sqlite:// or postgres://)")))
}

/// The pairing key codes are MACed with: beside a SQLite store; for a
/// PostgreSQL store, beside config.toml (`<config dir>/pairing.key`), since
/// the database must not hold the key that makes its codes checkable.
/// Every process that issues or redeems codes on one store must read the
/// same file (replicas: the same copy of it).
pub fn pairing_key_path(url: &str, base_dir: &Path) -> Result<std::path::PathBuf, StoreError> {
    if is_postgres(url) {
        return Ok(base_dir.join("pairing.key"));
    }
    Ok(files::pairing_key_path(&local_path(url, base_dir)?))
}

/// Opens the store named by `[store].url`, creating or upgrading it.
pub async fn open(url: &str, base_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres(url) {
        return Ok(Arc::new(postgres::PostgresStore::open(url, base_dir).await?));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(&local_path(url, base_dir)?)?))
}

/// Opens the existing store named by `[store].url` for reading only (see
/// [`sqlite::SqliteStore::open_read_only`]).
pub async fn open_read_only(url: &str, base_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres(url) {
        return Ok(Arc::new(postgres::PostgresStore::open_read_only(url, base_dir).await?));
    }
    Ok(Arc::new(sqlite::SqliteStore::open_read_only(&local_path(url, base_dir)?)?))
}

/// What keeps a second daemon off a store while one runs: the lock file
/// beside a SQLite store; in a PostgreSQL one, a session advisory lock that
/// admits one daemon alone or replicas (`node`: its node id) with distinct
/// node ids, never both.
pub enum DaemonLock {
    File(files::DaemonLock),
    Postgres(postgres::DaemonLock),
}

impl DaemonLock {
    pub async fn acquire(url: &str, base_dir: &Path, node: Option<&str>) -> Result<DaemonLock, StoreError> {
        if is_postgres(url) {
            return Ok(DaemonLock::Postgres(postgres::DaemonLock::acquire(url, base_dir, node).await?));
        }
        if node.is_some() {
            return Err(StoreError::Invalid("replicas need a PostgreSQL store".into()));
        }
        Ok(DaemonLock::File(files::DaemonLock::acquire(&local_path(url, base_dir)?)?))
    }
}
