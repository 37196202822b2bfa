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
pub mod gateway;
pub mod http;
pub mod ids;
pub mod operations;
pub mod registries;
pub mod sop;
pub mod sources;
pub mod store;

// The pure core under its own names, so the runtime and its tests say
// `crate::event` as they say `crate::store`.
#[cfg(test)]
pub(crate) use fanin_core::proptest_support;
pub use fanin_core::{checks, cron, envelope, event, net, records, runs, topic};
#[cfg(test)]
pub(crate) mod test_support;
