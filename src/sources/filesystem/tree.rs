//! What changed in a watched tree: the states a scan found, compared with
//! the states the store holds, as one [`Change`] per difference.
//!
//! Kept free of I/O so the rules are tested on their own: a path found and
//! not known is `created`, known and gone is `deleted`, known with other
//! content is `modified`; a known file gone and a new one found in the same
//! comparison with the same size, content and mtime is one `renamed`
//! (rename(2) keeps the mtime, so two unrelated files with equal content
//! are not taken for a move unless their times agree too). A file whose
//! mtime moved but whose content did not is [`Change::Touched`]: its state
//! is stored again, and nothing starts.

use std::collections::{BTreeMap, HashMap};

use crate::sop::FsChange;
use crate::store::FileState;

/// Files by path, as stored or as found.
pub type States = BTreeMap<String, FileState>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created { path: String, state: FileState },
    Modified { path: String, state: FileState },
    Deleted { path: String, last: FileState },
    Renamed { from: String, path: String, state: FileState },
    Touched { path: String, state: FileState },
}

impl Change {
    /// The change's kind in a payload; `None` for a touch, which starts nothing.
    pub fn kind(&self) -> Option<FsChange> {
        match self {
            Change::Created { .. } => Some(FsChange::Created),
            Change::Modified { .. } => Some(FsChange::Modified),
            Change::Deleted { .. } => Some(FsChange::Deleted),
            Change::Renamed { .. } => Some(FsChange::Renamed),
            Change::Touched { .. } => None,
        }
    }

    /// The file's state the change is about: the new one, or for a
    /// deletion the last one seen.
    pub fn state(&self) -> &FileState {
        match self {
            Change::Deleted { last, .. } => last,
            Change::Created { state, .. }
            | Change::Modified { state, .. }
            | Change::Renamed { state, .. }
            | Change::Touched { state, .. } => state,
        }
    }

    /// The path the change is about now (a rename's new path).
    pub fn path(&self) -> &str {
        match self {
            Change::Created { path, .. }
            | Change::Modified { path, .. }
            | Change::Deleted { path, .. }
            | Change::Renamed { path, .. }
            | Change::Touched { path, .. } => path,
        }
    }
}

/// The part of the tree a scan looked at: the whole of it, or the given
/// paths (each a file or a directory, and everything under it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Under(Vec<String>),
}

impl Scope {
    pub fn holds(&self, path: &str) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Under(prefixes) => prefixes.iter().any(|p| is_at_or_under(path, p)),
        }
    }
}

pub fn is_at_or_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')) || prefix.is_empty()
}

/// Every difference between `known` and `found` within `scope`, renames
/// paired, in path order (a rename at its new path).
pub fn compare(known: &States, found: &States, scope: &Scope) -> Vec<Change> {
    let mut created = Vec::new();
    let mut changes = Vec::new();
    for (path, state) in found {
        match known.get(path) {
            None => created.push((path, state)),
            Some(old) if old.sha256 != state.sha256 || old.size != state.size => {
                changes.push(Change::Modified { path: path.clone(), state: state.clone() });
            }
            Some(old) if old.mtime != state.mtime => {
                changes.push(Change::Touched { path: path.clone(), state: state.clone() });
            }
            Some(_) => {}
        }
    }
    let mut gone: HashMap<(&str, u64, i64), Vec<&String>> = HashMap::new();
    let mut deleted = Vec::new();
    for (path, last) in known {
        if scope.holds(path) && !found.contains_key(path) {
            gone.entry(identity(last)).or_default().push(path);
            deleted.push((path, last));
        }
    }
    // Each list in `gone` is in path order; the earliest path is paired
    // first, so the pairing does not depend on hashing.
    for list in gone.values_mut() {
        list.reverse();
    }
    let mut moved = std::collections::HashSet::new();
    for (path, state) in created {
        match gone.get_mut(&identity(state)).and_then(Vec::pop) {
            Some(from) => {
                moved.insert(from.as_str());
                changes.push(Change::Renamed { from: from.clone(), path: path.clone(), state: state.clone() });
            }
            None => changes.push(Change::Created { path: path.clone(), state: state.clone() }),
        }
    }
    for (path, last) in deleted {
        if !moved.contains(path.as_str()) {
            changes.push(Change::Deleted { path: path.clone(), last: last.clone() });
        }
    }
    changes.sort_by(|a, b| a.path().cmp(b.path()));
    changes
}

