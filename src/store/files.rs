//! The files of the SQLite store and those fanin keeps beside it: who may
//! read them, whether they can still be written, and the lock that keeps a
//! second daemon off the same store.
//!
//! A store holds the hashes of bearer tokens and the MACs of pairing codes,
//! and the directory holds the key those MACs are made with: everything is
//! owner-only (directory 0700, files 0600). The process umask (set by the
//! CLI) makes that the default for every file SQLite creates; what fanin
//! creates itself is created with those modes explicitly; and a store found
//! readable by others is tightened when it is opened for writing.
//!
//! Nothing here opens the database or its `-wal`/`-shm` file: closing any
//! descriptor of those files drops every POSIX lock SQLite's own descriptors
//! hold on them in this process. Modes are changed and checked by path.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The pairing key's file name, in the store's directory.
const PAIRING_KEY: &str = "pairing.key";

/// The suffixes SQLite gives the files it keeps beside the database.
const SQLITE_SUFFIXES: [&str; 2] = ["-wal", "-shm"];

/// `<db>` with `suffix` appended to its file name.
fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The shared-memory index SQLite maps into every process using the store.
pub fn shm_path(db: &Path) -> PathBuf {
    with_suffix(db, "-shm")
}

/// The daemon's lock file: one per store.
pub fn lock_path(db: &Path) -> PathBuf {
    with_suffix(db, ".lock")
}

/// The pairing key: one per directory, so every store in it (and every
/// process using them) verifies codes with the same key.
pub fn pairing_key_path(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new("")).join(PAIRING_KEY)
}

/// Every file of the store and beside it that must be owner-only.
fn private_files(db: &Path) -> Vec<PathBuf> {
    let mut files = vec![db.to_path_buf()];
    files.extend(SQLITE_SUFFIXES.iter().map(|s| with_suffix(db, s)));
    files.push(lock_path(db));
    files.push(pairing_key_path(db));
    files
}

/// Creates `dir` and its missing parents, owner-only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The directory a store file lives in, created owner-only if missing.
pub fn create_store_dir(db: &Path) -> Result<(), StoreError> {
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => create_private_dir(dir).map_err(|e| {
            StoreError::Invalid(format!("store {}: cannot create directory {}: {e}", db.display(), dir.display()))
        }),
        _ => Ok(()),
    }
}

/// Opens options for a file only its owner may read.
fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates an empty database file, owner-only, unless one exists. SQLite
/// takes an empty file for an empty database and gives its `-wal` and
/// `-shm` the database file's mode, so the whole store is owner-only
/// whatever the umask of the process.
pub fn create_private_db(db: &Path) -> Result<(), StoreError> {
    match private_options().write(true).create_new(true).open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Invalid(format!("store {}: cannot create it: {e}", db.display()))),
    }
}

/// Writes `contents` to `path` unless a file is there already; `Ok(false)`
/// if one was. The file appears whole or not at all, owner-only: it is
/// written under a temporary name and linked into place, which fails when
/// another process got there first (both then read the same file).
pub fn write_private_once(path: &Path, contents: &[u8]) -> io::Result<bool> {
    use std::io::Write;
    let temp = with_suffix(path, &format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = private_options().write(true).create_new(true).open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // The new name is durable once its directory is.
                File::open(dir)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes every existing file of the store (and beside it) owner-only;
/// returns the ones that were readable or writable by others, and the ones
/// that could not be changed with the reason. By path: see the module doc.
pub fn tighten(db: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let (mut tightened, mut failed) = (Vec::new(), Vec::new());
    #[cfg(unix)]
    for file in private_files(db) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::symlink_metadata(&file) else { continue };
        let mode = meta.permissions().mode();
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tightened.push(file),
            Err(e) => failed.push(format!("{}: {e}", file.display())),
        }
    }
    #[cfg(not(unix))]
    let _ = private_files(db);
    (tightened, failed)
}

