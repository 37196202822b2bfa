//! `/admin/*`: runs, audit and manual fires for operators. Loopback only,
//! unless `allow_remote_admin`, and then a bearer token is required too
//! (the rule is [`AdminAccess`], which every handler here takes). What a
//! handler does is an operation ([`crate::operations`]); the handler reads
//! the request and answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{AdminAccess, Path, Query};
use super::ingest::read_json;
use super::{ApiError, AppState};
use crate::operations::{self, OpError, Thing};
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
    let query = RunQuery { sop: params.sop, status, limit: params.limit.unwrap_or(100).min(10_000) };
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
