//! `/admin/outbox`: the envelopes waiting, delivered or dead, and a retry for
//! dead letters (`fanin outbox list|retry`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::status_param;
use super::extract::{AdminAccess, Path, Query};
use super::{ApiError, AppState};
use crate::store::{Batch, OutboxStatus, StoreError, Write};

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

/// Dead → pending, due now; the worker is woken.
pub async fn retry(
    State(state): State<AppState>,
    _: AdminAccess,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = &state.store;
    if store.outbox_get(&id).await.map_err(|_| ApiError::store_unavailable())?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "envelope_not_found").with("id", id));
    }
    let revive = Batch { idempotency: None, writes: vec![Write::Revive { id: id.clone(), at: Utc::now() }] };
    match store.commit(revive).await {
        Ok(_) => {
            state.dispatcher.outbox_ready.notify_waiters();
            Ok(Json(json!({"id": id, "status": "pending"})))
        }
        Err(StoreError::Conflict(reason)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "not_dead").with("id", id).with("detail", reason))
        }
        Err(_) => Err(ApiError::store_unavailable()),
    }
}