/// What a moved file keeps: its content, size and mtime.
fn identity(state: &FileState) -> (&str, u64, i64) {
    (state.sha256.as_str(), state.size, state.mtime.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn state(sha: &str, size: u64, secs: i64) -> FileState {
        FileState { size, mtime: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(), sha256: sha.into() }
    }

    fn tree(files: &[(&str, FileState)]) -> States {
        files.iter().map(|(p, s)| (p.to_string(), s.clone())).collect()
    }

    #[test]
    fn each_difference_is_one_change() {
        let known = tree(&[("/d/a", state("aa", 1, 0)), ("/d/b", state("bb", 2, 0)), ("/d/c", state("cc", 3, 0))]);
        let found = tree(&[("/d/a", state("aa", 1, 0)), ("/d/b", state("b2", 2, 5)), ("/d/n", state("nn", 4, 9))]);
        assert_eq!(
            compare(&known, &found, &Scope::Everything),
            vec![
                Change::Modified { path: "/d/b".into(), state: state("b2", 2, 5) },
                Change::Deleted { path: "/d/c".into(), last: state("cc", 3, 0) },
                Change::Created { path: "/d/n".into(), state: state("nn", 4, 9) },
            ]
        );
    }

    #[test]
    fn a_move_is_one_rename_with_both_paths() {
        let known = tree(&[("/d/in/report.csv", state("r", 10, 3))]);
        let found = tree(&[("/d/done/report.csv", state("r", 10, 3))]);
        assert_eq!(
            compare(&known, &found, &Scope::Everything),
            vec![Change::Renamed {
                from: "/d/in/report.csv".into(),
                path: "/d/done/report.csv".into(),
                state: state("r", 10, 3)
            }]
        );
    }

    #[test]
    fn equal_content_with_another_mtime_is_a_delete_and_a_create() {
        let known = tree(&[("/d/a", state("same", 1, 0))]);
        let found = tree(&[("/d/b", state("same", 1, 7))]);
        let kinds: Vec<_> = compare(&known, &found, &Scope::Everything).iter().map(Change::kind).collect();
        assert_eq!(kinds, vec![Some(FsChange::Deleted), Some(FsChange::Created)]);
    }

    #[test]
    fn copies_of_one_file_pair_once_each_in_path_order() {
        let known = tree(&[("/d/1", state("x", 1, 0)), ("/d/2", state("x", 1, 0))]);
        let found = tree(&[("/e/1", state("x", 1, 0)), ("/e/2", state("x", 1, 0)), ("/e/3", state("x", 1, 0))]);
        assert_eq!(
            compare(&known, &found, &Scope::Everything),
            vec![
                Change::Renamed { from: "/d/1".into(), path: "/e/1".into(), state: state("x", 1, 0) },
                Change::Renamed { from: "/d/2".into(), path: "/e/2".into(), state: state("x", 1, 0) },
                Change::Created { path: "/e/3".into(), state: state("x", 1, 0) },
            ]
        );
    }

    #[test]
    fn a_new_mtime_on_the_same_content_is_only_a_touch() {
        let known = tree(&[("/d/a", state("aa", 1, 0))]);
        let found = tree(&[("/d/a", state("aa", 1, 60))]);
        let changes = compare(&known, &found, &Scope::Everything);
        assert_eq!(changes, vec![Change::Touched { path: "/d/a".into(), state: state("aa", 1, 60) }]);
        assert_eq!(changes[0].kind(), None);
    }

    #[test]
    fn known_files_outside_the_scope_are_not_taken_for_deleted() {
        let known = tree(&[("/d/x/1", state("1", 1, 0)), ("/d/xy", state("2", 1, 0)), ("/d/y/3", state("3", 1, 0))]);
        let found = tree(&[]);
        let scope = Scope::Under(vec!["/d/x".into()]);
        let changes = compare(&known, &found, &scope);
        assert_eq!(changes, vec![Change::Deleted { path: "/d/x/1".into(), last: state("1", 1, 0) }]);
    }

    #[test]
    fn at_or_under_is_by_whole_components() {
        assert!(is_at_or_under("/d/x", "/d/x"));
        assert!(is_at_or_under("/d/x/1", "/d/x/"));
        assert!(!is_at_or_under("/d/xy", "/d/x"));
        assert!(!is_at_or_under("/d", "/d/x"));
    }
}
