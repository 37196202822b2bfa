//! Envelopes (DESIGN §7): how a run or an event leaves fanin. Building them is
//! pure; delivery is elsewhere.

pub mod legacy;
pub mod schema;
