//! Runs started and ended by an operator: a manual fire of a SOP, and
//! cancelling a run wherever it is before it ends.
//!
//! Both go through the dispatcher, which keeps admission in step: a fire is
//! admitted like any event, and a cancelled run frees its slot for the
//! oldest deferred run of its SOP in the same commit, exactly as a run that
//! finishes does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::{Actor, ConflictKind, OpError, Thing};
use crate::dispatch::dispatcher::summary;
use crate::dispatch::{DispatchError, DispatchReport, Dispatcher, RunInput, Withdrawn};
use crate::event::{Event, Payload, Source};
use crate::runs::RunStatus;
use crate::store::StoreError;

/// Starts a manual run of `sop` with `payload` for `client`, received at
/// `now`. The reply is `{"matched_sops", "runs", "status": "accepted",
/// "source": "manual", "event_id"}`, or what a duplicate gets.
pub async fn fire(
    dispatcher: &Dispatcher,
    sop: &str,
    payload: Payload,
    client: String,
    now: DateTime<Utc>,
) -> Result<Value, OpError> {
    let mut event = Event::new(crate::ids::fresh(), Source::Manual, sop, payload, now);
    event.client = Some(client);
    let report = dispatcher.dispatch(event).await.map_err(|e| match e {
        DispatchError::Store(e) => OpError::store(e),
        other => OpError::StoreUnavailable(other.to_string()),
    })?;
    match report {
        DispatchReport::Accepted { outcomes, .. } if outcomes.is_empty() => {
            let detail = match dispatcher.catalog().get(sop) {
                Some(_) => format!("SOP {sop} has no manual trigger"),
                None => format!("no SOP named {sop}"),
            };
            Err(OpError::NotFound { what: Thing::Sop, id: sop.to_string(), detail: Some(detail) })
        }
        DispatchReport::Accepted { event_id, outcomes } => {
            let mut reply = summary(&outcomes);
            reply["status"] = json!("accepted");
            reply["source"] = json!("manual");
            reply["event_id"] = json!(event_id);
            Ok(reply)
        }
        DispatchReport::Duplicate { response } => Ok(response),
    }
}

/// What cancel takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelRequest {
    pub run_id: String,
    pub reason: Option<String>,
}

/// A cancelled run, and what its cancel changed around it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cancelled {
    /// Always `cancelled`, as approve and deny name theirs.
    pub outcome: &'static str,
    pub run_id: String,
    pub status: RunStatus,
    /// Where the run was.
    pub from: RunStatus,
    pub withdrawn: Withdrawn,
    /// Deferred runs of the SOP that took the slot the run freed.
    pub promoted: Vec<String>,
}

/// How often a cancel looks again at a run that moved between its read and
/// its commit (a delivery, a step report, a decision), before giving up.
const ATTEMPTS: usize = 8;

/// Cancels `request.run_id` as `actor`, at `now`: allowed for a run that is
/// `deferred`, `pending_approval`, `running` or `waiting_agent`; a run that
/// has ended (cancelled included) is refused with its status.
pub async fn cancel(
    dispatcher: &Dispatcher,
    request: CancelRequest,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Cancelled, OpError> {
    let CancelRequest { run_id, reason } = request;
    let refused = |kind, status: Option<RunStatus>, reason: String| OpError::Conflict {
        what: Thing::Run,
        id: run_id.clone(),
        kind,
        status: status.map(|s| s.to_string()),
        reason,
    };
    for _ in 0..ATTEMPTS {
        let input =
            RunInput::Cancel { by: actor.by.clone(), interface: actor.interface.as_str(), reason: reason.clone() };
        match dispatcher.advance(&run_id, input, now).await {
            Ok(advanced) => {
                return Ok(Cancelled {
                    outcome: "cancelled",
                    run_id: advanced.run_id,
                    status: advanced.status,
                    from: advanced.from,
                    withdrawn: advanced.withdrawn,
                    promoted: advanced.promoted,
                })
            }
            Err(DispatchError::NoSuchRun(_)) => return Err(OpError::not_found(Thing::Run, run_id)),
            Err(e @ DispatchError::InvalidTransition { from, .. }) => {
                return Err(refused(ConflictKind::NotCancellable, Some(from), e.to_string()))
            }
            Err(DispatchError::Store(StoreError::Conflict(_))) => continue,
            Err(DispatchError::Store(e)) => return Err(OpError::store(e)),
            Err(DispatchError::Conflict(detail)) => return Err(refused(ConflictKind::CannotMove, None, detail)),
        }
    }
    Err(refused(
        ConflictKind::CannotMove,
        None,
        format!("run {run_id} kept moving while it was being cancelled; try again"),
    ))
}
