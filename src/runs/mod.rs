//! Runs after their start: the states a run moves through and which moves
//! are allowed. The life cycle driver (approvals, agent loop, headless
//! pending steps) builds on this.

pub mod status;

pub use status::RunStatus;
