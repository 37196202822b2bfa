//! The one dispatcher (ARCHITECTURE.md): every source's events take this
//! path. It drives fanin-core: `index` finds the candidate triggers of an
//! event without scanning every SOP, `matching` filters them by condition
//! (and explains why not), `admission` decides per SOP whether a run starts,
//! waits or is skipped, `runs::plan` writes what that means; `dispatcher`
//! and `advance` read the store, commit and answer — nothing else here;
//! `holds` shares a replica's admission holds among its requests; `settle`
//! finishes a commit and its follow-up whoever stops waiting.

pub mod advance;
pub mod dispatcher;
mod holds;
mod settle;

// The pure steps of the path are fanin-core's, named here where they run.
pub use fanin_core::admission;
pub use fanin_core::matching::{self, index};

pub use advance::{Advanced, Lease, Prepared, RunInput, Withdrawn};
pub use dispatcher::{DispatchError, DispatchReport, DispatchSettings, Dispatcher, Outcome, Refusal, RunOutcome};
pub use matching::{Catalog, Explanation};
