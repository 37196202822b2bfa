//! Approvals over the admin API (docs/operations.md#approvals): the runs
//! waiting at a gate, and an operator's approve or deny ([`crate::operations::approvals`]). Guarded
//! like every `/admin` route; the caller identity [`AdminAccess`] gives is
//! recorded as who decided.
//!
//! - `GET /admin/sop/pending` → `{"pending":[{"run_id","sop","step",
//!   "total_steps","waiting_since",…}]}`, oldest first.
//! - `POST /admin/sop/approve|deny` with `{"run_id","reason"?}` → 200
//!   `{"outcome","run_id","status"}` (the status after the decision); 409
//!   `not_pending` when the run is not waiting; 404 `run_not_found`; 400
//!   `invalid_body` for a body that is not that object (unknown keys too).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::extract::AdminAccess;
use super::{ApiError, AppState};
use crate::event::Payload;
use crate::http::body::read_json;
use crate::operations::approvals::{self, Decided, Decision, DecisionRequest};

pub async fn pending(State(state): State<AppState>, _: AdminAccess) -> Result<Json<Value>, ApiError> {
    let catalog = state.dispatcher.catalog();
    let pending = approvals::pending(state.store.as_ref(), Some(&catalog)).await?;
    Ok(Json(json!({ "pending": pending })))
}

pub async fn approve(
    State(state): State<AppState>,
    access: AdminAccess,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Decided>, ApiError> {
    decide_route(&state, access, &headers, body, Decision::Approve).await
}

pub async fn deny(
    State(state): State<AppState>,
    access: AdminAccess,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Decided>, ApiError> {
    decide_route(&state, access, &headers, body, Decision::Deny).await
}

async fn decide_route(
    state: &AppState,
    AdminAccess { by }: AdminAccess,
    headers: &HeaderMap,
    body: Body,
    decision: Decision,
) -> Result<Json<Decided>, ApiError> {
    let request = parse_request(read_json(body, headers, &state.config).await?)?;
    let decided = approvals::decide(&state.dispatcher, state.store.as_ref(), decision, request, by, Utc::now()).await?;
    Ok(Json(decided))
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
}
