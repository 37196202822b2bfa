//! Approval gates: the runs waiting at one, and an operator's approve or
//! deny. A decision moves the run through the dispatcher, which keeps
//! admission in step (a denied run frees its slot for the oldest deferred
//! run of its SOP; an approved one may take its step to the agent loop).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ConflictKind, OpError, Thing};
use crate::dispatch::matching::Catalog;
use crate::dispatch::{DispatchError, Dispatcher, RunInput};
use crate::runs::RunStatus;
use crate::store::{RunQuery, Store, StoreError};

/// What an operator decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn outcome(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Deny => "denied",
        }
    }
}

/// What approve and deny take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub run_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A decision taken: where the run is now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decided {
    pub outcome: &'static str,
    pub run_id: String,
    pub status: RunStatus,
}

/// The runs waiting for an approval, oldest first. `step` is the 1-based
/// number of the gated step; a SOP without steps has one gate, before its
/// event is delivered, shown as step 1 of `total_steps` 0. `catalog` (the
/// SOPs, when they load) gives step titles and counts.
pub async fn pending(store: &dyn Store, catalog: Option<&Catalog>) -> Result<Vec<Value>, OpError> {
    let query = RunQuery { status: Some(RunStatus::PendingApproval), ..Default::default() };
    let mut runs = store.list_runs(&query).await.map_err(OpError::store)?;
    runs.reverse();
    Ok(runs
        .iter()
        .map(|run| {
            let sop = catalog.and_then(|c| c.get(&run.sop));
            let title = sop.and_then(|s| s.steps.get(run.step as usize)).map(|s| s.title.clone());
            json!({
                "run_id": run.run_id,
                "sop": run.sop,
                "sop_version": run.sop_version,
                "step": run.step + 1,
                "total_steps": sop.map(|s| s.steps.len()),
                "title": title,
                "waiting_since": run.updated_at,
                "started_at": run.started_at,
            })
        })
        .collect())
}

/// Approves or denies `request.run_id` as `by`, at `now`.
pub async fn decide(
    dispatcher: &Dispatcher,
    store: &dyn Store,
    decision: Decision,
    request: DecisionRequest,
    by: String,
    now: DateTime<Utc>,
) -> Result<Decided, OpError> {
    let DecisionRequest { run_id, reason } = request;
    let input = match decision {
        Decision::Approve => RunInput::Approve { by, reason },
        Decision::Deny => RunInput::Deny { by, reason },
    };
    let detail = match dispatcher.advance(&run_id, input, now).await {
        Ok(advanced) => return Ok(Decided { outcome: decision.outcome(), run_id, status: advanced.status }),
        Err(DispatchError::NoSuchRun(_)) => return Err(OpError::not_found(Thing::Run, run_id)),
        Err(e @ (DispatchError::Conflict(_) | DispatchError::InvalidTransition { .. })) => e.to_string(),
        // Another decision committed between the read and the write.
        Err(DispatchError::Store(StoreError::Conflict(detail))) => detail,
        Err(DispatchError::Store(e)) => return Err(OpError::store(e)),
    };
    let status = store.get_run(&run_id).await.ok().flatten().map(|r| r.status);
    // At the gate but unable to move on (its SOP is gone): not a matter of
    // where the run is.
    let kind =
        if status == Some(RunStatus::PendingApproval) { ConflictKind::CannotMove } else { ConflictKind::NotPending };
    Err(OpError::Conflict { what: Thing::Run, id: run_id, kind, status: status.map(|s| s.to_string()), reason: detail })
}
