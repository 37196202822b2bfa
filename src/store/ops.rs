//! The requests a store's writer takes, whichever database it writes: a
//! batch with its JSON already encoded, and the pairing, token and
//! housekeeping requests; what the writer answers; and the words of every
//! refused compare-and-set, so both back ends refuse alike.
//!
//! Why encoded up front: the caller's task writes the JSON out as text (and,
//! holding the other `Arc`, frees the batch after the reply), so the writer,
//! which every commit waits for, only runs SQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::codec::{json_text, request_text, time_text};
use crate::store::{Batch, Committed, StoreError, TokenRecord, Write};
use fanin_core::runs::RunStatus;

/// At most this many requests share one transaction, so that a flood of
/// requests still gets answered in bounded steps.
pub const MAX_REQUESTS_PER_TRANSACTION: usize = 512;

/// A group of patient requests (`Store::commit_pipelined`) at least this
/// large is a sign of load: the writer then waits for more before
/// committing. A lone request commits at once, so a quiet daemon pays no
/// latency for this.
const LINGER_FROM: usize = 2;
/// While lingering, the writer commits as soon as no request came for this
/// long (arrivals have stopped: everyone who was coming is in the group)…
pub const LINGER_GAP: Duration = Duration::from_micros(100);
/// …and in any case this long after the group's first request.
pub const LINGER_MAX: Duration = Duration::from_micros(1000);

/// Whether a group of `len` requests waits for more before committing.
pub fn lingers(len: usize, all_patient: bool) -> bool {
    all_patient && (LINGER_FROM..MAX_REQUESTS_PER_TRANSACTION).contains(&len)
}

/// What a caller asks the writer to do.
pub enum Op {
    Commit(Arc<EncodedBatch>),
    AddPairingCode { hash: String, created_at: DateTime<Utc>, expires_at: DateTime<Utc> },
    RedeemPairingCode { hash: String, now: DateTime<Utc>, token: TokenRecord },
    ChargePairingGuess { now: DateTime<Utc>, budget: u32 },
    RevokeTokens { prefix: String, at: DateTime<Utc> },
    PurgeIdempotency { now: DateTime<Utc> },
}

/// What the writer answers, one variant per kind of [`Op`].
#[derive(Debug)]
pub enum Outcome {
    Committed(Committed),
    Redeemed(bool),
    Count(usize),
    Done,
}

/// A batch with its JSON values already written out as text.
pub struct EncodedBatch {
    pub batch: Batch,
    pub claim_response: Option<String>,
    /// One entry per write of `batch`: the texts it stores.
    pub texts: Vec<Texts>,
}

/// The JSON texts one write stores: its JSON value (see [`json_value`]),
/// and for a run's event (inserted or coalesced) the webhook request and
/// the continued session.
pub struct Texts {
    json: Option<String>,
    pub request: Option<String>,
    pub session: Option<String>,
}

impl Texts {
    fn of(write: &Write) -> Texts {
        let (request, session) = match write {
            Write::InsertRun(run) => (run.request.as_ref(), run.session.as_ref()),
            Write::Coalesce { request, session, .. } => (request.as_ref(), session.as_ref()),
            _ => (None, None),
        };
        Texts {
            json: json_value(write).map(json_text),
            request: request.map(request_text),
            session: session.map(json_text),
        }
    }

    /// The write's JSON value as text (`null` for a write that has none).
    pub fn json(&self) -> &str {
        self.json.as_deref().unwrap_or("null")
    }
}

impl EncodedBatch {
    pub fn new(batch: Batch) -> EncodedBatch {
        let claim_response = batch.idempotency.as_ref().map(|claim| json_text(&claim.response));
        let texts = batch.writes.iter().map(Texts::of).collect();
        EncodedBatch { batch, claim_response, texts }
    }

    /// The claim's response as text.
    pub fn claim_response(&self) -> &str {
        self.claim_response.as_deref().unwrap_or("null")
    }
}

/// The JSON value a write stores, if any: what [`EncodedBatch`] encodes.
fn json_value(write: &Write) -> Option<&Value> {
    match write {
        Write::InsertRun(run) => Some(&run.payload),
        Write::Coalesce { payload, .. } => Some(payload),
        Write::Audit(audit) => Some(&audit.detail),
        Write::FinishStep { output, .. } => Some(output),
        Write::Enqueue(entry) => Some(&entry.envelope),
        Write::SetStatus { .. }
        | Write::CronChecked { .. }
        | Write::SetCursor { .. }
        | Write::SetFileState { .. }
        | Write::SetStep { .. }
        | Write::PendStep { .. }
        | Write::LeaseStep { .. }
        | Write::Delivered { .. }
        | Write::Reschedule { .. }
        | Write::DeadLetter { .. }
        | Write::Revive { .. }
        | Write::WithdrawEnvelope { .. }
        | Write::WithdrawStep { .. } => None,
    }
}

