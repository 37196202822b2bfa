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

use crate::event::Request;
use fanin_core::runs::RunStatus;

pub mod faults;
pub mod files;
pub mod sqlite;
pub mod watch;

pub use fanin_core::admission::SopLoad;
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

/// One ExecuteStep of a run handed to the agent loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for an agent to lease it (also: a lease that expired).
    Pending,
    Leased,
    Completed,
    Failed,
    /// Its run was cancelled before it was reported: it can no longer be
    /// leased or reported.
    Withdrawn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    /// 0-based index in the SOP's steps.
    pub index: u32,
    pub status: StepStatus,
    pub lease_id: Option<String>,
    /// A `Leased` step whose lease ended counts as pending again.
    pub leased_until: Option<DateTime<Utc>>,
    /// How many times it was leased.
    pub attempts: u32,
    /// What the agent reported.
    pub output: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Delivered,
    /// Gave up after `[delivery].max_attempts`; kept, listed, retryable.
    Dead,
    /// Its run was cancelled while it waited: never sent, kept and listed,
    /// not retryable.
    Withdrawn,
}

impl OutboxStatus {
    pub const ALL: [OutboxStatus; 4] =
        [OutboxStatus::Pending, OutboxStatus::Delivered, OutboxStatus::Dead, OutboxStatus::Withdrawn];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Dead => "dead",
            OutboxStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxStatus> {
        OutboxStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// An envelope waiting for (or done with) delivery to a destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The envelope id, also the `Idempotency-Key` of every attempt.
    pub id: String,
    /// Assigned by the store: the order entries were written in.
    pub seq: i64,
    pub run_id: String,
    /// `agent` or `executor`.
    pub destination: String,
    pub envelope: Value,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A pending outbox entry that is due, as the outbox worker takes it: what
/// it sends and what it needs to record the outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct DueEntry {
    pub id: String,
    pub seq: i64,
    pub run_id: String,
    pub destination: String,
    /// The envelope as stored (JSON text), sent as it is: the worker never
    /// parses it.
    pub envelope: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The entry's run without its payload (`Null`: recording a delivery
    /// never needs it); `None` when there is no such run.
    pub run: Option<RunRecord>,
    /// Why the stored row cannot be read (a column holding what fanin never
    /// writes there): such an entry can never be sent.
    pub unreadable: Option<String>,
}

/// What an audit record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A run was created and admitted (status pending_approval or running).
    RunStarted,
    /// A run was created in the backlog.
    RunDeferred,
    /// A deferred run was admitted.
    RunPromoted,
    /// A trigger merged into a waiting deferred run.
    TriggerCoalesced,
    /// A trigger matched but no run was created (cooldown, drop policy).
    TriggerSkipped,
    /// A trigger matched but the backlog was full.
    TriggerRejected,
    /// A run moved between states.
    RunTransition,
    /// A cron fire point older than the catch-up window.
    CronMissed,
    /// An ExecuteStep became pending for the agent loop (headless or not).
    StepPending,
    /// An agent leased a step.
    StepLeased,
    /// An agent reported a step completed or failed.
    StepReported,
    /// An operator approved or denied a gate.
    Approval,
    /// An envelope was written to the outbox.
    EnvelopeQueued,
    /// An envelope reached its destination.
    EnvelopeDelivered,
    /// An envelope gave up (dead letter), or failed schema validation.
    EnvelopeFailed,
    /// A source refused an event it still had to acknowledge (an MQTT
    /// message too deeply nested): the record is all that is left of it.
    EventRefused,
    /// A pairing code absorbed its budget of wrong guesses and can no
    /// longer be redeemed.
    PairingCodeRetired,
    /// An operator cancelled a run (who, through which interface, why, and
    /// what of it was withdrawn).
    RunCancelled,
}

