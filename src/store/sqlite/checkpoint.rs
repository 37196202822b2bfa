//! Checkpoints: a thread of its own copies the write-ahead log back into the
//! database file, so that the writer thread never does.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the
//! threshold: a copy of every page in the log and an fsync of the database
//! file, while every commit queued behind it waits (a tenth of the writer's
//! time under load, and its slowest commits). Here the writer's WAL hook
//! only signals this thread when the log holds [`CHECKPOINT_PAGES`] or more,
//! and this thread runs a PASSIVE checkpoint on its own connection: the same
//! checkpoint SQLite would run (it never waits for readers or the writer),
//! off the path of the commits. Nothing about durability changes: a commit
//! is durable once its frames are fsynced in the log.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::codec::store_error;
use crate::store::StoreError;

/// Log size (in pages) that asks for a checkpoint: SQLite's own default
/// for its automatic checkpoint.
pub(super) const CHECKPOINT_PAGES: i32 = 1000;

/// The checkpointing thread; it stops when the writer's connection closes.
pub(super) struct Checkpointer {
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens the checkpointing connection, starts its thread, and hands the
    /// writer connection's WAL hook over to it (which turns SQLite's
    /// automatic checkpoint off for that connection).
    pub fn start(path: &Path, busy_timeout: Duration, writer: &mut Connection) -> Result<Checkpointer, StoreError> {
        let fail = |doing: &str, e| store_error(path, doing, e);
        let conn = Connection::open(path).map_err(|e| fail("open for checkpoints", e))?;
        conn.busy_timeout(busy_timeout).map_err(|e| fail("set busy timeout", e))?;
        let (due, wake) = sync_channel::<()>(1);
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fanin-store-checkpoint".into())
            .spawn(move || run(conn, owned, wake))
            .map_err(|e| {
                StoreError::Unavailable(format!("store {}: cannot start checkpoint thread: {e}", path.display()))
            })?;
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= CHECKPOINT_PAGES {
                    // Full: a checkpoint is already asked for and will see
                    // these pages too.
                    if let Err(TrySendError::Disconnected(())) = due.try_send(()) {
                        tracing::error!(
                            "the store's checkpoint thread is gone; the write-ahead log is not copied back"
                        );
                    }
                }
                Ok(())
            }))
            .map_err(|e| fail("install the WAL hook", e))?;
        Ok(Checkpointer { thread })
    }

    /// Waits for the thread; call after the writer's connection closed.
    pub fn join(self, path: &Path) {
        if self.thread.join().is_err() {
            tracing::error!(store = %path.display(), "store checkpoint thread panicked");
        }
    }
}

fn run(conn: Connection, path: PathBuf, wake: Receiver<()>) {
    while wake.recv().is_ok() {
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match result {
            Ok((_, log, copied)) => tracing::debug!(store = %path.display(), log, copied, "checkpoint"),
            Err(e) => {
                tracing::warn!(store = %path.display(), error = %e, "checkpoint failed; retried at the next signal")
            }
        }
    }
}
