//! The one dispatcher (DESIGN §1): every source's events take this path.
//!
//! `index` finds the candidate triggers of an event without scanning every
//! SOP, conditions filter them, `admission` decides per SOP whether a run
//! starts, waits or is skipped, and `dispatcher` commits the outcome to the
//! store before anyone is answered. `index` and `admission` are pure.

pub mod admission;
pub mod dispatcher;
pub mod index;
pub mod topic;

pub use dispatcher::{DispatchError, DispatchReport, Dispatcher, Outcome, RunOutcome};
