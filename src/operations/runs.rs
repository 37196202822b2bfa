//! Runs started by an operator: a manual fire of a SOP, admitted by the
//! dispatcher like any event.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{OpError, Thing};
use crate::dispatch::dispatcher::summary;
use crate::dispatch::{DispatchError, DispatchReport, Dispatcher};
use crate::event::{Event, Payload, Source};

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
    let mut event = Event::new(Source::Manual, sop, payload, now);
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
