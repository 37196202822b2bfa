//! What the store keeps and the writes that change it: steps, outbox
//! entries, audit records, and [`Write`] / [`Batch`], the one language in
//! which planning says what a commit must do. Pure data; the runtime's
//! `store` module commits it (the `Store` trait, the SQLite writer).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Request;
use crate::runs::{RunRecord, RunStatus};

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
    /// An attempt at delivering an envelope failed and it is tried again
    /// later (its error and when), so a run's record shows every attempt.
    EnvelopeAttemptFailed,
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
    /// A source's cursor no longer names a place in what it reads (a
    /// mailbox's UIDVALIDITY changed, an expired Drive page token): what
    /// it did instead.
    SourceReset,
}

impl AuditKind {
    pub const ALL: [AuditKind; 20] = [
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
        AuditKind::EnvelopeAttemptFailed,
        AuditKind::EnvelopeFailed,
        AuditKind::EventRefused,
        AuditKind::PairingCodeRetired,
        AuditKind::RunCancelled,
        AuditKind::SourceReset,
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
            AuditKind::EnvelopeAttemptFailed => "envelope_attempt_failed",
            AuditKind::EnvelopeFailed => "envelope_failed",
            AuditKind::EventRefused => "event_refused",
            AuditKind::PairingCodeRetired => "pairing_code_retired",
            AuditKind::RunCancelled => "run_cancelled",
            AuditKind::SourceReset => "source_reset",
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
    /// Compare-and-set on a source's cursor (`email:ops`: where in its
    /// feed it has read to): `from` must be what is stored (`None`: no
    /// cursor yet), else `Conflict`, so two writers never both advance it.
    SetCursor {
        source: String,
        from: Option<String>,
        to: String,
        at: DateTime<Utc>,
    },
    /// What the filesystem source last saw of a watched file (`None`: the
    /// file is gone), written in the commit that dispatches its change.
    /// An upsert: the source is the table's only writer.
    SetFileState {
        source: String,
        path: String,
        state: Option<FileState>,
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

/// Where a source has read to, as it stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub value: String,
    pub updated_at: DateTime<Utc>,
}

/// A watched file as the filesystem source last saw it: what a scan at
/// start compares the tree with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// SHA-256 of the content, hex.
    pub sha256: String,
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
