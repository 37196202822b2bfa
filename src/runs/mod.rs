//! Runs after their start, in the runtime: the store writes that take a run
//! from one state to the next (`lifecycle`). The states, their moves and the
//! approval gates are fanin-core's (`fanin_core::runs`, re-exported here).

pub mod lifecycle;

pub use fanin_core::runs::*;
