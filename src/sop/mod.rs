//! SOP directories (DESIGN §2.2): loading `SOP.toml` and `SOP.md`, and
//! validation that fails closed.
//! (Skeleton: loading is being written.)

pub mod condition;
pub mod model;

use std::path::{Path, PathBuf};

pub use model::*;

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

/// Loads every `<dir>/<name>/SOP.toml`, sorted by directory name.
pub fn load_dir(_dir: &Path, _default_mode: ExecutionMode) -> LoadReport {
    todo!()
}

#[cfg(test)]
pub mod test_support;
