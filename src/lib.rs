//! fanin turns outside events into durable, audited runs of Standard
//! Operating Procedures. The binary (`main.rs`) is a thin shell over this
//! library; whole-daemon tests drive the binary.
//!
//! Layers, in the direction data flows (see ARCHITECTURE.md):
//! `sources` and `gateway` receive events, `dispatch` matches and admits them,
//! `store` makes them durable, `runs` and `envelope` carry them onward,
//! `operations` is what operators do to all of it, and the admin API and
//! `cli` are its two interfaces.

pub mod backoff;
pub mod causes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod dispatch;
pub mod envelope;
pub mod event;
pub mod gateway;
pub mod operations;
#[cfg(test)]
pub(crate) mod proptest_support;
pub mod runs;
pub mod sop;
pub mod sources;
pub mod store;
