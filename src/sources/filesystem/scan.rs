//! Reading the watched trees from disk: each regular file's size, mtime and
//! SHA-256, for [`tree::compare`](super::tree::compare) to set against what
//! the store holds. Blocking; the session runs it on the blocking pool.
//!
//! - **Hashing only what moved.** A file whose size and mtime are those
//!   stored keeps its stored digest, so a start over a large quiet tree
//!   reads directories, not contents.
//! - **Never through a link.** Symbolic links are not followed. One whose
//!   target lies inside a watched root is left alone (the target is watched
//!   where it is); one leading out of every root is an [`Escape`], which
//!   the source refuses. Files are opened with `O_NOFOLLOW`, so a file
//!   swapped for a link between the look and the read is not read.
//! - **Unreadable is not deleted.** A file or directory that cannot be read
//!   now keeps the state stored for it (with a warning), so a permission
//!   change does not start `deleted` runs.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::tree::{is_at_or_under, Scope, States};
use super::Settings;
use crate::store::FileState;

/// A symbolic link in a watched tree whose target is outside every root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escape {
    pub path: String,
    pub target: String,
}

/// What a scan found in its scope.
#[derive(Debug, Default)]
pub struct Found {
    pub states: States,
    pub escapes: Vec<Escape>,
}

/// Scans `scope` of the watched trees. `known` supplies digests for files
/// that did not change and the states kept for what cannot be read.
pub fn scan(settings: &Settings, known: &States, scope: &Scope) -> Found {
    let mut scan = Scanner { settings, known, found: Found::default() };
    match scope {
        Scope::Everything => {
            for root in &settings.roots {
                scan.walk(&root.path);
            }
        }
        Scope::Under(paths) => {
            for path in paths {
                scan.look_at(Path::new(path));
            }
        }
    }
    scan.found
}

struct Scanner<'a> {
    settings: &'a Settings,
    known: &'a States,
    found: Found,
}

impl Scanner<'_> {
    /// One path a watch reported: gone (nothing to add), a file, a link,
    /// or a directory to walk.
    fn look_at(&mut self, path: &Path) {
        let Some(text) = path.to_str() else { return };
        if !self.settings.roots.iter().any(|root| is_at_or_under(text, root.text())) {
            return;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                if self.settings.is_root(text) || self.settings.recursive {
                    self.walk(path);
                }
            }
            Ok(meta) if meta.file_type().is_symlink() => self.link(text),
            Ok(meta) if meta.is_file() => self.file(text, &meta),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.unreadable(text, &e),
        }
    }

    fn walk(&mut self, dir: &Path) {
        let base = dir.to_str().unwrap_or_default();
        let depth = if self.settings.recursive { usize::MAX } else { 1 };
        let walker = walkdir::WalkDir::new(dir).follow_links(false).max_depth(depth);
        for entry in walker {
            match entry {
                Ok(entry) => {
                    let Some(text) = entry.path().to_str() else { continue };
                    let kind = entry.file_type();
                    if kind.is_symlink() && entry.depth() > 0 {
                        self.link(text);
                    } else if kind.is_file() {
                        match entry.metadata() {
                            Ok(meta) => self.file(text, &meta),
                            Err(e) => self.unreadable(text, &io::Error::other(e.to_string())),
                        }
                    }
                }
                Err(e) => {
                    let path = e.path().and_then(Path::to_str).unwrap_or(base).to_string();
                    if e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound) {
                        continue;
                    }
                    self.unreadable(&path, &io::Error::other(e.to_string()));
                }
            }
        }
    }

    fn file(&mut self, path: &str, meta: &Metadata) {
        if !self.settings.admits(path) {
            return;
        }
        let mtime = mtime_of(meta);
        let size = meta.len();
        if let Some(known) = self.known.get(path).filter(|k| k.size == size && k.mtime == mtime) {
            self.found.states.insert(path.to_string(), known.clone());
            return;
        }
        match digest(Path::new(path)) {
            Ok((sha256, read)) => {
                self.found.states.insert(path.to_string(), FileState { size: read, mtime, sha256 });
            }
            // Deleted or swapped for a link since it was listed: the next
            // look at the path sees what it is now.
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {}
            Err(e) => self.unreadable(path, &e),
        }
    }

    fn link(&mut self, path: &str) {
        if !self.settings.admits(path) {
            return;
        }
        let Ok(target) = fs::canonicalize(path) else { return };
        let inside = self.settings.roots.iter().any(|root| target.starts_with(&root.resolved));
        if !inside {
            self.found.escapes.push(Escape { path: path.to_string(), target: target.display().to_string() });
        }
    }

    /// Keeps what is stored at or under `path`: it is there, unread.
    fn unreadable(&mut self, path: &str, error: &io::Error) {
        tracing::warn!(source = super::SOURCE, path, "cannot read: {error}; keeping its last known state");
        for (known_path, state) in self.known.range(path.to_string()..) {
            if !is_at_or_under(known_path, path) {
                break;
            }
            self.found.states.insert(known_path.clone(), state.clone());
        }
    }
}

/// The mtime at the store's precision (microseconds), so a state read
/// back compares equal to the file it was taken from.
pub fn mtime_of(meta: &Metadata) -> DateTime<Utc> {
    let at: DateTime<Utc> = meta.modified().map(DateTime::from).unwrap_or(DateTime::UNIX_EPOCH);
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// Opens a file for reading without following a link in its last
/// component.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

/// The file's SHA-256 (hex) and how many bytes it held.
fn digest(path: &Path) -> io::Result<(String, u64)> {
    let mut file = open_no_follow(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// The file's text, when it is UTF-8 without NUL bytes, at most `max`
/// bytes, and still the content whose digest is `sha256`; else `None`.
pub fn text_content(path: &Path, max: usize, sha256: &str) -> Option<String> {
    let file = open_no_follow(path).ok()?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() > max || bytes.contains(&0) || hex::encode(Sha256::digest(&bytes)) != sha256 {
        return None;
    }
    String::from_utf8(bytes).ok()
}
