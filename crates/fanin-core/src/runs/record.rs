//! One run as the store keeps it: what the admin API lists, what envelopes
//! are built from, and what the life cycle moves from state to state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunStatus;
use crate::event::{Request, Source};

/// One run as stored. A deferred trigger is a run in status `deferred`, so
/// the backlog is simply the deferred runs in creation order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub sop: String,
    pub sop_version: String,
    pub status: RunStatus,
    /// 0-based index of the trigger in SOP.toml.
    pub trigger_index: u32,
    /// The trigger, described (`mqtt sensors/+/alert if $.severity >= 2`).
    pub trigger: String,
    pub source: Source,
    /// Topic or path of the event.
    pub topic: String,
    pub event_id: String,
    /// The event payload, capped to `untrusted_payload_max_bytes`.
    pub payload: Value,
    /// Webhooks: the request's query and the headers fanin passes on; AMQP:
    /// the delivery's properties as `headers`. Each capped as the payload
    /// is. `None` for other sources and for runs stored before fanin kept
    /// them (schema 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// The session the webhook body continued (`session_id` or
    /// `context.memory`), as the contract's memory; `None`: a new session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Value>,
    pub client: Option<String>,
    pub idempotency_key: Option<String>,
    /// When the trigger was accepted (also for deferred runs).
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the run reached a terminal state; cooldown counts from here.
    pub finished_at: Option<DateTime<Utc>>,
    /// How many later triggers were merged into this one (coalesce policy).
    pub coalesced: u32,
    /// 0-based index of the step the run is at: the one waiting for
    /// approval, pending for an agent, or being executed. Equal to the number
    /// of steps once they are all done. Runs delivered as one envelope stay 0.
    pub step: u32,
}
