//! What operators (and pairing agents) do to fanin's state, written once for
//! every interface: the admin API (`gateway`) and the command line (`cli`)
//! are thin adapters that parse a request, call one function here and
//! translate its answer. So a rule (who may cancel what, what a dead-letter
//! retry resets, how short a token prefix may be) cannot differ between
//! them.
//!
//! - `runs`: manual fires and cancelling a run.
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

/// Who performs an operation and through which interface, as the audit
/// records it writes name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `admin:<address>` for a loopback admin, the token subject for a
    /// remote one, `cli` for the command line without a daemon.
    pub by: String,
    pub interface: Interface,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// `/admin/*`, also when the CLI called it on a running daemon.
    AdminApi,
    /// The CLI, in its own process (no daemon was listening).
    Cli,
    /// The console's forms (`/ui`), under the `/admin` access rule.
    Console,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::AdminApi => "admin_api",
            Interface::Cli => "cli",
            Interface::Console => "console",
        }
    }
}

impl Actor {
    /// The CLI acting on the store itself.
    pub fn cli() -> Actor {
        Actor { by: "cli".into(), interface: Interface::Cli }
    }
}
