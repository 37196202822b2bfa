//! The copy from SQLite into PostgreSQL: every kind of row reads back the
//! same through the PostgreSQL store, numbers go on above the copied ones,
//! a target with rows or a row the target cannot take leaves the target as
//! it was, and the refusals that come before any database is touched. The
//! tests that need PostgreSQL skip, saying so, without
//! `FANIN_TEST_POSTGRES_URL`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;
use crate::event::Request;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::suite::outbox::entry;
use crate::store::suite::{audit_for, claim, run, start, t, token, Backend, TestSchema};
use crate::store::*;
use fanin_core::runs::RunStatus;

/// Tables only a PostgreSQL store has: its schema version, and the leases
/// replicas hand each other (nothing a copy carries: they lapse).
const PG_ONLY: &[&str] = &["fanin_schema", "leases"];

/// What the copy said, in order.
#[derive(Default)]
struct Recorded {
    snapshot: Option<Snapshot>,
    rows: Vec<(&'static str, u64, u64)>,
    done: Vec<(&'static str, u64)>,
}

impl Progress for Recorded {
    fn started(&mut self, snapshot: &Snapshot) {
        self.snapshot = Some(snapshot.clone());
    }

    fn rows(&mut self, table: &'static str, done: u64, total: u64) {
        self.rows.push((table, done, total));
    }

    fn table_done(&mut self, table: &'static str, rows: u64, _took: Duration) {
        self.done.push((table, rows));
    }
}

/// A SQLite store in a directory of its own.
struct Source {
    _dir: TempDir,
    path: PathBuf,
}

impl Source {
    fn new() -> Source {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fanin.db");
        Source { _dir: dir, path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    fn execute(&self, sql: &str) {
        rusqlite::Connection::open(&self.path).unwrap().execute_batch(sql).unwrap();
    }
}

async fn copy(source: &Source, to: &str) -> (Result<Copied, StoreError>, Recorded) {
    let mut recorded = Recorded::default();
    let copied = sqlite_to_postgres(&source.url(), to, Path::new("/"), &mut recorded).await;
    (copied, recorded)
}

fn one(write: Write) -> Batch {
    Batch { idempotency: None, writes: vec![write] }
}

/// Runs in several states, with and without what a webhook run carries.
async fn fill_runs(store: &dyn Store) {
    let mut webhook = run("r-webhook", "deploy", RunStatus::Completed, t(0));
    webhook.source = crate::event::Source::SopWebhook;
    webhook.request = Some(Request {
        query: json!({"env": ["prod"]}).as_object().cloned().unwrap(),
        headers: json!({"user-agent": "curl/8"}).as_object().cloned().unwrap(),
    });
    webhook.session = Some(json!({"session_id": "s-1", "state": {"round": 2}}));
    webhook.idempotency_key = Some("k-1".into());
    webhook.finished_at = Some(t(5));
    webhook.coalesced = 2;
    webhook.step = 1;
    let mut batch = start(webhook);
    batch.idempotency = Some(claim("token:abcd1234 /sop/deploy", "k-1", t(0), 86_400, json!({"runs": ["r-webhook"]})));
    store.commit(batch).await.unwrap();
    store.commit(start(run("r-deferred", "deploy", RunStatus::Deferred, t(1)))).await.unwrap();
    store.commit(start(run("r-approval", "gate", RunStatus::PendingApproval, t(2)))).await.unwrap();
    store.commit(start(run("r-agent", "agentic", RunStatus::WaitingAgent, t(3)))).await.unwrap();
    let transition = audit_for(&run("r-webhook", "deploy", RunStatus::Completed, t(5)), AuditKind::RunTransition);
    store.commit(one(transition)).await.unwrap();
    let skipped = Write::Audit(NewAudit {
        at: t(6),
        kind: AuditKind::RunTransition,
        run_id: None,
        sop: None,
        detail: json!({"deep": [[[1]]], "text": "ünïcode"}),
    });
    store.commit(one(skipped)).await.unwrap();
}

/// Steps, outbox entries in every state, tokens, cursors, cron state and
/// file states; a used and a live pairing code.
async fn fill_the_rest(store: &dyn Store) {
    store.commit(one(Write::PendStep { run_id: "r-agent".into(), index: 0, at: t(3) })).await.unwrap();
    let lease = Write::LeaseStep { run_id: "r-agent".into(), index: 0, lease_id: "l-1".into(), until: t(60), at: t(4) };
    store.commit(one(lease)).await.unwrap();
    let finish = Write::FinishStep {
        run_id: "r-agent".into(),
        index: 0,
        lease_id: "l-1".into(),
        status: StepStatus::Completed,
        output: json!({"ok": true}),
        at: t(5),
    };
    store.commit(one(finish)).await.unwrap();
    store.commit(one(Write::PendStep { run_id: "r-agent".into(), index: 1, at: t(6) })).await.unwrap();
    for (id, destination) in [("e-1", "executor"), ("e-2", "agent"), ("e-3", "agent"), ("e-4", "executor")] {
        let mut e = entry(id, "r-webhook", t(1));
        e.destination = destination.into();
        store.commit(one(Write::Enqueue(Box::new(e)))).await.unwrap();
    }
    store.commit(one(Write::Delivered { id: "e-1".into(), attempts: 1, at: t(2) })).await.unwrap();
    let dead = Write::DeadLetter { id: "e-2".into(), attempts: 5, error: "gave up".into(), at: t(3) };
    store.commit(one(dead)).await.unwrap();
    let later = Write::Reschedule { id: "e-3".into(), attempts: 1, next_attempt_at: t(30), error: "503".into() };
    store.commit(one(later)).await.unwrap();
    store.add_pairing_code("used-mac", t(0), t(3600)).await.unwrap();
    assert!(store.redeem_pairing_code("used-mac", t(1), &token("abcd1234", t(1))).await.unwrap());
    store.add_pairing_code("live-mac", t(2), t(3600)).await.unwrap();
    assert!(store.redeem_pairing_code("live-mac", t(3), &token("ef567890", t(3))).await.unwrap());
    store.revoke_tokens("ef56", t(4)).await.unwrap();
    store.add_pairing_code("unused-mac", t(5), t(3600)).await.unwrap();
    let cursor = Write::SetCursor { source: "email:ops".into(), from: None, to: "17/42".into(), at: t(7) };
    store.commit(one(cursor)).await.unwrap();
    store.commit(one(Write::CronChecked { key: "UTC|0 * * * *".into(), at: t(8) })).await.unwrap();
    let state = FileState { size: 12, mtime: t(9), sha256: "ab".repeat(32) };
    let file = Write::SetFileState { source: "filesystem:docs".into(), path: "a/b.txt".into(), state: Some(state) };
    store.commit(one(file)).await.unwrap();
}

/// Everything the trait reads back of what the fill functions wrote.
#[derive(Debug, PartialEq)]
struct Everything {
    runs: Vec<RunRecord>,
    audit: Vec<AuditRecord>,
    steps: Vec<StepRecord>,
    leasable: Option<StepRecord>,
    outbox: Vec<OutboxRecord>,
    due: Vec<(String, i64)>,
    tokens: Vec<TokenRecord>,
    idempotency: Option<Value>,
    cursor: Option<Cursor>,
    cron: Option<chrono::DateTime<chrono::Utc>>,
    file_states: Vec<(String, FileState)>,
    sop_loads: Vec<SopLoad>,
    tallies: Tallies,
}

async fn everything(store: &dyn Store) -> Everything {
    let due = store.outbox_due("agent", t(60), 0).await.unwrap();
    let mut sop_loads = store.sop_loads().await.unwrap();
    sop_loads.sort_by(|a, b| a.sop.cmp(&b.sop));
    Everything {
        runs: store.list_runs(&RunQuery::default()).await.unwrap(),
        audit: store.audit(&AuditQuery::default()).await.unwrap(),
        steps: store.steps("r-agent").await.unwrap(),
        leasable: store.next_leasable_step(t(60)).await.unwrap(),
        outbox: store.outbox_list(None, 0).await.unwrap(),
        due: due.into_iter().map(|e| (e.id, e.seq)).collect(),
        tokens: store.list_tokens().await.unwrap(),
        idempotency: store.idempotency_response("token:abcd1234 /sop/deploy", "k-1", t(10)).await.unwrap(),
        cursor: store.cursor("email:ops").await.unwrap(),
        cron: store.cron_last_check("UTC|0 * * * *").await.unwrap(),
        file_states: store.file_states("filesystem:docs").await.unwrap(),
        sop_loads,
        tallies: store.tallies().await.unwrap(),
    }
}

/// A fresh schema in the test database, or `None` (skipped).
async fn target(test: &str) -> Option<TestSchema> {
    match Backend::postgres(test).await? {
        Backend::Postgres(schema) => Some(schema),
        Backend::Sqlite(_) => unreachable!(),
    }
}

#[tokio::test]
async fn every_row_reads_back_the_same_and_numbers_go_on_above_the_copied_ones() {
    let Some(schema) = target("every_row_reads_back_the_same").await else { return };
    let source = Source::new();
    let sqlite = SqliteStore::open(&source.path).unwrap();
    fill_runs(&sqlite).await;
    fill_the_rest(&sqlite).await;
    let mut last = entry("e-pruned", "r-webhook", t(1));
    last.status = OutboxStatus::Delivered;
    sqlite.commit(one(Write::Enqueue(Box::new(last)))).await.unwrap();
    drop(sqlite);
    // A delivered entry pruned: its number was handed out, and stays used.
    let pruned: i64 = rusqlite::Connection::open(&source.path)
        .unwrap()
        .query_row("DELETE FROM outbox WHERE id = 'e-pruned' RETURNING seq", [], |row| row.get(0))
        .unwrap();
    let before = everything(&SqliteStore::open_read_only(&source.path).unwrap()).await;
    assert_eq!((before.runs.len(), before.audit.len(), before.outbox.len(), before.tokens.len()), (4, 6, 4, 2));

    let (copied, recorded) = copy(&source, &schema.url).await;
    let copied = copied.expect("copied");
    let pg = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    assert_eq!(everything(&pg).await, before);
    assert!(!pg.pairing_lookup("unused-mac", t(6)).await.unwrap().matches, "pairing codes stay behind");

    let expected: Vec<(&str, u64)> = vec![
        ("runs", 4),
        ("audit", 6),
        ("run_steps", 2),
        ("outbox", 4),
        ("idempotency", 1),
        ("tokens", 2),
        ("cron_state", 1),
        ("source_cursors", 1),
        ("file_states", 1),
    ];
    assert_eq!(copied.tables, expected);
    assert_eq!(recorded.done, expected, "each table said done with its rows");
    assert_eq!(
        copied.not_copied.iter().map(|(table, rows, _)| (*table, *rows)).collect::<Vec<_>>(),
        [("pairing_codes", 3)]
    );
    let snapshot = recorded.snapshot.expect("the snapshot was said first");
    assert_eq!(snapshot.rows, expected.iter().map(|(_, rows)| *rows).collect::<Vec<_>>());
    assert!(recorded.rows.iter().all(|(_, done, total)| done <= total), "{:?}", recorded.rows);
    assert!(!copied.to.contains('?'), "the target is named without its query: {}", copied.to);

    // What is written next is numbered above everything copied.
    pg.commit(start(run("r-next", "deploy", RunStatus::Running, t(20)))).await.unwrap();
    pg.commit(one(Write::Enqueue(Box::new(entry("e-next", "r-next", t(20)))))).await.unwrap();
    let audit = pg.audit(&AuditQuery::default()).await.unwrap();
    let copied_audit = before.audit.iter().map(|a| a.seq).max().unwrap();
    assert!(audit.last().unwrap().seq > copied_audit, "{audit:?}");
    assert!(pg.outbox_get("e-next").await.unwrap().unwrap().seq > pruned, "a pruned entry's number is not reused");
    let client = schema.client().await;
    let seqs = client.query("SELECT seq FROM runs ORDER BY seq", &[]).await.unwrap();
    let seqs: Vec<i64> = seqs.iter().map(|row| row.get(0)).collect();
    assert_eq!(seqs.len(), 5);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[4] == seqs[3] + 1, "{seqs:?}");
}

#[tokio::test]
async fn a_target_with_rows_is_refused_naming_the_table_and_left_as_it_was() {
    let Some(schema) = target("a_target_with_rows_is_refused").await else { return };
    let source = Source::new();
    fill_runs(&SqliteStore::open(&source.path).unwrap()).await;
    let pg = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    pg.commit(one(Write::CronChecked { key: "UTC|* * * * *".into(), at: t(1) })).await.unwrap();
    pg.add_pairing_code("mac", t(1), t(60)).await.unwrap();

    let (copied, recorded) = copy(&source, &schema.url).await;
    let refused = copied.expect_err("a store with rows is no target");
    let message = refused.to_string();
    assert!(matches!(refused, StoreError::Invalid(_)), "{refused:?}");
    assert!(message.contains("not empty: tables cron_state, pairing_codes have rows"), "{message}");
    assert!(recorded.snapshot.is_none(), "nothing was read");
    assert_eq!(pg.list_runs(&RunQuery::default()).await.unwrap(), []);
    assert_eq!(pg.cron_last_check("UTC|* * * * *").await.unwrap(), Some(t(1)));
}

#[tokio::test]
async fn a_row_the_target_cannot_take_fails_the_copy_and_leaves_the_target_empty() {
    let Some(schema) = target("a_row_the_target_cannot_take").await else { return };
    let source = Source::new();
    let sqlite = SqliteStore::open(&source.path).unwrap();
    fill_runs(&sqlite).await;
    drop(sqlite);
    source.execute("UPDATE audit SET at = 'yesterday' WHERE seq = (SELECT max(seq) FROM audit)");

    let (copied, recorded) = copy(&source, &schema.url).await;
    let message = copied.expect_err("refused").to_string();
    assert!(
        message.contains("table audit, row seq 6: column at holds the text \"yesterday\"")
            && message.contains("BIGINT"),
        "{message}"
    );
    assert_eq!(recorded.done, [("runs", 4)], "runs were in the transaction before audit failed");
    let pg = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    assert_eq!(pg.list_runs(&RunQuery::default()).await.unwrap(), [], "rolled back");

    // Mended, the same target takes the copy.
    source.execute("UPDATE audit SET at = 6000000 WHERE seq = 6");
    let (copied, _) = copy(&source, &schema.url).await;
    assert_eq!(copied.unwrap().tables[0], ("runs", 4));
}

#[tokio::test]
async fn the_copied_tables_are_every_column_of_both_schemas() {
    let source = Source::new();
    drop(SqliteStore::open(&source.path).unwrap());
    let conn = rusqlite::Connection::open(&source.path).unwrap();
    let mut statement =
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'").unwrap();
    let sqlite_tables: BTreeSet<String> =
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    let known: BTreeSet<String> =
        TABLES.iter().map(|t| t.name).chain(NOT_COPIED.iter().map(|(name, _)| *name)).map(String::from).collect();
    assert_eq!(sqlite_tables, known, "every SQLite table is copied or said not to be");
    for table in TABLES {
        let mut info = conn.prepare(&format!("SELECT name, type FROM pragma_table_info('{}')", table.name)).unwrap();
        let columns: BTreeSet<(String, String)> =
            info.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(columns, columns_of(table, "INTEGER", "TEXT"), "SQLite's {}", table.name);
    }

    let Some(schema) = target("the_copied_tables_are_every_column_of_both_schemas").await else { return };
    drop(PostgresStore::open(&schema.url, Path::new("/")).await.unwrap());
    let rows = schema
        .client()
        .await
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT FROM information_schema.columns
             WHERE table_schema::TEXT = $1",
            &[&schema.name],
        )
        .await
        .unwrap();
    let mut pg_tables: BTreeSet<String> = rows.iter().map(|row| row.get(0)).collect();
    for only in PG_ONLY {
        pg_tables.remove(*only);
    }
    assert_eq!(pg_tables, known, "every PostgreSQL table is copied or said not to be");
    for table in TABLES {
        let columns: BTreeSet<(String, String)> = rows
            .iter()
            .filter(|row| row.get::<_, String>(0) == table.name)
            .map(|row| (row.get(1), row.get(2)))
            .collect();
        assert_eq!(columns, columns_of(table, "bigint", "text"), "PostgreSQL's {}", table.name);
    }
}

fn columns_of(table: &Table, integer: &str, text: &str) -> BTreeSet<(String, String)> {
    let kind = |kind: &Kind| match kind {
        Kind::Integer => integer.to_owned(),
        Kind::Text => text.to_owned(),
    };
    table.columns.iter().map(|(name, k)| ((*name).to_owned(), kind(k))).collect()
}

/// A URL no test ever reaches: the refusals below come before it is dialled.
const NOWHERE: &str = "postgres://nobody@127.0.0.1:1/none";

#[tokio::test]
async fn only_sqlite_into_postgres_is_copied() {
    let source = Source::new();
    let cases = [
        (NOWHERE.to_owned(), NOWHERE, "--from names a PostgreSQL store"),
        ("mysql://u:secret@h/db".to_owned(), NOWHERE, "--from is not a sqlite:// URL"),
        (source.url(), "mysql://u:secret@h/db", "--to is not a postgres:// URL"),
    ];
    for (from, to, expected) in cases {
        let refused = sqlite_to_postgres(&from, to, Path::new("/"), &mut Recorded::default()).await.unwrap_err();
        let message = refused.to_string();
        assert!(message.contains(expected) && !message.contains("secret"), "{from} → {to}: {message}");
    }
    let missing = sqlite_to_postgres(&source.url(), NOWHERE, Path::new("/"), &mut Recorded::default()).await;
    assert!(missing.unwrap_err().to_string().contains("no such file"));
    assert!(!files::lock_path(&source.path).exists(), "nothing is created beside a missing source");
}

#[tokio::test]
async fn a_source_a_daemon_runs_on_or_of_another_version_is_refused_before_the_target_is_dialled() {
    let source = Source::new();
    drop(SqliteStore::open(&source.path).unwrap());
    let held = files::DaemonLock::acquire(&source.path).unwrap();
    let refused = sqlite_to_postgres(&source.url(), NOWHERE, Path::new("/"), &mut Recorded::default()).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("another fanin daemon is running on it"), "{message}");
    drop(held);

    rusqlite::Connection::open(&source.path).unwrap().pragma_update(None, "user_version", 7).unwrap();
    let refused = sqlite_to_postgres(&source.url(), NOWHERE, Path::new("/"), &mut Recorded::default()).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("schema version 7 is older"), "{message}");
}

#[tokio::test]
async fn a_relative_source_is_taken_from_the_given_directory() {
    let source = Source::new();
    drop(SqliteStore::open(&source.path).unwrap());
    let dir = source.path.parent().unwrap();
    let relative = sqlite_to_postgres("sqlite://fanin.db", NOWHERE, dir, &mut Recorded::default()).await;
    let message = relative.unwrap_err().to_string();
    assert!(
        message.contains("postgres://nobody@127.0.0.1:1/none"),
        "the source was found, the target dialled: {message}"
    );
}
