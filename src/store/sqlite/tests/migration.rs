//! Schema versions: files of versions 1 to 4 are upgraded in place and keep
//! their data (but for version 3's pairing codes, which no key can verify);
//! a new file and upgraded ones end with the same schema.

use rusqlite::Connection;

use crate::store::codec::micros;

use super::*;

/// The schema fanin wrote as version 1, kept verbatim so the upgrade is
/// tested against what is really on disk out there.
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
PRAGMA user_version = 1;
";

/// What version 2 added to version 1, verbatim as fanin wrote it.
const UPGRADE_TO_V2: &str = "
ALTER TABLE runs ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
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
);
CREATE INDEX run_steps_leasable ON run_steps (created_at) WHERE status IN ('pending', 'leased');

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
CREATE INDEX outbox_undelivered_by_run ON outbox (run_id, seq) WHERE status IN ('pending', 'dead');
PRAGMA user_version = 2;
";

/// A version-2 file: the version-1 file's rows, then a run waiting in the
/// backlog, its step records (one leased, one pending) and an outbox entry,
/// written as fanin 2 wrote them.
fn write_v2_file(path: &std::path::Path) {
    write_v1_file(path);
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(UPGRADE_TO_V2).unwrap();
    conn.execute(
        "INSERT INTO runs (run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic,
             event_id, payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced, step)
         VALUES ('waiting', 'deploy', '1.0.0', 'deferred', 0, 'webhook /sop/deploy', 'webhook', '/sop/deploy',
             'e-waiting', '{\"v\":2}', NULL, NULL, ?1, ?1, NULL, 0, 0)",
        [micros(t(20))],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO audit (at, kind, run_id, sop, detail) VALUES (?1, 'run_deferred', 'waiting', 'deploy', '{}')",
        [micros(t(20))],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO run_steps (run_id, step_index, status, lease_id, leased_until, attempts, created_at, updated_at)
         VALUES ('old', 1, 'leased', 'lease-1', ?2, 1, ?1, ?1), ('old', 2, 'pending', NULL, NULL, 0, ?1, ?1)",
        [micros(t(21)), micros(t(99))],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO outbox (id, run_id, destination, envelope, status, next_attempt_at, created_at)
         VALUES ('env-1', 'old', 'agent', '{}', 'pending', ?1, ?1)",
        [micros(t(22))],
    )
    .unwrap();
}

/// A version-1 file holding one finished run, its audit record, a token
/// and a cron check, written as fanin 1 wrote them.
fn write_v1_file(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA_V1).unwrap();
    conn.execute(
        "INSERT INTO runs (run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic,
             event_id, payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced)
         VALUES ('old', 'deploy', '1.0.0', 'completed', 0, 'webhook /sop/deploy', 'webhook', '/sop/deploy',
             'e-old', '{\"v\":1}', 'ip:127.0.0.1', 'k-old', ?1, ?2, ?2, 1)",
        [micros(t(0)), micros(t(5))],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO audit (at, kind, run_id, sop, detail) VALUES (?1, 'run_started', 'old', 'deploy', '{}')",
        [micros(t(0))],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO tokens (prefix, hash, subject, created_at) VALUES ('abcd1234', 'abcd1234-hash', 'token:abcd1234', ?1)",
        [micros(t(1))],
    )
    .unwrap();
    conn.execute("INSERT INTO cron_state (key, last_check) VALUES ('cron-key', ?1)", [micros(t(2))]).unwrap();
}

/// The `pairing_codes` table of versions 1 to 3, verbatim.
const PAIRING_CODES_V1: &str = "
CREATE TABLE pairing_codes (
    hash       TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);";

/// Version 6 added two columns to `runs`, version 7 the sources' cursors
/// and version 8 the file states; dropping them leaves a new file as
/// version 5 had it.
const RUNS_V5: &str = "ALTER TABLE runs DROP COLUMN request; ALTER TABLE runs DROP COLUMN session; \
                       DROP TABLE source_cursors; DROP TABLE file_states;";

/// A version-5 file: a new file without what versions 6 to 8 added. It
/// holds a webhook run.
async fn write_v5_file(path: &std::path::Path) {
    let store = SqliteStore::open(path).unwrap();
    let mut r = run("hook", "deploy", RunStatus::Deferred, t(0));
    r.source = Source::SopWebhook;
    store.commit(start(r)).await.unwrap();
    drop(store);
    Connection::open(path).unwrap().execute_batch(&format!("{RUNS_V5} PRAGMA user_version = 5;")).unwrap();
}

