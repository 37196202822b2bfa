//! The SOP language (docs/configuration.md): the model, `SOP.toml` and
//! `SOP.md` read from the files a [`SopFiles`] hands in, validation that
//! fails closed, and the condition language. The rules, and where fanin's
//! format differs from ZeroClaw's, are documented in `load.rs`; reading a
//! directory from disk is the runtime's (`fanin::sop::load_dir`).

pub mod condition;
mod load;
pub mod model;
mod steps_md;

pub use steps_md::ZEROCLAW_IGNORED_MD_KEYS;

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

pub use load::load_tree;

/// The files the SOP loader reads, handed in: the runtime reads the disk,
/// tests hand in text (`test_support::MemFiles`), and the loader itself
/// stays a function of what it is given.
pub trait SopFiles {
    /// The directories directly under `dir`, or why `dir` cannot be read.
    fn subdirs(&self, dir: &Path) -> Result<Vec<PathBuf>, String>;
    /// The text of the regular file `file`: `None` when there is none,
    /// `Err` with the reason when it cannot be read.
    fn read(&self, file: &Path) -> Option<Result<String, String>>;
}

/// A peripheral board name: it appears in event topics (`board/signal`) and
/// URL paths.
pub fn is_board_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