impl AuditKind {
    pub const ALL: [AuditKind; 18] = [
        AuditKind::RunStarted,
        AuditKind::RunDeferred,
        AuditKind::RunPromoted,
        AuditKind::TriggerCoalesced,
        AuditKind::TriggerSkipped,
        AuditKind::TriggerRejected,
        AuditKind::RunTransition,
        AuditKind::CronMissed,
        AuditKind::StepPending,
        AuditKind::StepLeased,
        AuditKind::StepReported,
        AuditKind::Approval,
        AuditKind::EnvelopeQueued,
        AuditKind::EnvelopeDelivered,
        AuditKind::EnvelopeFailed,
        AuditKind::EventRefused,
        AuditKind::PairingCodeRetired,
        AuditKind::RunCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::RunStarted => "run_started",
            AuditKind::RunDeferred => "run_deferred",
            AuditKind::RunPromoted => "run_promoted",
            AuditKind::TriggerCoalesced => "trigger_coalesced",
            AuditKind::TriggerSkipped => "trigger_skipped",
            AuditKind::TriggerRejected => "trigger_rejected",
            AuditKind::RunTransition => "run_transition",
            AuditKind::CronMissed => "cron_missed",
            AuditKind::StepPending => "step_pending",
            AuditKind::StepLeased => "step_leased",
            AuditKind::StepReported => "step_reported",
            AuditKind::Approval => "approval",
            AuditKind::EnvelopeQueued => "envelope_queued",
            AuditKind::EnvelopeDelivered => "envelope_delivered",
            AuditKind::EnvelopeFailed => "envelope_failed",
            AuditKind::EventRefused => "event_refused",
            AuditKind::PairingCodeRetired => "pairing_code_retired",
            AuditKind::RunCancelled => "run_cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An audit record to write; the store assigns its sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub run_id: Option<String>,
    pub sop: Option<String>,
    pub detail: Value,
}

/// A stored audit record. `seq` orders all records of a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub run_id: Option<String>,
    pub sop: Option<String>,
    pub detail: Value,
}

/// One write inside a [`Batch`]. The two large records are boxed, so a
/// write is about a hundred bytes and a run's few writes fit in one small
/// allocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    InsertRun(Box<RunRecord>),
    /// Compare-and-set: moves the run to `to` only if it is `from` now, else
    /// the whole batch fails with [`StoreError::Conflict`]. Entering a terminal
    /// state sets `finished_at = at`.
    SetStatus {
        run_id: String,
        from: RunStatus,
        to: RunStatus,
        at: DateTime<Utc>,
    },
    /// A newer trigger replaces the event of a waiting deferred run (its
    /// payload, request, session and client; `coalesced += 1`). Fails with
    /// `Conflict` if the run is no longer deferred.
    Coalesce {
        run_id: String,
        event_id: String,
        payload: Value,
        request: Option<Request>,
        session: Option<Value>,
        client: Option<String>,
        at: DateTime<Utc>,
    },
    Audit(NewAudit),
    /// The cron scheduler has looked at every fire point up to `at` for `key`.
    CronChecked {
        key: String,
        at: DateTime<Utc>,
    },
    /// Compare-and-set on the run's step index (`from` must hold).
    SetStep {
        run_id: String,
        from: u32,
        to: u32,
        at: DateTime<Utc>,
    },
    /// A step becomes pending for the agent loop. `Conflict` if that step of
    /// that run already has a record.
    PendStep {
        run_id: String,
        index: u32,
        at: DateTime<Utc>,
    },
    /// Leases a step that is `Pending`, or `Leased` with `leased_until <= at`
    /// (an expired lease); `attempts += 1`. `Conflict` otherwise.
    LeaseStep {
        run_id: String,
        index: u32,
        lease_id: String,
        until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Ends a leased step as `Completed` or `Failed` with the agent's output.
    /// The step must be `Leased` under `lease_id` (expired or not, as long as
    /// nobody leased it since), else `Conflict`.
    FinishStep {
        run_id: String,
        index: u32,
        lease_id: String,
        status: StepStatus,
        output: Value,
        at: DateTime<Utc>,
    },
    /// A new outbox entry (`seq` is assigned; the given one is ignored).
    /// `Conflict` if the id exists.
    Enqueue(Box<OutboxRecord>),
    /// `Pending` → `Delivered`; `Conflict` otherwise.
    Delivered {
        id: String,
        attempts: u32,
        at: DateTime<Utc>,
    },
    /// A failed attempt: stays `Pending` until `next_attempt_at`.
    Reschedule {
        id: String,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: String,
    },
    /// `Pending` → `Dead` after the last attempt; `Conflict` otherwise.
    DeadLetter {
        id: String,
        attempts: u32,
        error: String,
        at: DateTime<Utc>,
    },
    /// `Dead` → `Pending`, due at `at`, attempts reset to 0 (`fanin outbox
    /// retry`); `Conflict` otherwise.
    Revive {
        id: String,
        at: DateTime<Utc>,
    },
    /// `Pending` → `Withdrawn` (its run is being cancelled); `Conflict`
    /// otherwise, so an entry delivered meanwhile refuses the cancel.
    /// `destination` is the entry's, for the counts of [`StoreWatch`].
    WithdrawEnvelope {
        id: String,
        destination: String,
    },
    /// A `Pending` or `Leased` step becomes `Withdrawn` (its run is being
    /// cancelled); `Conflict` otherwise, so a step reported meanwhile
    /// refuses the cancel.
    WithdrawStep {
        run_id: String,
        index: u32,
        at: DateTime<Utc>,
    },
}

