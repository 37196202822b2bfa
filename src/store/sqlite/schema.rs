//! Opening connections and creating or migrating the schema.
//!
//! The schema version lives in `PRAGMA user_version`; opening a file written
//! by a newer fanin fails instead of guessing. The SQL stays plain (no SQLite
//! only types or functions) so the PostgreSQL store can share its shape.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::codec::store_error;
use crate::store::StoreError;

/// The schema this code reads and writes.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// Version 1. `seq` columns are `AUTOINCREMENT`, so a number is never handed
/// out twice even after rows are deleted; audit readers follow the trail by
/// `seq`. No foreign keys: an audit record must never be refused because
/// what it names is gone or was never a run (skipped triggers).
const SCHEMA_V1: &str = "
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT    NOT NULL UNIQUE,
    sop             TEXT    NOT NULL,
    sop_version     TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    trigger_index   INTEGER NOT NULL,
    trigger_desc    TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    client          TEXT,
    idempotency_key TEXT,
    started_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    coalesced       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_start ON runs (started_at DESC, seq DESC);
CREATE INDEX runs_by_sop_status ON runs (sop, status, started_at, seq);

CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    run_id TEXT,
    sop    TEXT,
    detail TEXT    NOT NULL
);
CREATE INDEX audit_by_run ON audit (run_id, seq);

CREATE TABLE idempotency (
    scope      TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    response   TEXT    NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

CREATE TABLE tokens (
    prefix     TEXT    NOT NULL PRIMARY KEY,
    hash       TEXT    NOT NULL UNIQUE,
    subject    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE pairing_codes (
    hash       TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE TABLE cron_state (
    key        TEXT    NOT NULL PRIMARY KEY,
    last_check INTEGER NOT NULL
);
";

/// The connection the writer thread owns: WAL so readers (here and in other
/// processes) run beside it, and `synchronous = FULL` so a commit that was
/// acknowledged survives a power cut, not only a crash.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let fail = |doing: &str, e| store_error(path, doing, e);
    let conn = Connection::open(path).map_err(|e| fail("open", e))?;
    conn.busy_timeout(busy_timeout).map_err(|e| fail("set busy timeout", e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| fail("enable WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid(format!(
            "store {}: journal_mode is {mode:?}, WAL is required (is the file on a filesystem without shared memory?)",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| fail("set synchronous = FULL", e))?;
    conn.pragma_update(None, "foreign_keys", "OFF").map_err(|e| fail("set foreign_keys", e))?;
    Ok(conn)
}

/// A connection that only reads; WAL lets it read a consistent snapshot
/// while the writer commits.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| store_error(path, "open for reading", e))?;
    conn.busy_timeout(busy_timeout).map_err(|e| store_error(path, "set busy timeout", e))?;
    Ok(conn)
}

/// Brings the file to [`SCHEMA_VERSION`] inside one write transaction, so two
/// processes opening a new file at once cannot both create the tables.
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |doing: &str, e| store_error(path, doing, e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| fail("begin migration", e))?;
    let result = migrate_in_transaction(conn, path);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(|e| fail("end migration", e))?;
    result
}

fn migrate_in_transaction(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |doing: &str, e| store_error(path, doing, e);
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(|e| fail("read user_version", e))?;
    match version {
        0 => {
            conn.execute_batch(SCHEMA_V1).map_err(|e| fail("create schema v1", e))?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| fail("set user_version", e))
        }
        SCHEMA_VERSION => Ok(()),
        newer => Err(StoreError::Invalid(format!(
            "store {}: schema version {newer} is newer than this fanin understands ({SCHEMA_VERSION}); upgrade fanin",
            path.display()
        ))),
    }
}
