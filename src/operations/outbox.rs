//! Queueing a dead letter for delivery again (`fanin outbox retry`,
//! `POST /admin/outbox/{id}/retry`).
//!
//! Only a dead letter can be: it becomes pending, due at once, with its
//! attempts reset; its last error stays until the next attempt replaces
//! it. A daemon's outbox worker takes it on its next round (the gateway
//! wakes it); with no daemon running, the next daemon does.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ConflictKind, OpError, Thing};
use crate::store::{Batch, OutboxStatus, Store, StoreError, Write};

/// A dead letter queued again.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Revived {
    pub id: String,
    pub status: OutboxStatus,
}

/// Queues dead letter `id` again, due at `now`.
pub async fn retry(store: &dyn Store, id: &str, now: DateTime<Utc>) -> Result<Revived, OpError> {
    let Some(entry) = store.outbox_get(id).await.map_err(OpError::store)? else {
        return Err(OpError::not_found(Thing::Envelope, id));
    };
    let revive = Batch { idempotency: None, writes: vec![Write::Revive { id: id.to_string(), at: now }] };
    match store.commit(revive).await {
        Ok(_) => Ok(Revived { id: id.to_string(), status: OutboxStatus::Pending }),
        Err(StoreError::Conflict(reason)) => {
            // The status read above, unless the entry moved since: the
            // store's reason says what it is now.
            let status = (entry.status != OutboxStatus::Dead).then(|| entry.status.as_str().to_string());
            Err(OpError::Conflict {
                what: Thing::Envelope,
                id: id.to_string(),
                kind: ConflictKind::NotDead,
                status,
                reason,
            })
        }
        Err(e) => Err(OpError::store(e)),
    }
}