/// Claims an idempotency key in the same transaction as the batch's writes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotencyClaim {
    /// The endpoint path the key is namespaced by.
    pub scope: String,
    pub key: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// What a duplicate of this request is answered with.
    pub response: Value,
}

/// An atomic unit of writes: all of it is committed, or none of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub idempotency: Option<IdempotencyClaim>,
    pub writes: Vec<Write>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Committed {
    Applied,
    /// The idempotency key was already claimed and has not expired: nothing
    /// was written; `response` is what the first request stored.
    Duplicate {
        response: Value,
    },
}

/// Filters for listing runs; newest first.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub sop: Option<String>,
    pub status: Option<RunStatus>,
    /// At most this many; 0 means no limit.
    pub limit: usize,
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a batch atomically. Concurrent callers share commits (group
    /// commit); each call returns only after its batch is durable.
    async fn commit(&self, batch: Batch) -> Result<Committed, StoreError>;

    /// [`commit`](Store::commit) for a caller that keeps many commits in
    /// flight (the MQTT source, within the broker's window) and so can wait
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
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;
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

    /// Cheap liveness probe for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Every step record of a run, by index.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError>;

    /// The oldest step an agent may lease at `now`: `Pending`, or `Leased`
    /// with `leased_until <= now`, of a run that is `waiting_agent` at that
    /// step (a run ended by an operator leaves nothing to lease); oldest by
    /// the time it became pending.
    async fn next_leasable_step(&self, now: DateTime<Utc>) -> Result<Option<StepRecord>, StoreError>;

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

/// The SQLite file a `[store].url` names. Relative paths resolve against
/// `base_dir` (the directory holding config.toml). The files fanin keeps
/// beside the store ([`files`]) are found from it.
pub fn local_path(url: &str, base_dir: &Path) -> Result<std::path::PathBuf, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Invalid("sqlite:// needs a file path".into()));
        }
        return Ok(base_dir.join(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Invalid("the PostgreSQL store is not built yet; use sqlite://".into()));
    }
    Err(StoreError::Invalid(format!("unsupported scheme in {url:?} (expected sqlite:// or postgres://)")))
}

/// Opens the store named by `[store].url`, creating or upgrading it.
pub fn open(url: &str, base_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open(&local_path(url, base_dir)?)?))
}

/// Opens the existing store named by `[store].url` for reading only (see
/// [`sqlite::SqliteStore::open_read_only`]).
pub fn open_read_only(url: &str, base_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open_read_only(&local_path(url, base_dir)?)?))
}