/// `Ok` if this process may write `path` now (its mode, an immutable flag
/// and a read-only filesystem all count), asked by path.
pub fn check_writable(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string for the whole call.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        match std::fs::metadata(path)?.permissions().readonly() {
            true => Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only")),
            false => Ok(()),
        }
    }
}

/// Refuses a store that cannot take writes: its directory (SQLite creates
/// the `-wal` and `-shm` there), or any of its files that exist.
pub fn check_store_writable(db: &Path) -> Result<(), StoreError> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut files = vec![dir];
    files.push(db.to_path_buf());
    files.extend(SQLITE_SUFFIXES.iter().map(|s| with_suffix(db, s)));
    for file in files {
        match check_writable(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Invalid(format!(
                    "store {}: {} is not writable ({e}); fanin needs to write every file of its store",
                    db.display(),
                    file.display()
                )))
            }
        }
    }
    Ok(())
}

/// The exclusive lock a daemon holds on its store for as long as it runs,
/// with its pid written in the lock file. The operating system releases it
/// when the process ends, however it ends.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the lock of the store at `db`, or says which process holds it.
    pub fn acquire(db: &Path) -> Result<DaemonLock, StoreError> {
        create_store_dir(db)?;
        let path = lock_path(db);
        let fail = |doing: &str, e: io::Error| {
            StoreError::Invalid(format!("store {}: cannot {doing} lock file {}: {e}", db.display(), path.display()))
        };
        let mut file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail("open", e))?;
        match try_lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => {
                let holder = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
                let holder =
                    holder.map_or("a process whose pid is not written yet".to_string(), |pid| format!("pid {pid}"));
                return Err(StoreError::Invalid(format!(
                    "store {}: another fanin daemon is running on it ({holder}, lock file {}); stop it first, \
                     or give this one its own store.url",
                    db.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(fail("lock", e)),
        }
        write_pid(&mut file).map_err(|e| fail("write the pid into", e))?;
        Ok(DaemonLock { _file: file })
    }
}

fn write_pid(file: &mut File) -> io::Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0)?;
    file.seek(io::SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

/// `Ok(false)` when another open file description holds the lock.
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> io::Result<bool> {
    Ok(true)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_files_beside_a_store_are_named_after_it() {
        let db = Path::new("/var/lib/fanin/fanin.db");
        assert_eq!(shm_path(db), Path::new("/var/lib/fanin/fanin.db-shm"));
        assert_eq!(lock_path(db), Path::new("/var/lib/fanin/fanin.db.lock"));
        assert_eq!(pairing_key_path(db), Path::new("/var/lib/fanin/pairing.key"));
    }

    #[test]
    fn created_directories_and_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a/b/fanin.db");
        create_store_dir(&db).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        create_private_db(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        create_private_db(&db).unwrap();
        let key = pairing_key_path(&db);
        assert!(write_private_once(&key, b"first").unwrap());
        assert!(!write_private_once(&key, b"second").unwrap(), "the first file stays");
        assert_eq!(std::fs::read(&key).unwrap(), b"first");
        assert_eq!(mode(&key), 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind: {left:?}");
    }

    #[test]
    fn a_store_readable_by_others_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fanin.db");
        for file in [db.clone(), shm_path(&db), pairing_key_path(&db)] {
            std::fs::write(&file, b"").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(pairing_key_path(&db), std::fs::Permissions::from_mode(0o600)).unwrap();
        let (tightened, failed) = tighten(&db);
        assert_eq!(tightened, [db.clone(), shm_path(&db)]);
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!((mode(&db), mode(&shm_path(&db))), (0o600, 0o600));
        assert_eq!(tighten(&db).0, Vec::<PathBuf>::new(), "once is enough");
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fanin.db");
        let held = DaemonLock::acquire(&db).unwrap();
        assert_eq!(std::fs::read_to_string(lock_path(&db)).unwrap(), format!("{}\n", std::process::id()));
        // flock belongs to the open file: a second open in this process conflicts too.
        let e = DaemonLock::acquire(&db).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("fanin.db"), "{e}");
        drop(held);
        DaemonLock::acquire(&db).expect("released with its holder");
    }
}
