//! The PostgreSQL schema and how it is created or upgraded.
//!
//! The tables are SQLite's (the same names, columns and meaning: times as
//! BIGINT microseconds, JSON as TEXT, so a value reads back the same way in
//! both stores), in whatever schema the connection's `search_path` names
//! first. The version lives in `fanin_schema`. Several replicas may start at
//! once: each applies the schema inside one transaction that first takes
//! `pg_advisory_xact_lock(SCHEMA_LOCK)`, so one creates it and the others
//! then find it done. A version newer than this fanin's is refused.

use tokio_postgres::{Client, GenericClient};

use super::pg_error;
use crate::store::StoreError;

/// The schema this code reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// The advisory lock key every fanin takes while it creates or upgrades a
/// schema (held to the end of that transaction). One key for the whole
/// database: a migration is rare and short.
const SCHEMA_LOCK: i64 = 0x6661_6e69_6e00_0001;

/// Version 1: every table of SQLite's schema version 8 in its current form.
/// `seq` columns are identities: numbers are never handed out twice. Text
/// compares and sorts bytewise (`COLLATE "C"`), as SQLite's does, whatever
/// the database's locale: orders, prefixes and look-ups agree in both.
pub(super) const SCHEMA_V1: &str = r#"
CREATE TABLE fanin_schema (version BIGINT NOT NULL);

CREATE TABLE runs (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          TEXT COLLATE "C" NOT NULL UNIQUE,
    sop             TEXT COLLATE "C" NOT NULL,
    sop_version     TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    trigger_index   BIGINT NOT NULL,
    trigger_desc    TEXT COLLATE "C" NOT NULL,
    source          TEXT COLLATE "C" NOT NULL,
    topic           TEXT COLLATE "C" NOT NULL,
    event_id        TEXT COLLATE "C" NOT NULL,
    payload         TEXT COLLATE "C" NOT NULL,
    client          TEXT,
    idempotency_key TEXT,
    started_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    coalesced       BIGINT NOT NULL DEFAULT 0,
    step            BIGINT NOT NULL DEFAULT 0,
    request         TEXT,
    session         TEXT COLLATE "C"
);
CREATE INDEX runs_by_start ON runs (started_at DESC, seq DESC);
CREATE INDEX runs_deferred ON runs (sop, started_at, seq) WHERE status = 'deferred';

