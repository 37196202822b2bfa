//! fanin turns outside events into durable, audited runs of Standard
//! Operating Procedures. This is the runtime: everything that reads, writes,
//! listens or waits. What decides — the SOP language, matching, admission,
//! run planning, envelopes — is the pure crate `fanin_core`, re-exported
//! below under its own names. The binary (`main.rs`) is a thin shell over
//! this library; whole-daemon tests drive the binary.
//!
//! Layers, lowest first (ARCHITECTURE.md has the table, `tests/tidy.rs`
//! holds it): the core's modules and `backoff`, `causes`, `ids`, `config`,
//! `sop` < `store` < `registries` < `http` < `dispatch` (the driver over
//! the core's planning) < `deliver`, `sources` < `operations` < `gateway` <
//! `daemon` < `cli`.

pub mod backoff;
pub mod causes;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod dispatch;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod operations;
pub mod registries;
pub mod sop;
pub mod sources;
pub mod store;
pub mod trust;

// The pure core under its own names, so the runtime and its tests say
// `crate::event` as they say `crate::store`.
#[cfg(test)]
pub(crate) use fanin_core::proptest_support;
pub use fanin_core::{checks, cron, envelope, event, net, records, routing_key, runs, topic};
#[cfg(test)]
pub(crate) mod test_support;