/// A version-3 file: versions 4 to 8 differ only in `pairing_codes`, the
/// outbox's due index, two columns of `runs`, `source_cursors` and
/// `file_states`, so a new file with that
/// table put back as version 3 had it, without the index and the columns,
/// is one. It holds a run and a live code stored, as version 3 stored
/// codes, as SHA-256.
async fn write_v3_file(path: &std::path::Path) {
    let store = SqliteStore::open(path).unwrap();
    store.commit(start(run("kept", "deploy", RunStatus::Running, t(0)))).await.unwrap();
    drop(store);
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "{RUNS_V5} DROP TABLE pairing_codes; {PAIRING_CODES_V1} DROP INDEX outbox_due; PRAGMA user_version = 3;"
    ))
    .unwrap();
    conn.execute(
        "INSERT INTO pairing_codes (hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
        rusqlite::params![crate::operations::tokens::sha256_hex("123456"), micros(t(0)), micros(t(3600))],
    )
    .unwrap();
}

fn user_version(path: &std::path::Path) -> i64 {
    Connection::open(path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    write_v1_file(&path);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), 8);
    let old = store.get_run("old").await.unwrap().expect("the v1 run is still there");
    assert_eq!((old.status, old.finished_at, old.coalesced, old.step), (RunStatus::Completed, Some(t(5)), 1, 0));
    assert_eq!((old.payload, old.client.as_deref()), (json!({"v": 1}), Some("ip:127.0.0.1")));
    let audit = store.audit(&all_audit()).await.unwrap();
    assert_eq!((audit.len(), audit[0].kind), (1, AuditKind::RunStarted));
    assert_eq!(store.find_token("abcd1234").await.unwrap(), Some(token("abcd1234", t(1))));
    assert_eq!(store.cron_last_check("cron-key").await.unwrap(), Some(t(2)));

    // The new tables and column are usable, and the run table still
    // numbers after the old rows.
    let mut r = run("new", "deploy", RunStatus::WaitingAgent, t(10));
    r.step = 1;
    let batch = Batch {
        idempotency: None,
        writes: vec![
            Write::InsertRun(Box::new(r.clone())),
            Write::PendStep { run_id: "new".into(), index: 1, at: t(10) },
            Write::SetStep { run_id: "old".into(), from: 0, to: 2, at: t(11) },
        ],
    };
    store.commit(batch).await.unwrap();
    assert_eq!(store.get_run("new").await.unwrap(), Some(r));
    assert_eq!(store.get_run("old").await.unwrap().unwrap().step, 2);
    assert_eq!(store.steps("new").await.unwrap().len(), 1);
    drop(store);

    // Opening again is a no-op: the version is current.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), 8);
    assert_eq!(store.list_runs(&all_runs()).await.unwrap().len(), 2);
}

/// Every table's columns and every index, as SQLite describes them.
fn schema_shape(path: &std::path::Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut shape = Vec::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        // The statement shows what `table_info` does not: AUTOINCREMENT, WITHOUT ROWID.
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [&table], |r| r.get(0)).unwrap();
        shape.push(format!("table {table}: {sql}"));
        let mut info = conn.prepare(&format!("PRAGMA table_info({table})")).unwrap();
        let columns = info
            .query_map([], |r| {
                Ok(format!(
                    "{table}.{}: {} notnull={} default={:?} pk={}",
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?
                ))
            })
            .unwrap();
        shape.extend(columns.map(Result::unwrap));
    }
    let mut indexes =
        conn.prepare("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name").unwrap();
    let indexes = indexes
        .query_map([], |r| {
            Ok(format!(
                "index {} on {}: {:?}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?
            ))
        })
        .unwrap();
    shape.extend(indexes.map(Result::unwrap));
    shape
}

#[tokio::test]
async fn a_new_file_and_an_upgraded_one_have_the_same_schema() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh/fanin.db");
    let from_v1 = dir.path().join("from-v1/fanin.db");
    let from_v2 = dir.path().join("from-v2/fanin.db");
    let from_v3 = dir.path().join("from-v3/fanin.db");
    let from_v5 = dir.path().join("from-v5/fanin.db");
    drop(SqliteStore::open(&fresh).unwrap());
    write_v5_file(&from_v5).await;
    drop(SqliteStore::open(&from_v5).unwrap());
    write_v3_file(&from_v3).await;
    drop(SqliteStore::open(&from_v3).unwrap());
    write_v1_file(&from_v1);
    drop(SqliteStore::open(&from_v1).unwrap());
    write_v2_file(&from_v2);
    drop(SqliteStore::open(&from_v2).unwrap());

    let fresh_shape = schema_shape(&fresh);
    assert!(fresh_shape.iter().any(|c| c.starts_with("runs.step: INTEGER notnull=1")), "{fresh_shape:#?}");
    assert!(fresh_shape.iter().any(|c| c.starts_with("outbox.")), "{fresh_shape:#?}");
    assert!(fresh_shape.iter().any(|c| c.starts_with("run_steps.")), "{fresh_shape:#?}");
    assert!(fresh_shape.iter().any(|c| c.contains("WITHOUT ROWID")), "{fresh_shape:#?}");
    assert!(fresh_shape.iter().any(|c| c.starts_with("runs.request: TEXT notnull=0")), "{fresh_shape:#?}");
    assert_eq!(fresh_shape, schema_shape(&from_v5));
    assert_eq!(fresh_shape, schema_shape(&from_v1));
    assert_eq!(fresh_shape, schema_shape(&from_v2));
    assert_eq!(fresh_shape, schema_shape(&from_v3));
}

