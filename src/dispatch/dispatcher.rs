//! The dispatcher.
//! (Skeleton.)

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Deferred,
    Coalesced,
    Skipped,
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOutcome {
    pub sop: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug)]
pub enum DispatchReport {}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub struct Dispatcher {}
