//! `/admin/*`: runs (and cancelling one), audit and manual fires for
//! operators. Loopback only, unless `allow_remote_admin`, and then a bearer
//! token is required too (the rule is [`AdminAccess`], which every handler
//! here takes). What a handler does is an operation
//! ([`crate::operations`]); the handler reads the request and answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{AdminAccess, Path, Query};
use super::{ApiError, AppState};
use crate::event::Payload;
use crate::http::body::read_json;
use crate::operations::runs::{CancelRequest, Cancelled};
use crate::operations::{self, Actor, Interface, OpError, Thing};
use crate::runs::RunStatus;
use crate::store::{AuditQuery, RunQuery, RunRecord};

#[derive(Deserialize)]
pub struct RunsParams {
    sop: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// A `status` query parameter: absent, or a name `parse` knows (else 400).
pub(super) fn status_param<T>(value: Option<&str>, parse: fn(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    value
        .map(|s| parse(s).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_status").with("status", s)))
        .transpose()
}

/// The fields a run list shows.
pub fn run_summary(r: &RunRecord) -> Value {
    json!({"run_id": r.run_id, "sop": r.sop, "status": r.status, "source": r.source,
        "topic": r.topic, "started_at": r.started_at})
}

pub async fn runs(
    State(state): State<AppState>,
    _: AdminAccess,
    Query(params): Query<RunsParams>,
) -> Result<Json<Value>, ApiError> {
    let status = status_param(params.status.as_deref(), RunStatus::parse)?;
    let query =
        RunQuery { sop: params.sop, status, limit: params.limit.unwrap_or(100).min(10_000), ..Default::default() };
    let runs = state.store.list_runs(&query).await.map_err(|_| ApiError::store_unavailable())?;
    Ok(Json(json!({"runs": runs.iter().map(run_summary).collect::<Vec<_>>()})))
}

pub async fn run(
    State(state): State<AppState>,
    _: AdminAccess,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.get_run(&id).await.map_err(OpError::store)? {
        Some(run) => Ok(Json(json!(run))),
        None => Err(OpError::not_found(Thing::Run, id).into()),
    }
}

#[derive(Deserialize)]
pub struct AuditParams {
    run_id: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

pub async fn audit(
    State(state): State<AppState>,
    _: AdminAccess,
    Query(params): Query<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let query =
        AuditQuery { run_id: params.run_id, after_seq: params.after, limit: params.limit.unwrap_or(1000).min(100_000) };
    let records = state.store.audit(&query).await.map_err(|_| ApiError::store_unavailable())?;
    Ok(Json(json!({ "records": records })))
}

/// `POST /admin/sops/{name}/run`: a manual trigger; the body, if any, is the
/// payload.
pub async fn fire(
    State(state): State<AppState>,
    AdminAccess { by }: AdminAccess,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let payload = read_json(body, &headers, &state.config).await?;
    Ok(Json(operations::runs::fire(&state.dispatcher, &name, payload, by, Utc::now()).await?))
}

/// The body of a cancel: nothing, or `{"reason"?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

fn cancel_body(payload: Payload) -> Result<CancelBody, ApiError> {
    let invalid = |why: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body")
            .with("detail", format!("expected no body or {{\"reason\"?: \"…\"}}: {why}"))
    };
    match payload.to_value() {
        Value::Null => Ok(CancelBody::default()),
        // Only an object: serde would also read a list as the struct.
        value @ Value::Object(_) => serde_json::from_value(value).map_err(|e| invalid(e.to_string())),
        other => Err(invalid(format!("got {other}"))),
    }
}

/// `POST /admin/runs/{id}/cancel` ([`crate::operations::runs::cancel`]):
/// 200 with the cancelled run, what was withdrawn and what was promoted;
/// 409 `run_not_cancellable` with the `status` of a run that has ended; 404
/// `run_not_found`.
pub async fn cancel(
    State(state): State<AppState>,
    AdminAccess { by }: AdminAccess,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Body,
) -> Result<Json<Cancelled>, ApiError> {
    let CancelBody { reason } = cancel_body(read_json(body, &headers, &state.config).await?)?;
    let actor = Actor { by, interface: Interface::AdminApi };
    let request = CancelRequest { run_id, reason };
    Ok(Json(operations::runs::cancel(&state.dispatcher, request, &actor, Utc::now()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_takes_no_body_or_a_reason() {
        assert_eq!(cancel_body(Payload::Json(Value::Null)).unwrap().reason, None);
        assert_eq!(cancel_body(Payload::Json(json!({"reason": null}))).unwrap().reason, None);
        assert_eq!(
            cancel_body(Payload::Json(json!({"reason": "wrong SOP"}))).unwrap().reason.as_deref(),
            Some("wrong SOP")
        );
        for bad in [json!({"why": "x"}), json!([]), json!("stop"), json!({"reason": 5})] {
            let e = cancel_body(Payload::Json(bad.clone())).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
