//! `/admin/outbox`: the envelopes waiting, delivered, dead or withdrawn
//! (their run was cancelled), and a retry for dead letters (`fanin outbox
//! list|retry`).

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::status_param;
use super::extract::{AdminAccess, Path, Query};
use super::{ApiError, AppState};
use crate::operations::{self, outbox::Revived};
use crate::store::OutboxStatus;

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    _: AdminAccess,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let status = status_param(params.status.as_deref(), OutboxStatus::parse)?;
    let entries = state
        .store
        .outbox_list(status, params.limit.unwrap_or(1000))
        .await
        .map_err(|_| ApiError::store_unavailable())?;
    Ok(Json(json!({ "outbox": entries })))
}

/// Dead → pending, due now ([`crate::operations::outbox::retry`]); the
/// worker is woken.
pub async fn retry(
    State(state): State<AppState>,
    _: AdminAccess,
    Path(id): Path<String>,
) -> Result<Json<Revived>, ApiError> {
    let revived = operations::outbox::retry(state.store.as_ref(), &id, Utc::now()).await?;
    state.dispatcher.outbox_ready.notify_waiters();
    Ok(Json(revived))
}