#[tokio::test]
async fn a_version_3_file_is_upgraded_and_its_unkeyed_pairing_codes_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    write_v3_file(&path).await;

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), 8);
    assert!(store.get_run("kept").await.unwrap().is_some());
    let count: i64 =
        Connection::open(&path).unwrap().query_row("SELECT COUNT(*) FROM pairing_codes", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 0, "a SHA-256 code can neither be verified nor left readable");
    store.add_pairing_code("mac", t(1), t(100)).await.unwrap();
    assert!(store.pairing_lookup("mac", t(2)).await.unwrap().matches);
}

#[tokio::test]
async fn a_version_5_file_is_upgraded_and_its_runs_have_no_request_or_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    write_v5_file(&path).await;

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), 8);
    let old = store.get_run("hook").await.unwrap().expect("the v4 run is still there");
    assert_eq!((&old.request, &old.session, old.status), (&None, &None, RunStatus::Deferred));
    // Its trigger event still has the webhook's shape, with nothing known
    // of the request.
    let trigger = crate::envelope::trigger_from_run(&old);
    assert_eq!((&trigger["query"], &trigger["headers"]), (&json!({}), &json!({})));

    let mut r = run("new", "deploy", RunStatus::Running, t(10));
    r.request = Some(crate::event::Request::default());
    r.session = Some(json!({"session_id": "s", "state": {}, "stack": []}));
    store.commit(start(r.clone())).await.unwrap();
    assert_eq!(store.get_run("new").await.unwrap(), Some(r));
}

#[tokio::test]
async fn a_version_2_file_is_upgraded_in_place_and_keeps_its_data_and_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    write_v2_file(&path);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), 8);
    let runs = store.list_runs(&all_runs()).await.unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["waiting", "old"], "newest first");
    assert_eq!((runs[0].status, &runs[0].payload), (RunStatus::Deferred, &json!({"v": 2})));
    assert_eq!(runs[1].finished_at, Some(t(5)));
    let audit = store.audit(&all_audit()).await.unwrap();
    let kinds: Vec<(i64, AuditKind)> = audit.iter().map(|a| (a.seq, a.kind)).collect();
    assert_eq!(kinds, [(1, AuditKind::RunStarted), (2, AuditKind::RunDeferred)]);
    let steps = store.steps("old").await.unwrap();
    let steps: Vec<(u32, StepStatus, Option<&str>)> =
        steps.iter().map(|s| (s.index, s.status, s.lease_id.as_deref())).collect();
    assert_eq!(steps, [(1, StepStatus::Leased, Some("lease-1")), (2, StepStatus::Pending, None)]);
    // Admission reads the backlog back through the new partial index.
    let loads = store.sop_loads().await.unwrap();
    assert_eq!(
        loads.iter().map(|l| (l.sop.as_str(), l.deferred.clone())).collect::<Vec<_>>(),
        [("deploy", vec!["waiting".to_string()])]
    );
    assert_eq!(store.outbox_get("env-1").await.unwrap().map(|e| e.seq), Some(1));

    // New rows number after the old ones, in every rebuilt table.
    let r = run("new", "deploy", RunStatus::WaitingAgent, t(30));
    let audit_new = Write::Audit(NewAudit {
        at: t(30),
        kind: AuditKind::RunStarted,
        run_id: Some("new".into()),
        sop: Some("deploy".into()),
        detail: json!({}),
    });
    store.commit(Batch { idempotency: None, writes: vec![Write::InsertRun(Box::new(r)), audit_new] }).await.unwrap();
    let audit = store.audit(&all_audit()).await.unwrap();
    assert_eq!(audit.last().map(|a| a.seq), Some(3));
    assert_eq!(store.list_runs(&all_runs()).await.unwrap()[0].run_id, "new");
}

#[tokio::test]
async fn a_version_fanin_never_wrote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path).unwrap().pragma_update(None, "user_version", -1).unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::Invalid(m)) => assert!(m.contains("schema version -1") && m.contains("fanin.db"), "{m}"),
        Err(other) => panic!("expected Invalid, got {other:?}"),
        Ok(_) => panic!("an unknown schema was opened"),
    }
}
