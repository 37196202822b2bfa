//! Approvals over the admin API (DESIGN §6): the runs waiting at a gate, and
//! an operator's approve or deny. Guarded like every `/admin` route; the
//! caller identity `AdminAccess` gives is recorded as who decided.
//!
//! - `GET /admin/sop/pending` → `{"pending":[{"run_id","sop","step",
//!   "total_steps","waiting_since",…}]}`, oldest first. `step` is the 1-based
//!   number of the gated step; a SOP without steps has one gate, before its
//!   event is delivered, shown as step 1 of `total_steps` 0.
//! - `POST /admin/sop/approve|deny` with `{"run_id","reason"?}` → 200
//!   `{"outcome","run_id","status"}` (the status after the decision); 409
//!   `not_pending` when the run is not waiting; 404 `run_not_found`; 400
//!   `invalid_body` for a body that is not that object (unknown keys too).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::AdminAccess;
use super::ingest::read_json;
use super::{ApiError, AppState};
use crate::dispatch::matching::Catalog;
use crate::dispatch::{DispatchError, Dispatcher, RunInput};
use crate::event::Payload;
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

/// The body of approve and deny.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub run_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The runs waiting for an approval, oldest first.
pub async fn pending_runs(store: &dyn Store, catalog: Option<&Catalog>) -> Result<Vec<Value>, StoreError> {
    let query = RunQuery { status: Some(RunStatus::PendingApproval), ..Default::default() };
    let mut runs = store.list_runs(&query).await?;
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

/// The outcome of a decision, as both the API and the CLI report it.
#[derive(Debug)]
pub enum DecisionError {
    NotFound {
        run_id: String,
    },
    /// The run is not waiting at a gate (`status` is where it is), or it is
    /// but cannot move on (`detail` says why).
    NotPending {
        run_id: String,
        status: Option<RunStatus>,
        detail: String,
    },
    Store(String),
}

impl DecisionError {
    /// One line for people.
    pub fn reason(&self) -> String {
        match self {
            DecisionError::NotFound { run_id } => format!("no run {run_id}"),
            DecisionError::NotPending { run_id, status: Some(status), .. } if *status != RunStatus::PendingApproval => {
                format!("run {run_id} is not waiting for approval (it is {status})")
            }
            DecisionError::NotPending { detail, .. } => detail.clone(),
            DecisionError::Store(e) => e.clone(),
        }
    }
}

impl From<DecisionError> for ApiError {
    fn from(e: DecisionError) -> ApiError {
        match e {
            DecisionError::NotFound { run_id } => {
                ApiError::new(StatusCode::NOT_FOUND, "run_not_found").with("run_id", run_id)
            }
            DecisionError::NotPending { run_id, status, detail } => {
                let code = if status == Some(RunStatus::PendingApproval) { "conflict" } else { "not_pending" };
                ApiError::new(StatusCode::CONFLICT, code)
                    .with("run_id", run_id)
                    .with("status", json!(status))
                    .with("detail", detail)
            }
            DecisionError::Store(_) => ApiError::store_unavailable(),
        }
    }
}

/// Approves or denies `request.run_id` as `by`; returns the reply body.
pub async fn decide(
    dispatcher: &Dispatcher,
    decision: Decision,
    request: DecisionRequest,
    by: String,
) -> Result<Value, DecisionError> {
    let DecisionRequest { run_id, reason } = request;
    let input = match decision {
        Decision::Approve => RunInput::Approve { by, reason },
        Decision::Deny => RunInput::Deny { by, reason },
    };
    match dispatcher.advance(&run_id, input, Utc::now()).await {
        Ok(advanced) => Ok(json!({"outcome": decision.outcome(), "run_id": run_id, "status": advanced.status})),
        Err(DispatchError::NoSuchRun(_)) => Err(DecisionError::NotFound { run_id }),
        Err(e @ (DispatchError::Conflict(_) | DispatchError::InvalidTransition { .. })) => {
            let status = dispatcher.store().get_run(&run_id).await.ok().flatten().map(|r| r.status);
            Err(DecisionError::NotPending { run_id, status, detail: e.to_string() })
        }
        Err(DispatchError::Store(StoreError::Conflict(detail))) => {
            // Another decision committed between our read and our write.
            let status = dispatcher.store().get_run(&run_id).await.ok().flatten().map(|r| r.status);
            Err(DecisionError::NotPending { run_id, status, detail })
        }
        Err(DispatchError::Store(e)) => Err(DecisionError::Store(e.to_string())),
    }
}

pub async fn pending(State(state): State<AppState>, _: AdminAccess) -> Result<Json<Value>, ApiError> {
    let catalog = state.dispatcher.catalog();
    let pending =
        pending_runs(state.store.as_ref(), Some(&catalog)).await.map_err(|_| ApiError::store_unavailable())?;
    Ok(Json(json!({ "pending": pending })))
}

pub async fn approve(
    State(state): State<AppState>,
    access: AdminAccess,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    decide_route(&state, access, &headers, body, Decision::Approve).await
}

pub async fn deny(
    State(state): State<AppState>,
    access: AdminAccess,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    decide_route(&state, access, &headers, body, Decision::Deny).await
}

async fn decide_route(
    state: &AppState,
    AdminAccess { by }: AdminAccess,
    headers: &HeaderMap,
    body: Body,
    decision: Decision,
) -> Result<Json<Value>, ApiError> {
    let request = parse_request(read_json(body, headers, &state.config).await?)?;
    Ok(Json(decide(&state.dispatcher, decision, request, by).await?))
}

fn parse_request(payload: Payload) -> Result<DecisionRequest, ApiError> {
    let invalid = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body").with("detail", detail);
    let value = payload.to_value();
    let request: DecisionRequest = serde_json::from_value(value)
        .map_err(|e| invalid(format!("expected {{\"run_id\": \"…\", \"reason\"?: \"…\"}}: {e}")))?;
    if request.run_id.is_empty() {
        return Err(invalid("run_id is empty".into()));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_bodies_are_checked() {
        let ok = parse_request(Payload::Json(json!({"run_id": "r1", "reason": "looks fine"}))).unwrap();
        assert_eq!((ok.run_id.as_str(), ok.reason.as_deref()), ("r1", Some("looks fine")));
        assert_eq!(parse_request(Payload::Json(json!({"run_id": "r1"}))).unwrap().reason, None);
        for bad in [json!(null), json!({}), json!({"run_id": ""}), json!({"run_id": 5}), json!({"run_id": "r", "x": 1})]
        {
            let err = parse_request(Payload::Json(bad.clone())).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn not_pending_names_the_status() {
        let e = ApiError::from(DecisionError::NotPending {
            run_id: "r".into(),
            status: Some(RunStatus::Cancelled),
            detail: "run r is cancelled".into(),
        });
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::from(DecisionError::NotFound { run_id: "r".into() }).status(), StatusCode::NOT_FOUND);
    }
}
