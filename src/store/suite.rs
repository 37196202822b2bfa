//! One suite of store tests, run against both back ends: every test of the
//! [`Store`] trait's behaviour is written once as `async fn name(b: Backend)`
//! and listed in [`suite!`], which makes a `name::sqlite` and a
//! `name::postgres` test of it. SQLite's come with a fresh file in a
//! temporary directory; PostgreSQL's with a fresh schema in the database
//! `FANIN_TEST_POSTGRES_URL` names (dropped at the end), and pass saying
//! they were skipped when it is unset. What only one back end has (WAL,
//! file modes, upgrades of old files, TLS modes) is tested beside it.

mod basics;
pub(crate) mod outbox;
mod runs;
mod steps;

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::postgres::PostgresStore;
use super::sqlite::{SqliteStore, WriterStats};
use super::*;
use crate::event::{Request, Source};
use crate::store::codec::micros;
use fanin_core::runs::RunStatus;

/// Makes a `sqlite` and a `postgres` test of each listed suite function.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::store::suite::Backend::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(backend) = $crate::store::suite::Backend::postgres(stringify!($name)).await {
                    super::$name(backend).await
                }
            }
        }
    )*};
}
pub(crate) use suite;

/// Whole seconds past a fixed instant: stored times round-trip exactly.
pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

pub(crate) fn run(run_id: &str, sop: &str, status: RunStatus, started_at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        sop: sop.into(),
        sop_version: "1.0.0".into(),
        status,
        trigger_index: 1,
        trigger: "mqtt sensors/+/alert if $.severity >= 2".into(),
        source: Source::Mqtt,
        topic: "sensors/a/alert".into(),
        event_id: format!("event-{run_id}"),
        payload: json!({"severity": 3, "tags": ["a", "b"], "nested": {"x": null}}),
        request: None,
        session: None,
        client: Some("broker:fanin-1".into()),
        idempotency_key: None,
        started_at,
        updated_at: started_at,
        finished_at: None,
        coalesced: 0,
        step: 0,
    }
}

pub(crate) fn audit_for(run: &RunRecord, kind: AuditKind) -> Write {
    Write::Audit(NewAudit {
        at: run.started_at,
        kind,
        run_id: Some(run.run_id.clone()),
        sop: Some(run.sop.clone()),
        detail: json!({"event_id": run.event_id}),
    })
}

/// A run and its run-start audit record, as the dispatcher writes them.
pub(crate) fn start(run: RunRecord) -> Batch {
    let audit = audit_for(&run, AuditKind::RunStarted);
    Batch { idempotency: None, writes: vec![Write::InsertRun(Box::new(run)), audit] }
}

pub(crate) fn set_status(run_id: &str, from: RunStatus, to: RunStatus, at: DateTime<Utc>) -> Batch {
    Batch { idempotency: None, writes: vec![Write::SetStatus { run_id: run_id.into(), from, to, at }] }
}

pub(crate) fn claim(
    scope: &str,
    key: &str,
    created_at: DateTime<Utc>,
    ttl_secs: i64,
    response: Value,
) -> IdempotencyClaim {
    IdempotencyClaim {
        scope: scope.into(),
        key: key.into(),
        created_at,
        expires_at: created_at + chrono::Duration::seconds(ttl_secs),
        response,
    }
}

pub(crate) fn token(prefix: &str, created_at: DateTime<Utc>) -> TokenRecord {
    TokenRecord {
        prefix: prefix.into(),
        hash: format!("{prefix}-hash"),
        subject: format!("token:{prefix}"),
        created_at,
        revoked_at: None,
    }
}

pub(crate) fn all_runs() -> RunQuery {
    RunQuery::default()
}

pub(crate) fn all_audit() -> AuditQuery {
    AuditQuery::default()
}

pub(crate) fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}