CREATE TABLE audit (
    seq    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     BIGINT NOT NULL,
    kind   TEXT COLLATE "C" NOT NULL,
    run_id TEXT,
    sop    TEXT,
    detail TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_by_run ON audit (run_id, seq);

CREATE TABLE idempotency (
    scope      TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    response   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

CREATE TABLE tokens (
    prefix     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    hash       TEXT COLLATE "C" NOT NULL UNIQUE,
    subject    TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE cron_state (
    key        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    last_check BIGINT NOT NULL
);

CREATE TABLE pairing_codes (
    hash          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    wrong_guesses BIGINT NOT NULL DEFAULT 0,
    retired_at    BIGINT
);

CREATE TABLE run_steps (
    run_id       TEXT COLLATE "C" NOT NULL,
    step_index   BIGINT NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    lease_id     TEXT,
    leased_until BIGINT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    output       TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_index)
);
CREATE INDEX run_steps_leasable ON run_steps (created_at) WHERE status IN ('pending', 'leased');

CREATE TABLE outbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT COLLATE "C" NOT NULL UNIQUE,
    run_id          TEXT COLLATE "C" NOT NULL,
    destination     TEXT COLLATE "C" NOT NULL,
    envelope        TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX outbox_by_status ON outbox (status, seq);
CREATE INDEX outbox_undelivered_by_run ON outbox (run_id, seq) WHERE status IN ('pending', 'dead');
CREATE INDEX outbox_due ON outbox (destination, next_attempt_at, seq) WHERE status = 'pending';

CREATE TABLE source_cursors (
    source     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value      TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE file_states (
    source TEXT COLLATE "C" NOT NULL,
    path   TEXT COLLATE "C" NOT NULL,
    size   BIGINT NOT NULL,
    mtime  BIGINT NOT NULL,
    sha256 TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (source, path)
);
"#;

/// Version 2: `leases`, the singleton duties replicas hand each other
/// (a table only PostgreSQL has: a SQLite file takes one daemon). Times are
/// the database's clock, so replicas whose clocks disagree agree on them.
const SCHEMA_V2: &str = r#"
CREATE TABLE leases (
    name  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL,
    since BIGINT NOT NULL,
    until BIGINT NOT NULL
);
"#;

/// Version 3: the indexes a replica reads one SOP's load by, under an
/// admission hold (`admission.rs`), without scanning every run.
const SCHEMA_V3: &str = r#"
CREATE INDEX runs_by_sop_status ON runs (sop, status);
CREATE INDEX runs_by_sop_finish ON runs (sop, finished_at);
"#;

/// `UPGRADES[i]` brings a schema from version `i + 1` to `i + 2`.
const UPGRADES: &[&str] = &[SCHEMA_V2, SCHEMA_V3];

/// The version the connection's schema holds; 0 when there is none.
async fn stored_version(client: &impl GenericClient, name: &str) -> Result<i64, StoreError> {
    let fail = |e| pg_error(name, "read the schema version", e);
    let present: bool =
        client.query_one("SELECT to_regclass('fanin_schema') IS NOT NULL", &[]).await.map_err(fail)?.get(0);
    if !present {
        return Ok(0);
    }
    let row = client.query_opt("SELECT max(version) FROM fanin_schema", &[]).await.map_err(fail)?;
    Ok(row.and_then(|row| row.get::<_, Option<i64>>(0)).unwrap_or(0))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under the
/// advisory lock.
pub(super) async fn migrate(client: &mut Client, name: &str) -> Result<(), StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(name, doing, e);
    let transaction = client.transaction().await.map_err(fail("begin the schema transaction"))?;
    // Another opener may be upgrading a large schema: wait for it, however long.
    transaction.batch_execute("SET LOCAL lock_timeout = 0").await.map_err(fail("lock the schema"))?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await.map_err(fail("lock the schema"))?;
    let applied = match stored_version(&transaction, name).await {
        Ok(version) => apply(&transaction, name, version).await,
        Err(e) => Err(e),
    };
    if let Err(e) = applied {
        // Explicitly, not on drop: the lock must not wait for the
        // connection's task to be polled again.
        let _ = transaction.rollback().await;
        return Err(e);
    }
    transaction.commit().await.map_err(fail("commit the schema"))
}

/// Brings a schema found at `version` to [`SCHEMA_VERSION`].
async fn apply(transaction: &tokio_postgres::Transaction<'_>, name: &str, version: i64) -> Result<(), StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(name, doing, e);
    match version {
        0 => {
            transaction.batch_execute(SCHEMA_V1).await.map_err(fail("create the schema"))?;
            for sql in UPGRADES {
                transaction.batch_execute(sql).await.map_err(fail("create the schema"))?;
            }
            transaction
                .execute("INSERT INTO fanin_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])
                .await
                .map_err(fail("record the schema version"))?;
            tracing::info!(store = %name, version = SCHEMA_VERSION, "store schema created");
        }
        SCHEMA_VERSION => {}
        older if (1..SCHEMA_VERSION).contains(&older) => {
            for (from, sql) in (older..SCHEMA_VERSION).zip(&UPGRADES[(older - 1) as usize..]) {
                transaction.batch_execute(sql).await.map_err(fail("upgrade the schema"))?;
                tracing::info!(store = %name, from, to = from + 1, "store schema upgraded");
            }
            transaction
                .execute("UPDATE fanin_schema SET version = $1", &[&SCHEMA_VERSION])
                .await
                .map_err(fail("record the schema version"))?;
        }
        other => return Err(version_refused(name, other)),
    }
    Ok(())
}

/// A store opened read-only is never upgraded: it must be current.
pub(super) async fn check_version(client: &Client, name: &str) -> Result<(), StoreError> {
    match stored_version(client, name).await? {
        SCHEMA_VERSION => Ok(()),
        0 => Err(StoreError::Invalid(format!(
            "store {name}: holds no fanin store yet (nothing was ever written to it; is store.url right?)"
        ))),
        older if (1..SCHEMA_VERSION).contains(&older) => Err(StoreError::Invalid(format!(
            "store {name}: schema version {older} is older than this fanin's ({SCHEMA_VERSION}); start the daemon \
             once to upgrade it"
        ))),
        other => Err(version_refused(name, other)),
    }
}

fn version_refused(name: &str, version: i64) -> StoreError {
    if version > SCHEMA_VERSION {
        StoreError::Invalid(format!(
            "store {name}: schema version {version} is newer than this fanin understands ({SCHEMA_VERSION}); \
             upgrade fanin"
        ))
    } else {
        StoreError::Invalid(format!("store {name}: schema version {version} is not one fanin ever wrote"))
    }
}
