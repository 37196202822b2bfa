//! What operators (and pairing agents) do to fanin's state, written once for
//! every interface: the admin API (`gateway`) and the command line (`cli`)
//! are thin adapters that parse a request, call one function here and
//! translate its answer. So a rule (what a dead-letter retry resets, how short a
//! token prefix may be) cannot differ between
//! them.
//!
//! - `runs`: manual fires.
//! - `approvals`: the runs waiting at a gate, approve and deny.
//! - `outbox`: queueing a dead letter again.
//! - `pairing`: pairing codes and their key, redeeming a code for a token.
//! - `tokens`: the token format, checking, listing and revoking tokens.
//!
//! One function per operation, with typed inputs. Each takes what it needs
//! and nothing more: the store for records, the dispatcher when admission
//! must follow a run's move, and `now` when it writes a time, so the same
//! call works in the daemon and in a CLI process with no daemon running.
//! Failures are [`OpError`]s.
//!
//! This layer sits below `gateway` and `cli` and imports neither (nor
//! `daemon`): only the store, the dispatcher, runs, envelopes, config, SOPs
//! and events.

pub mod approvals;
mod error;
pub mod outbox;
pub mod pairing;
pub mod runs;
pub mod tokens;

pub use error::{ConflictKind, OpError, Thing};
