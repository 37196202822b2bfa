//! The store's shared-memory index (`<store>-shm`), and why fanin checks
//! it is writable before every use.
//!
//! In WAL mode every process using the file maps its `-shm` into memory,
//! shared, and writes it there: the log's index, the readers' marks, the
//! checkpoint's progress. A write into a mapped page is not a system call
//! that can fail: when the kernel cannot take it (the file was made
//! immutable or its filesystem went read-only, the usual reaction of a
//! filesystem to an I/O error), it stops the process with SIGBUS, and
//! SQLite never sees an error it could return. So fanin asks first: every
//! transaction of the writer and every checkpoint starts with a check that
//! the file can be written, and so does every read (a read writes its mark
//! there), unless a check passed within the last [`READ_RECHECK`]; while
//! the file cannot be written the store fails as `Unavailable` (a 503, a
//! failing `/ready`). The process stays up and goes on by itself once the
//! file is writable again.
//!
//! What a check cannot catch (the file truncated by another program, or
//! made unwritable between a check and the write, a window about one commit
//! long) still ends the process with SIGBUS; [`report_sigbus`] makes it say
//! why on its way out.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::store::files;
use crate::store::StoreError;

/// How long a passed check vouches for reads. A read writes the `-shm` at
/// most once per commit (its mark), and each commit is checked itself; this
/// spares the hot path (the bearer lookup of every request) a system call
/// per read for a window no longer than a commit.
const READ_RECHECK: Duration = Duration::from_millis(1);

/// Checks, by path, that the `-shm` of one store can be written.
#[derive(Debug)]
pub(super) struct ShmGuard {
    db: PathBuf,
    shm: PathBuf,
    base: Instant,
    /// Nanoseconds after `base` until which reads need no check.
    reads_ok_until: AtomicU64,
}

impl ShmGuard {
    pub fn new(db: &Path) -> ShmGuard {
        let shm = files::shm_path(db);
        remember_for_sigbus(&shm);
        ShmGuard { db: db.to_path_buf(), shm, base: Instant::now(), reads_ok_until: AtomicU64::new(0) }
    }

    /// [`ShmGuard::check`] for a read: a check that passed within
    /// [`READ_RECHECK`] answers for it.
    pub fn check_for_read(&self) -> Result<(), StoreError> {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now < self.reads_ok_until.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.check()?;
        self.reads_ok_until.store(now.saturating_add(READ_RECHECK.as_nanos() as u64), Ordering::Relaxed);
        Ok(())
    }

    /// `Unavailable` while the `-shm` cannot be written. A missing file is
    /// no danger here: nothing of it is mapped that could fault.
    pub fn check(&self) -> Result<(), StoreError> {
        match files::check_writable(&self.shm) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Unavailable(format!(
                "store {}: {} is not writable ({e}); the store is not used until it is, since SQLite writes that \
                 file through a memory map, where a refused write would stop the process",
                self.db.display(),
                self.shm.display()
            ))),
        }
    }
}

/// The `-shm` the SIGBUS report names: that of the first store this
/// process opened.
static SHM_FOR_SIGBUS: OnceLock<CString> = OnceLock::new();

fn remember_for_sigbus(shm: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = CString::new(shm.as_os_str().as_bytes()) {
            let _ = SHM_FOR_SIGBUS.set(c);
        }
    }
    #[cfg(not(unix))]
    let _ = shm;
}

/// Installs a SIGBUS handler that writes what most likely happened to
/// stderr; the signal then takes its default course (the process ends, as
/// killed by SIGBUS). Nothing acknowledged is lost: every acknowledged
/// request was committed before its answer was sent.
pub fn report_sigbus() {
    #[cfg(unix)]
    // SAFETY: the handler only calls async-signal-safe functions (write) and
    // reads a static that was set before it could run; SA_RESETHAND restores
    // the default action, so the faulting access repeated on return ends the
    // process as SIGBUS would have.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

#[cfg(unix)]
extern "C" fn on_sigbus(_signal: libc::c_int) {
    fn say(bytes: &[u8]) {
        // SAFETY: write(2) on stderr with a valid buffer is async-signal-safe.
        let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    }
    say(b"fanin: fatal: SIGBUS: a page of a memory-mapped file could not be read or written. ");
    if let Some(shm) = SHM_FOR_SIGBUS.get() {
        say(b"The store's shared-memory index ");
        say(shm.as_bytes());
        say(b" is the file fanin writes that way: it was most likely truncated, made immutable or read-only, \
              or its filesystem failed. No acknowledged request is lost; once the file can be written, start \
              fanin again (the index is rebuilt from the store).\n");
    } else {
        say(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_writable_index_passes_and_an_unwritable_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fanin.db");
        let guard = ShmGuard::new(&db);
        guard.check().expect("no -shm yet");
        std::fs::write(files::shm_path(&db), b"").unwrap();
        guard.check().expect("a writable -shm");
        // Modes do not stop root; a path through a file fails for anyone.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let unusable = ShmGuard {
            db: db.clone(),
            shm: file.join("fanin.db-shm"),
            base: Instant::now(),
            reads_ok_until: AtomicU64::new(0),
        };
        assert!(unusable.check_for_read().is_err(), "a read finds it too");
        match unusable.check() {
            Err(StoreError::Unavailable(e)) => assert!(e.contains("is not writable") && e.contains("fanin.db"), "{e}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
