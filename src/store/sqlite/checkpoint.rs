//! Checkpoints: a thread of its own copies the write-ahead log back into the
//! database file, so that the writer thread seldom has to.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses its
//! threshold: a copy of every page in the log and an fsync of the database
//! file, while every commit queued behind it waits (a tenth of the writer's
//! time under load, and its slowest commits). Here the writer's WAL hook
//! signals this thread once the log holds [`CHECKPOINT_PAGES`], and this
//! thread runs a PASSIVE checkpoint on its own connection, beside the
//! commits. That alone never lets the log restart under steady load (the
//! log starts over only when a writer finds every frame copied back, and
//! new frames keep coming while this thread copies), so once the log holds
//! [`FINISH_PAGES`] the writer itself runs a PASSIVE checkpoint right after
//! its commit: it copies only the frames this thread has not, the log is
//! then whole in the database and the next transaction starts it over. The
//! log stays bounded; durability does not change (a commit is durable once
//! its frames are fsynced in the log).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::codec::store_error;
use super::shm::ShmGuard;
use crate::store::StoreError;

/// Log size (in pages) that asks this thread for a checkpoint: SQLite's own
/// default for its automatic checkpoint.
pub(super) const CHECKPOINT_PAGES: i32 = 1000;
/// Log size (in pages) at which the writer finishes the checkpoint itself.
pub(super) const FINISH_PAGES: i32 = 2 * CHECKPOINT_PAGES;

/// The checkpointing thread; it stops when the writer's connection closes.
pub(super) struct Checkpointer {
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens the checkpointing connection, starts its thread, and hands the
    /// writer connection's WAL hook over to it (which turns SQLite's
    /// automatic checkpoint off for that connection).
    pub fn start(
        path: &Path,
        busy_timeout: Duration,
        writer: &mut Connection,
        guard: Arc<ShmGuard>,
    ) -> Result<Checkpointer, StoreError> {
        let fail = |doing: &str, e| store_error(path, doing, e);
        let conn = Connection::open(path).map_err(|e| fail("open for checkpoints", e))?;
        conn.busy_timeout(busy_timeout).map_err(|e| fail("set busy timeout", e))?;
        let (due, wake) = sync_channel::<()>(1);
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fanin-store-checkpoint".into())
            .spawn(move || run(conn, owned, wake, guard))
            .map_err(|e| {
                StoreError::Unavailable(format!("store {}: cannot start checkpoint thread: {e}", path.display()))
            })?;
        writer
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= FINISH_PAGES {
                    // Busy (this thread is copying): the next commit tries again.
                    if let Err(e) = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::PASSIVE) {
                        tracing::debug!(error = %e, "writer's checkpoint deferred");
                    }
                } else if pages >= CHECKPOINT_PAGES {
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

fn run(conn: Connection, path: PathBuf, wake: Receiver<()>, guard: Arc<ShmGuard>) {
    while wake.recv().is_ok() {
        // A checkpoint records its progress in the -shm.
        if let Err(e) = guard.check() {
            tracing::warn!(error = %e, "checkpoint skipped; retried at the next signal");
            continue;
        }
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
