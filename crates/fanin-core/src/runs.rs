//! Runs after their start: the states a run moves through, which moves are
//! allowed, and where approval gates sit. The runtime's life cycle driver
//! (approvals, agent loop, headless pending steps) builds on this.

pub mod gates;
pub mod record;
pub mod status;

pub use record::RunRecord;
pub use status::RunStatus;
