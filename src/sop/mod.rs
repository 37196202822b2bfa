//! SOP directories (docs/configuration.md): loading `SOP.toml` and `SOP.md`, and
//! validation that fails closed. The rules, and where fanin's format
//! differs from ZeroClaw's, are documented in `load.rs`.

pub mod condition;
mod load;
pub mod model;
mod steps_md;

use std::path::{Path, PathBuf};

pub use model::*;

/// A peripheral signal name: non-empty, without `/`, `+`, `#` or
/// whitespace, so `board/signal` is one unambiguous topic. SOP triggers, the
/// serial reader and the HTTP bridge all hold signals to this.
pub fn is_signal_name(signal: &str) -> bool {
    !signal.is_empty() && !signal.contains(['/', '+', '#']) && !signal.chars().any(char::is_whitespace)
}

/// A problem with one SOP file: the file, the key (`triggers[1].condition`)
/// and the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct SopIssue {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for SopIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
    }
}

/// What loading a SOP directory found. The daemon starts only when `errors`
/// is empty; a SOP with an error is never in `sops`.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sops: Vec<Sop>,
    pub errors: Vec<SopIssue>,
    pub warnings: Vec<SopIssue>,
}

/// Loads every `<dir>/<name>/SOP.toml`, sorted by directory name. A
/// missing or unreadable `dir` is an error naming it.
pub fn load_dir(dir: &Path, default_mode: ExecutionMode) -> LoadReport {
    load::load_dir(dir, default_mode)
}

#[cfg(test)]
pub mod test_support;
