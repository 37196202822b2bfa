//! Runs: the states a run moves through and which moves are allowed
//! (`status`), where approval gates sit (`gates`), the run as stored
//! (`record`), where a run goes next and the writes that take it there
//! (`lifecycle`), and planning: an event or a request, the SOP, `now` and
//! fresh ids in, the writes and the replies out (`plan`). The dispatcher
//! drives these; nothing here does I/O.

pub mod gates;
pub mod lifecycle;
pub mod plan;
pub mod record;
pub mod status;

pub use record::RunRecord;
pub use status::RunStatus;