/// Where a test's store lives.
pub(crate) enum Backend {
    Sqlite(TempDir),
    Postgres(TestSchema),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// A fresh schema, or `None` (saying so) when no database is named.
    pub async fn postgres(test: &str) -> Option<Backend> {
        match std::env::var("FANIN_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(TestSchema::create(&url).await)),
            _ => {
                eprintln!("{test}: skipped on PostgreSQL: FANIN_TEST_POSTGRES_URL is not set (.ci/run sets it when 5432 answers)");
                None
            }
        }
    }

    /// The SQLite file; nested, so `open` has to create the directories.
    pub fn db_path(&self) -> std::path::PathBuf {
        match self {
            Backend::Sqlite(dir) => dir.path().join("data/nested/fanin.db"),
            Backend::Postgres(_) => panic!("a PostgreSQL store has no file"),
        }
    }

    /// What the store's messages call it.
    pub fn name_hint(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "fanin.db",
            Backend::Postgres(_) => "postgres://",
        }
    }

    /// Opens (creating it the first time) the test's store.
    pub async fn open(&self) -> Opened {
        self.try_open().await.expect("open store")
    }

    pub async fn try_open(&self) -> Result<Opened, StoreError> {
        Ok(match self {
            Backend::Sqlite(_) => Opened::sqlite(SqliteStore::open(&self.db_path())?),
            Backend::Postgres(schema) => Opened::postgres(PostgresStore::open(&schema.url, Path::new("/")).await?),
        })
    }

    pub async fn open_read_only(&self) -> Opened {
        match self {
            Backend::Sqlite(_) => Opened::sqlite(SqliteStore::open_read_only(&self.db_path()).expect("open read-only")),
            Backend::Postgres(schema) => Opened::postgres(
                PostgresStore::open_read_only(&schema.url, Path::new("/")).await.expect("open read-only"),
            ),
        }
    }

    /// Runs SQL on the store's tables behind its back (the SQL both
    /// databases read alike).
    pub async fn execute(&self, sql: &str) {
        match self {
            Backend::Sqlite(_) => {
                rusqlite::Connection::open(self.db_path()).unwrap().execute_batch(sql).unwrap();
            }
            Backend::Postgres(schema) => schema.client().await.batch_execute(sql).await.unwrap(),
        }
    }

    /// The integer columns of the rows `sql` selects, NULL as `None`.
    pub async fn integers(&self, sql: &str) -> Vec<Vec<Option<i64>>> {
        match self {
            Backend::Sqlite(_) => {
                let conn = rusqlite::Connection::open(self.db_path()).unwrap();
                let mut statement = conn.prepare(sql).unwrap();
                let width = statement.column_count();
                let rows = statement
                    .query_map([], |row| (0..width).map(|i| row.get(i)).collect::<rusqlite::Result<Vec<_>>>())
                    .unwrap();
                rows.map(Result::unwrap).collect()
            }
            Backend::Postgres(schema) => {
                let rows = schema.client().await.query(sql, &[]).await.unwrap();
                rows.iter().map(|row| (0..row.len()).map(|i| row.get(i)).collect()).collect()
            }
        }
    }

    /// The schema version this fanin writes in this back end.
    pub fn schema_version(&self) -> i64 {
        match self {
            Backend::Sqlite(_) => super::sqlite::SCHEMA_VERSION,
            Backend::Postgres(_) => super::postgres::SCHEMA_VERSION,
        }
    }

    /// Makes the stored schema say `version`, as a newer or older fanin's would.
    pub async fn set_schema_version(&self, version: i64) {
        match self {
            Backend::Sqlite(_) => rusqlite::Connection::open(self.db_path())
                .unwrap()
                .pragma_update(None, "user_version", version)
                .unwrap(),
            Backend::Postgres(_) => self.execute(&format!("UPDATE fanin_schema SET version = {version}")).await,
        }
    }
}

/// A store as a test holds it: the trait object, and the hooks each back
/// end's writer has for tests.
pub(crate) struct Opened {
    store: Arc<dyn Store>,
    concrete: Concrete,
}