/// The words of each refusal, given what the store found instead.
pub mod refusal {
    use super::*;

    fn conflict(message: String) -> StoreError {
        StoreError::Conflict(message)
    }

    pub fn run_exists(run_id: &str) -> StoreError {
        conflict(format!("run {run_id} already exists"))
    }

    pub fn status(run_id: &str, found: Option<&str>, from: RunStatus, to: RunStatus) -> StoreError {
        conflict(match found {
            Some(status) => format!("run {run_id}: status is {status}, expected {from} (to become {to})"),
            None => format!("run {run_id}: no such run (expected status {from})"),
        })
    }

    pub fn coalesce(run_id: &str, found: Option<&str>) -> StoreError {
        conflict(match found {
            Some(status) => format!("run {run_id}: cannot coalesce into a run that is {status}, not deferred"),
            None => format!("run {run_id}: cannot coalesce into a missing run"),
        })
    }

    pub fn cursor(source: &str, from: Option<&str>) -> StoreError {
        conflict(format!("the cursor of {source} is no longer {from:?}"))
    }

    pub fn step_index(run_id: &str, found: Option<i64>, from: u32, to: u32) -> StoreError {
        conflict(match found {
            Some(step) => format!("run {run_id}: step is {step}, expected {from} (to become {to})"),
            None => format!("run {run_id}: no such run (expected step {from})"),
        })
    }

    /// A step record as the step refusals describe it.
    pub struct StepState {
        pub status: String,
        pub lease_id: Option<String>,
        pub leased_until: Option<i64>,
    }

    pub fn pend(run_id: &str, index: u32, found: Option<StepState>) -> StoreError {
        let status = found.map_or_else(|| "unknown".to_owned(), |s| s.status);
        conflict(format!("run {run_id} step {index}: already has a record ({status}); cannot pend it again"))
    }

    pub fn lease(run_id: &str, index: u32, found: Option<StepState>, at: DateTime<Utc>) -> StoreError {
        let what = format!("run {run_id} step {index}");
        conflict(match found {
            None => format!("{what}: no such step to lease"),
            Some(s) if s.status == "leased" => format!(
                "{what}: leased under {} until {}, later than {}",
                s.lease_id.as_deref().unwrap_or("?"),
                time_text(s.leased_until),
                at.to_rfc3339()
            ),
            Some(s) => format!("{what}: is {}, not pending; cannot lease it", s.status),
        })
    }

    pub fn finish_status(run_id: &str, index: u32, status: &str) -> StoreError {
        StoreError::Invalid(format!("run {run_id} step {index}: a step finishes as completed or failed, not {status}"))
    }

    pub fn finish(run_id: &str, index: u32, lease_id: &str, found: Option<StepState>) -> StoreError {
        let what = format!("run {run_id} step {index}");
        conflict(match found {
            None => format!("{what}: no such step to finish"),
            Some(s) if s.status == "leased" => format!(
                "{what}: leased under {}, not {lease_id} (the lease was taken over)",
                s.lease_id.as_deref().unwrap_or("?")
            ),
            Some(s) => format!("{what}: is {}, not leased under {lease_id}", s.status),
        })
    }

    pub fn withdraw_step(run_id: &str, index: u32, found: Option<StepState>) -> StoreError {
        let what = format!("run {run_id} step {index}");
        conflict(match found {
            None => format!("{what}: no such step to withdraw"),
            Some(s) => format!("{what}: is {}, not pending or leased; cannot withdraw it", s.status),
        })
    }

    pub fn enqueued(id: &str) -> StoreError {
        conflict(format!("outbox entry {id} already exists"))
    }

    pub fn outbox(id: &str, found: Option<&str>, expected: &str, doing: &str) -> StoreError {
        conflict(match found {
            Some(status) => format!("outbox entry {id}: is {status}, expected {expected}; cannot {doing}"),
            None => format!("outbox entry {id}: no such entry; cannot {doing}"),
        })
    }

    pub fn token_taken(prefix: &str) -> StoreError {
        conflict(format!("token prefix {prefix} or its hash is already stored; generate another token"))
    }

    pub fn empty_revoke_prefix() -> StoreError {
        StoreError::Invalid("revoke tokens: an empty prefix would revoke every token; name one".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_group_of_patient_requests_waits_for_more() {
        assert!(!lingers(1, true), "a lone request commits at once");
        assert!(lingers(LINGER_FROM, true));
        assert!(!lingers(LINGER_FROM, false), "a caller is waiting on one of them");
        assert!(!lingers(MAX_REQUESTS_PER_TRANSACTION, true), "a full group commits");
    }
}
