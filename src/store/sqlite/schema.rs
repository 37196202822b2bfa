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
pub(crate) const SCHEMA_VERSION: i64 = 8;

/// Runs, keyed by `seq`, the order they were written in.
///
/// No `AUTOINCREMENT` on `runs` and `audit` (version 3): rows are never
/// deleted, so a plain `INTEGER PRIMARY KEY` already never hands out a
/// number twice, without a `sqlite_sequence` update per insert. No foreign
/// keys: an audit record must never be refused because what it names is
/// gone or was never a run (skipped triggers).
const RUNS: &str = "
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY,
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
    coalesced       INTEGER NOT NULL DEFAULT 0,
    step            INTEGER NOT NULL DEFAULT 0
);";

/// What a webhook run keeps beside its payload (version 6): its request's
/// query and headers, and the session its body continued, so a run that
/// starts later (out of the backlog, after a restart) sends the same
/// envelope. Added to the table above in a new file too, so a new file and
/// an upgraded one have the same table, statement and all.
const RUNS_REQUEST_COLUMNS: &str = "
ALTER TABLE runs ADD COLUMN request TEXT;
ALTER TABLE runs ADD COLUMN session TEXT;";

/// Listing newest first; and the backlog, which admission reads back at
/// start. Only deferred runs are in `runs_deferred`, so a run that starts
/// at once never touches it (version 2 had an index on every run's SOP and
/// status instead).
const RUNS_INDEXES: &str = "
CREATE INDEX runs_by_start ON runs (started_at DESC, seq DESC);
CREATE INDEX runs_deferred ON runs (sop, started_at, seq) WHERE status = 'deferred';";

/// Audit readers follow the trail by `seq`.
const AUDIT: &str = "
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    run_id TEXT,
    sop    TEXT,
    detail TEXT    NOT NULL
);";

const AUDIT_INDEXES: &str = "CREATE INDEX audit_by_run ON audit (run_id, seq);";

/// The tables version 1 had that no later version changed.
const OTHER_V1_TABLES: &str = "
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

CREATE TABLE cron_state (
    key        TEXT    NOT NULL PRIMARY KEY,
    last_check INTEGER NOT NULL
);";

/// One-time pairing codes (version 4). `hash` is the code's HMAC-SHA256
/// under the pairing key kept beside the store, so the file alone does not
/// give a code away. `wrong_guesses` counts the wrong codes presented while
/// this one was live; at the budget the code is retired (`retired_at`).
const PAIRING_CODES: &str = "
CREATE TABLE pairing_codes (
    hash          TEXT    NOT NULL PRIMARY KEY,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    wrong_guesses INTEGER NOT NULL DEFAULT 0,
    retired_at    INTEGER
);";

/// The agent loop's step records (version 2), stored in their primary key's
/// order (`WITHOUT ROWID`, version 3: one b-tree instead of a table and its
/// key's index). Only `pending` and `leased` steps can be leased, so the
/// leasing index holds just those, in the order they became pending; ties
/// go to the run id, a UUIDv7 and so the order runs were created in.
const RUN_STEPS: &str = "
CREATE TABLE run_steps (
    run_id       TEXT    NOT NULL,
    step_index   INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    lease_id     TEXT,
    leased_until INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    output       TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_index)
) WITHOUT ROWID;";

const RUN_STEPS_INDEXES: &str =
    "CREATE INDEX run_steps_leasable ON run_steps (created_at) WHERE status IN ('pending', 'leased');";

/// The outbox (version 2). `seq` orders entries and stays `AUTOINCREMENT`:
/// delivered entries may one day be pruned, and a number must not come
/// back. `outbox_by_status` serves listing; whether an earlier entry of a
/// run is still undelivered is answered by the partial index
/// `outbox_undelivered_by_run` from undelivered entries alone.
const OUTBOX: &str = "
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    run_id          TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    envelope        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX outbox_by_status ON outbox (status, seq);
CREATE INDEX outbox_undelivered_by_run ON outbox (run_id, seq) WHERE status IN ('pending', 'dead');";

/// The due query (version 4): pending entries of one destination, earliest
/// due first. It reads only what it returns (plus the rare entry that waits
/// behind an earlier one of its run): entries waiting for another
/// destination, or not due yet, are never walked over, however many there
/// are. Version 3 walked every pending entry by `seq` and tested each one's
/// due time.
const OUTBOX_DUE_INDEX: &str =
    "CREATE INDEX outbox_due ON outbox (destination, next_attempt_at, seq) WHERE status = 'pending';";

/// Where each polling or streaming source has read to (version 7): a
/// mailbox's UIDVALIDITY and last UID, Telegram's update offset, a Drive
/// page token. Keyed by the instance (`email:ops`); the value is the
/// source's own text.
const SOURCE_CURSORS: &str = "
CREATE TABLE source_cursors (
    source     TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);";

/// What the filesystem source last saw of each watched file (version 8),
/// so that a start finds what changed while the daemon was stopped.
const FILE_STATES: &str = "
CREATE TABLE file_states (
    source TEXT    NOT NULL,
    path   TEXT    NOT NULL,
    size   INTEGER NOT NULL,
    mtime  INTEGER NOT NULL,
    sha256 TEXT    NOT NULL,
    PRIMARY KEY (source, path)
) WITHOUT ROWID;";

/// A new file: every table in its current form. A file of an older version
/// gets there through [`UPGRADES`] instead; a test checks both roads end in
/// the same tables, columns and indexes.
const SCHEMA: &[&str] = &[
    RUNS,
    RUNS_REQUEST_COLUMNS,
    RUNS_INDEXES,
    AUDIT,
    AUDIT_INDEXES,
    OTHER_V1_TABLES,
    PAIRING_CODES,
    RUN_STEPS,
    RUN_STEPS_INDEXES,
    OUTBOX,
    OUTBOX_DUE_INDEX,
    SOURCE_CURSORS,
    FILE_STATES,
];