enum Concrete {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

/// Lets a held writer go on.
pub(crate) enum Release {
    Sqlite(std::sync::mpsc::Sender<()>),
    Postgres(tokio::sync::oneshot::Sender<()>),
}

impl Release {
    pub fn release(self) {
        match self {
            Release::Sqlite(release) => release.send(()).unwrap(),
            Release::Postgres(release) => release.send(()).unwrap(),
        }
    }
}

impl Opened {
    fn sqlite(store: SqliteStore) -> Opened {
        let store = Arc::new(store);
        Opened { store: store.clone(), concrete: Concrete::Sqlite(store) }
    }

    fn postgres(store: PostgresStore) -> Opened {
        let store = Arc::new(store);
        Opened { store: store.clone(), concrete: Concrete::Postgres(store) }
    }

    pub fn stats(&self) -> WriterStats {
        match &self.concrete {
            Concrete::Sqlite(store) => store.stats(),
            Concrete::Postgres(store) => store.stats(),
        }
    }

    /// Makes the writer finish what it has and wait until released.
    pub async fn hold_writer(&self) -> Release {
        match &self.concrete {
            Concrete::Sqlite(store) => Release::Sqlite(super::sqlite::hold_writer(store).await),
            Concrete::Postgres(store) => Release::Postgres(store.hold_writer().await),
        }
    }

    /// Waits (without a clock) until `n` requests sit in the writer's queue.
    pub async fn wait_until_queued(&self, n: usize) {
        loop {
            let queued = match &self.concrete {
                Concrete::Sqlite(store) => super::sqlite::queued(store),
                Concrete::Postgres(store) => store.queued(),
            };
            if queued >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

impl Deref for Opened {
    type Target = dyn Store;

    fn deref(&self) -> &(dyn Store + 'static) {
        self.store.as_ref()
    }
}

/// A schema of its own in the test database, dropped with it. Its
/// connections are named after it (`application_name`), so the ones a
/// test leaves open can be ended before the schema is dropped.
pub(crate) struct TestSchema {
    /// The server's URL as given.
    base: String,
    /// The URL whose connections use the schema.
    pub url: String,
    pub name: String,
}

impl TestSchema {
    pub async fn create(base: &str) -> TestSchema {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}&application_name={name}", with_search_path(base, &name));
        let schema = TestSchema { base: base.to_owned(), url, name };
        let client = schema.admin().await;
        client.batch_execute(&format!("CREATE SCHEMA {}", schema.name)).await.expect("create the test schema");
        schema
    }

    async fn admin(&self) -> tokio_postgres::Client {
        connect(&self.base).await
    }

    /// A plain connection on the schema, for reading and writing behind the
    /// store's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Waits until one of the schema's connections waits for an advisory
    /// lock another holds: the sign that a hold is being waited for.
    pub async fn wait_for_advisory_waiter(&self, what: &str) {
        let client = self.client().await;
        let waiting = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity p ON p.pid = l.pid
                       WHERE l.locktype = 'advisory' AND NOT l.granted AND p.application_name = $1";
        crate::test_support::eventually(what, || async {
            client.query_one(waiting, &[&self.name]).await.unwrap().get::<_, i64>(0) == 1
        })
        .await;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("test database");
    tokio::spawn(connection);
    client
}

/// `url` with `options=-csearch_path=<schema>` added to its query.
pub(crate) fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

impl Drop for TestSchema {
    /// On a thread of its own: this may run while a test unwinds, inside a
    /// runtime that must not block.
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let admin = connect(&base).await;
                // The test's runtime may be the one this blocks, so its
                // connections (an open transaction among them) can no
                // longer be driven to their end: end them here.
                let ended = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE application_name = $1 AND pid <> pg_backend_pid()";
                admin.execute(ended, &[&name]).await?;
                admin.batch_execute(&format!("DROP SCHEMA {name} CASCADE")).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test schema {}: could not be dropped", self.name);
        }
    }
}
