//! What only the SQLite store has, against real files in temporary
//! directories: its locks, WAL and checkpoints, file modes, the read-only
//! opener beside a stuck writer, upgrades of old files (`migration`) and
//! rows written into the file behind its back (`unreadable`). The trait's
//! behaviour is the shared suite's (`store::suite`), run on SQLite too.

use std::sync::Arc;

use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::event::Source;
use crate::store::suite::{all_audit, all_runs, claim, ids, run, start, t, token};
use crate::test_support::eventually;
use fanin_core::runs::RunStatus;

mod migration;
mod unreadable;

fn open_temp() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&db_path(&dir)).expect("open store");
    (dir, store)
}

/// Nested, so `open` has to create the directories.
fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data/nested/fanin.db")
}

#[tokio::test]
async fn a_transaction_that_cannot_begin_writes_nothing_and_says_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open_with(&path, Duration::from_millis(20)).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let blocked = store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await;
    assert!(matches!(blocked, Err(StoreError::Unavailable(ref m)) if m.contains("fanin.db")), "{blocked:?}");
    match store.watch().write_state() {
        WriteState::Failing { reason, refused: 1, .. } => assert!(reason.contains("locked"), "{reason}"),
        other => panic!("a refused write, and the watch says {other:?}"),
    }
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.get_run("r").await.unwrap(), None);

    assert_eq!(store.commit(start(run("r2", "s", RunStatus::Running, t(1)))).await.unwrap(), Committed::Applied);
    assert!(store.get_run("r2").await.unwrap().is_some());
    assert_eq!(store.watch().write_state(), WriteState::Ok, "the next write went through");
}

#[tokio::test]
async fn a_read_only_store_reads_while_another_process_holds_the_write_lock() {
    let (dir, store) = open_temp();
    store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();
    // A writer stuck in the middle of its transaction (as a daemon stopped
    // mid-commit is): it holds SQLite's write lock.
    let stuck = rusqlite::Connection::open(db_path(&dir)).unwrap();
    stuck.execute_batch("BEGIN IMMEDIATE; UPDATE runs SET topic = 'x';").unwrap();
    let begun = std::time::Instant::now();
    let reader = SqliteStore::open_read_only(&db_path(&dir)).unwrap();
    let runs = reader.list_runs(&all_runs()).await.unwrap();
    assert_eq!(runs[0].topic, "sensors/a/alert", "the last committed state");
    assert!(begun.elapsed() < BUSY_TIMEOUT / 2, "no lock was waited for: {:?}", begun.elapsed());
    stuck.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test]
async fn only_an_existing_current_store_is_opened_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    match SqliteStore::open_read_only(&path) {
        Err(StoreError::Invalid(m)) => assert!(m.contains("no such file") && m.contains("fanin.db"), "{m}"),
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
    assert!(!path.exists(), "nothing was created");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 3).unwrap();
    match SqliteStore::open_read_only(&path) {
        Err(StoreError::Invalid(m)) => assert!(m.contains("schema version 3 is older"), "{m}"),
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_store_is_owner_only_and_an_open_one_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (dir, store) = open_temp();
    store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();
    let db = db_path(&dir);
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    for file in [db.clone(), files::shm_path(&db), PathBuf::from(format!("{}-wal", db.display()))] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(SqliteStore::open(&db).unwrap());
    assert_eq!(mode(&db), 0o600);
}

#[tokio::test]
async fn the_file_is_in_wal_mode_with_schema_version_8() {
    let (dir, _store) = open_temp();
    let conn = rusqlite::Connection::open(db_path(&dir)).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), version), ("wal", 8));
}

#[tokio::test]
async fn opened_through_the_store_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::open("sqlite://data/fanin.db", dir.path()).await.unwrap();
    store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();
    assert!(store.get_run("r").await.unwrap().is_some());
    assert!(dir.path().join("data/fanin.db").exists());
}

#[tokio::test]
async fn the_log_is_copied_back_into_the_database_file() {
    use super::checkpoint::CHECKPOINT_PAGES;
    let (dir, store) = open_temp();
    let path = db_path(&dir);
    let db_pages = || std::fs::metadata(&path).expect("database file").len() / 4096;
    let before = db_pages();
    // About twice the checkpoint threshold in log pages, so that a copy
    // holds more distinct pages than the threshold.
    commit_large_runs(&store, 600).await;
    // The checkpoint thread copies beside the commits: wait for it, without
    // asserting on how long it takes.
    let what = format!("the log copied back: the database file {CHECKPOINT_PAGES} pages past its {before}");
    eventually(&what, || async { db_pages() >= before + CHECKPOINT_PAGES as u64 }).await;
    assert_eq!(store.list_runs(&all_runs()).await.unwrap().len(), 600);
}

#[tokio::test]
async fn the_log_starts_over_under_steady_writes() {
    use super::checkpoint::{CHECKPOINT_PAGES, FINISH_PAGES};
    let (dir, store) = open_temp();
    let wal = db_path(&dir).with_extension("db-wal");
    // About 30 000 pages of log from 32 committers at once, so that the
    // writer is seldom idle: many times the bound.
    let store = Arc::new(store);
    let mut committers = Vec::new();
    for c in 0..32 {
        let store = Arc::clone(&store);
        committers.push(tokio::spawn(async move {
            for i in 0..94 {
                let mut r = run(&format!("r{c}-{i}"), "s", RunStatus::Running, t(i));
                r.payload = json!({"blob": "x".repeat(16 * 1024)});
                store.commit(start(r)).await.unwrap();
            }
        }));
    }
    for committer in committers {
        committer.await.unwrap();
    }
    let frames = std::fs::metadata(&wal).expect("log file").len() / (4096 + 24);
    // About FINISH_PAGES here; a log that never starts over holds ~20 000.
    let bound = (FINISH_PAGES + 2 * CHECKPOINT_PAGES) as u64;
    assert!(frames <= bound, "the log holds {frames} frames, more than {bound}: it never started over");
    assert_eq!(store.list_runs(&all_runs()).await.unwrap().len(), 32 * 94);
}

/// Commits `n` runs of 16 KiB of payload each (about ten log pages a run).
async fn commit_large_runs(store: &SqliteStore, n: i64) {
    for i in 0..n {
        let mut r = run(&format!("r{i}"), "s", RunStatus::Running, t(i));
        r.payload = json!({"blob": "x".repeat(16 * 1024)});
        store.commit(start(r)).await.unwrap();
    }
}