/// Version 1 → 2: the run's step index (existing runs are at step 0, which
/// is what a run delivered as one envelope keeps), the agent loop's step
/// records and the outbox.
const UPGRADE_V1_TO_V2: &[&str] =
    &["ALTER TABLE runs ADD COLUMN step INTEGER NOT NULL DEFAULT 0;", RUN_STEPS, RUN_STEPS_INDEXES, OUTBOX];

/// Version 2 → 3: `runs`, `audit` and `run_steps` rebuilt in their current
/// form (fewer b-trees written per run), rows and `seq` numbers kept. Each
/// table the same way: the old one is renamed, the new one created and
/// filled (columns in the same order, so rows copy over as they are), the
/// old one dropped with its indexes, then the new indexes built.
const UPGRADE_V2_TO_V3: &[&str] = &[
    "ALTER TABLE runs RENAME TO runs_v2;",
    RUNS,
    "INSERT INTO runs SELECT * FROM runs_v2; DROP TABLE runs_v2;",
    RUNS_INDEXES,
    "ALTER TABLE audit RENAME TO audit_v2;",
    AUDIT,
    "INSERT INTO audit SELECT * FROM audit_v2; DROP TABLE audit_v2;",
    AUDIT_INDEXES,
    "ALTER TABLE run_steps RENAME TO run_steps_v2;",
    RUN_STEPS,
    "INSERT INTO run_steps SELECT * FROM run_steps_v2; DROP TABLE run_steps_v2;",
    RUN_STEPS_INDEXES,
];

/// Version 3 → 4: pairing codes are verified by HMAC and carry a guess
/// budget. The codes stored so far are SHA-256 digests no key can match
/// (and which give their six digits away to anyone who reads the file);
/// they live an hour at most, so they are dropped rather than carried over.
const UPGRADE_V3_TO_V4: &[&str] = &["DROP TABLE pairing_codes;", PAIRING_CODES];

/// Version 4 → 5: the due index of the outbox.
const UPGRADE_V4_TO_V5: &[&str] = &[OUTBOX_DUE_INDEX];

/// Version 5 → 6: the runs' request and session columns, empty for the runs
/// stored before. Adding columns rewrites no row.
const UPGRADE_V5_TO_V6: &[&str] = &[RUNS_REQUEST_COLUMNS];

/// Version 6 → 7: the sources' cursors.
const UPGRADE_V6_TO_V7: &[&str] = &[SOURCE_CURSORS];

/// Version 7 → 8: the filesystem source's file states.
const UPGRADE_V7_TO_V8: &[&str] = &[FILE_STATES];

/// `UPGRADES[i]` brings a file from version `i + 1` to `i + 2`; each one's
/// statements run in order.
const UPGRADES: &[&[&str]] = &[
    UPGRADE_V1_TO_V2,
    UPGRADE_V2_TO_V3,
    UPGRADE_V3_TO_V4,
    UPGRADE_V4_TO_V5,
    UPGRADE_V5_TO_V6,
    UPGRADE_V6_TO_V7,
    UPGRADE_V7_TO_V8,
];

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
    // A group commit redone with a SAVEPOINT per request (one of them was
    // refused) keeps each savepoint's undo pages in a statement journal,
    // which would otherwise spill to a temporary file past 64 KiB: two
    // write(2) calls per page touched, per request. Kept in memory, they are
    // a copy. Durability is the WAL's, unchanged.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(|e| fail("set temp_store = MEMORY", e))?;
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
            for sql in SCHEMA {
                conn.execute_batch(sql).map_err(|e| fail("create schema", e))?;
            }
        }
        SCHEMA_VERSION => return Ok(()),
        older @ 1..SCHEMA_VERSION => upgrade(conn, path, older)?,
        other => return Err(version_refused(path, other)),
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| fail("set user_version", e))
}

/// A store opened read-only cannot be upgraded: its file must already be
/// at [`SCHEMA_VERSION`].
pub(super) fn check_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| store_error(path, "read user_version", e))?;
    match version {
        SCHEMA_VERSION => Ok(()),
        0 => Err(StoreError::Invalid(format!("store {}: the file holds no fanin store yet", path.display()))),
        older @ 1..SCHEMA_VERSION => Err(StoreError::Invalid(format!(
            "store {}: schema version {older} is older than this fanin's ({SCHEMA_VERSION}); start the daemon \
             once to upgrade it",
            path.display()
        ))),
        other => Err(version_refused(path, other)),
    }
}

/// Why a file of a version this fanin never wrote is not opened.
fn version_refused(path: &Path, version: i64) -> StoreError {
    if version > SCHEMA_VERSION {
        StoreError::Invalid(format!(
            "store {}: schema version {version} is newer than this fanin understands ({SCHEMA_VERSION}); \
             upgrade fanin",
            path.display()
        ))
    } else {
        StoreError::Invalid(format!("store {}: schema version {version} is not one fanin ever wrote", path.display()))
    }
}

/// Applies every upgrade from `from` on, keeping the data.
fn upgrade(conn: &Connection, path: &Path, from: i64) -> Result<(), StoreError> {
    for (version, statements) in (from..SCHEMA_VERSION).zip(&UPGRADES[(from - 1) as usize..]) {
        for sql in *statements {
            conn.execute_batch(sql).map_err(|e| {
                store_error(path, &format!("upgrade schema from version {version} to {}", version + 1), e)
            })?;
        }
        tracing::info!(store = %path.display(), from = version, to = version + 1, "store schema upgraded");
    }
    Ok(())
}
