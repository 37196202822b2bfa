//! What only the PostgreSQL store has: its URL and TLS modes against the
//! real server, the schema created once by openers racing under the
//! advisory lock, versions it refuses, the daemon lock, and rows written
//! behind its back. The trait's behaviour is the shared suite's
//! (`store::suite`). Each test skips, saying so, without
//! `FANIN_TEST_POSTGRES_URL`.

use serde_json::json;

use super::*;
use crate::store::suite::{t, with_search_path, Backend, TestSchema};

/// The test database's URL and a fresh schema in it, or `None` (skipped).
async fn schema(test: &str) -> Option<TestSchema> {
    match Backend::postgres(test).await? {
        Backend::Postgres(schema) => Some(schema),
        Backend::Sqlite(_) => unreachable!(),
    }
}

fn run(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        sop: "s".into(),
        sop_version: "1".into(),
        status: fanin_core::runs::RunStatus::Running,
        trigger_index: 0,
        trigger: "manual".into(),
        source: crate::event::Source::Manual,
        topic: "s".into(),
        event_id: format!("ev-{run_id}"),
        payload: json!({"n": 1}),
        request: None,
        session: None,
        client: None,
        idempotency_key: None,
        started_at: t(0),
        updated_at: t(0),
        finished_at: None,
        coalesced: 0,
        step: 0,
    }
}

fn insert(run_id: &str) -> Batch {
    Batch { idempotency: None, writes: vec![Write::InsertRun(Box::new(run(run_id)))] }
}

#[tokio::test]
async fn opened_through_the_store_url_with_each_tls_mode_the_server_allows() {
    let Some(schema) = schema("opened_through_the_store_url").await else { return };
    let store = crate::store::open(&schema.url, Path::new("/")).await.unwrap();
    assert_eq!(store.kind(), "postgres");
    store.commit(insert("r")).await.unwrap();
    // The test server speaks TLS with a certificate no root vouches for:
    // prefer and require encrypt without checking it, verify-full refuses.
    for mode in ["disable", "prefer", "require"] {
        let url = format!("{}&sslmode={mode}", schema.url);
        let reader = crate::store::open_read_only(&url, Path::new("/")).await.unwrap();
        assert!(reader.get_run("r").await.unwrap().is_some(), "sslmode={mode}");
    }
    let ssl: bool =
        schema.client().await.query_one("SHOW ssl", &[]).await.map(|r| r.get::<_, String>(0) == "on").unwrap();
    if ssl {
        let url = format!("{}&sslmode=verify-full", schema.url);
        let refused = crate::store::open_read_only(&url, Path::new("/")).await.err().expect("an unverified server");
        assert!(matches!(refused, StoreError::Unavailable(ref m) if m.contains("postgres://")), "{refused}");
    }
}

#[tokio::test]
async fn openers_racing_on_a_new_schema_create_it_once() {
    let Some(schema) = schema("openers_racing_on_a_new_schema_create_it_once").await else { return };
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url.clone();
            tokio::spawn(async move { PostgresStore::open(&url, Path::new("/")).await.map(|_| ()) })
        })
        .collect();
    for opener in openers {
        opener.await.unwrap().unwrap();
    }
    let rows = schema.client().await.query("SELECT version FROM fanin_schema", &[]).await.unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [schema::SCHEMA_VERSION]);
}

#[tokio::test]
async fn a_schema_of_a_newer_fanin_is_refused_and_an_empty_one_is_not_read() {
    let Some(schema) = schema("a_schema_of_a_newer_fanin_is_refused").await else { return };
    match PostgresStore::open_read_only(&schema.url, Path::new("/")).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("holds no fanin store"), "{m}"),
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
    drop(PostgresStore::open(&schema.url, Path::new("/")).await.unwrap());
    let newer = schema::SCHEMA_VERSION + 1;
    schema.client().await.batch_execute(&format!("UPDATE fanin_schema SET version = {newer}")).await.unwrap();
    for opened in [
        PostgresStore::open(&schema.url, Path::new("/")).await.map(|_| ()),
        PostgresStore::open_read_only(&schema.url, Path::new("/")).await.map(|_| ()),
    ] {
        match opened {
            Err(StoreError::Invalid(m)) => {
                assert!(m.contains(&format!("schema version {newer} is newer")) && m.contains("postgres://"), "{m}")
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_daemon_per_store_and_stores_in_other_schemas_apart() {
    let Some(schema) = schema("one_daemon_per_store").await else { return };
    let Some(other) = self::schema("one_daemon_per_store").await else { return };
    let held = DaemonLock::acquire(&schema.url, Path::new("/"), None).await.unwrap();
    let e = DaemonLock::acquire(&schema.url, Path::new("/"), None).await.err().expect("a second daemon");
    assert!(e.to_string().contains("another fanin daemon") && e.to_string().contains(&schema.name), "{e}");
    let _elsewhere = DaemonLock::acquire(&other.url, Path::new("/"), None).await.unwrap();
    drop(held);
    // The server releases a session's locks when the session ends, which
    // it learns of after the client has gone: wait for that, not a time.
    crate::test_support::eventually("the lock released with its holder's connection", || async {
        DaemonLock::acquire(&schema.url, Path::new("/"), None).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn replicas_share_a_store_under_distinct_node_ids_and_never_beside_a_lone_daemon() {
    let Some(schema) = schema("replicas_share_a_store").await else { return };
    let at = |node| DaemonLock::acquire(&schema.url, Path::new("/"), node);
    let a = at(Some("a")).await.unwrap();
    let _b = at(Some("b")).await.unwrap();
    let e = at(Some("a")).await.err().expect("a second replica named a");
    assert!(e.to_string().contains(r#"node_id "a" is running"#), "{e}");
    let e = at(None).await.err().expect("a lone daemon beside replicas");
    assert!(e.to_string().contains("run them all as replicas with [cluster]"), "{e}");
    drop(a);
    crate::test_support::eventually("node a's lock released with its connection", || async {
        at(Some("a")).await.is_ok()
    })
    .await;

    let Some(alone) = self::schema("replicas_share_a_store").await else { return };
    let _held = DaemonLock::acquire(&alone.url, Path::new("/"), None).await.unwrap();
    let e =
        DaemonLock::acquire(&alone.url, Path::new("/"), Some("c")).await.err().expect("a replica beside a lone daemon");
    assert!(e.to_string().contains("without [cluster] is running"), "{e}");
}

#[tokio::test]
async fn a_lease_is_held_by_one_owner_until_it_lapses_or_is_released() {
    let Some(schema) = schema("a_lease_is_held_by_one_owner").await else { return };
    let store = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    let long = std::time::Duration::from_secs(60);
    let held = store.hold_lease("mqtt", "a", long).await.unwrap();
    assert_eq!(held.owner, "a");
    assert!(held.left > std::time::Duration::from_secs(59) && held.until > held.since, "{held:?}");
    let other = store.hold_lease("mqtt", "b", long).await.unwrap();
    assert_eq!((other.owner.as_str(), other.since), ("a", held.since), "b is told who holds it");
    assert!(other.left > std::time::Duration::ZERO && other.left <= long, "{other:?}");
    let renewed = store.hold_lease("mqtt", "a", long).await.unwrap();
    assert_eq!((renewed.owner.as_str(), renewed.since), ("a", held.since), "a renewal keeps since");
    assert!(renewed.until >= held.until);
    assert_eq!(store.hold_lease("cron", "b", long).await.unwrap().owner, "b", "duties are apart");

    store.release_lease("mqtt", "b").await.unwrap();
    assert_eq!(store.hold_lease("mqtt", "b", long).await.unwrap().owner, "a", "only the holder releases");
    store.release_lease("mqtt", "a").await.unwrap();
    let taken = store.hold_lease("mqtt", "b", std::time::Duration::from_millis(1)).await.unwrap();
    assert_eq!(taken.owner, "b", "released: the next asker takes it");
    // A lease of a millisecond has lapsed by the next statement.
    crate::test_support::eventually("b's lease lapsed", || async {
        store.hold_lease("mqtt", "a", long).await.unwrap().owner == "a"
    })
    .await;
    let listed = store.leases().await.unwrap();
    let owners: Vec<(&str, &str)> = listed.iter().map(|l| (l.duty.as_str(), l.owner.as_str())).collect();
    assert_eq!(owners, [("cron", "b"), ("mqtt", "a")]);

    let reader = PostgresStore::open_read_only(&schema.url, Path::new("/")).await.unwrap();
    assert!(matches!(reader.hold_lease("x", "a", long).await, Err(StoreError::Invalid(_))), "read-only takes none");
}

#[tokio::test]
async fn a_version_1_schema_is_upgraded_with_the_leases_table() {
    let Some(schema) = schema("a_version_1_schema_is_upgraded").await else { return };
    let client = schema.client().await;
    client.batch_execute(schema::SCHEMA_V1).await.unwrap();
    client.batch_execute("INSERT INTO fanin_schema (version) VALUES (1)").await.unwrap();
    client.batch_execute("INSERT INTO source_cursors VALUES ('email:ops', '7', 1)").await.unwrap();
    let store = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    let version: i64 = client.query_one("SELECT version FROM fanin_schema", &[]).await.unwrap().get(0);
    assert_eq!(version, schema::SCHEMA_VERSION);
    assert_eq!(store.cursor("email:ops").await.unwrap().map(|c| c.value), Some("7".into()), "rows kept");
    assert_eq!(store.hold_lease("mqtt", "a", std::time::Duration::from_secs(5)).await.unwrap().owner, "a");
}

#[tokio::test]
async fn json_that_cannot_be_read_back_reads_as_the_stand_in_and_an_unknown_status_is_left_out() {
    let Some(schema) = schema("json_that_cannot_be_read_back").await else { return };
    let store = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    for id in ["good", "deep", "odd"] {
        store.commit(insert(id)).await.unwrap();
    }
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let raw = schema.client().await;
    raw.execute("UPDATE runs SET payload = $1 WHERE run_id = 'deep'", &[&deep]).await.unwrap();
    raw.batch_execute("UPDATE runs SET status = 'exploded' WHERE run_id = 'odd'").await.unwrap();
    let runs = store.list_runs(&RunQuery::default()).await.unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["deep", "good"], "newest first, the one that cannot be decoded left out");
    let reason = unreadable_reason(&runs[0].payload).expect("the stand-in");
    assert!(reason.contains("recursion limit"), "{reason}");
    let e = store.get_run("odd").await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(ref m) if m.contains("exploded")), "{e}");
}

#[tokio::test]
async fn a_search_path_naming_no_schema_is_refused_as_the_store_url_s_fault() {
    let Some(_schema) = schema("a_search_path_naming_no_schema").await else { return };
    let base = std::env::var("FANIN_TEST_POSTGRES_URL").unwrap();
    let url = with_search_path(&base, &format!("t_missing_{}", uuid::Uuid::new_v4().simple()));
    match PostgresStore::open(&url, Path::new("/")).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("create the schema") && m.contains("postgres://"), "{m}"),
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_write_behind_another_session_s_lock_waits_then_says_unavailable_and_writes_nothing() {
    let Some(schema) = schema("a_write_behind_another_session_s_lock").await else { return };
    let store = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    store.commit(insert("r")).await.unwrap();
    // A session stuck in the middle of its transaction, holding the run's row.
    let stuck = schema.client().await;
    stuck.batch_execute("BEGIN; UPDATE runs SET topic = 'x' WHERE run_id = 'r'").await.unwrap();
    let finish = Batch {
        idempotency: None,
        writes: vec![
            Write::InsertRun(Box::new(run("other"))),
            Write::SetStatus {
                run_id: "r".into(),
                from: fanin_core::runs::RunStatus::Running,
                to: fanin_core::runs::RunStatus::Completed,
                at: t(1),
            },
        ],
    };
    let begun = std::time::Instant::now();
    let blocked = store.commit(finish.clone()).await;
    assert!(matches!(blocked, Err(StoreError::Unavailable(ref m)) if m.contains("lock")), "{blocked:?}");
    assert!(begun.elapsed() >= connect::LOCK_TIMEOUT, "it waited for the lock first: {:?}", begun.elapsed());
    assert!(matches!(store.watch().write_state(), WriteState::Failing { .. }));
    stuck.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(store.get_run("other").await.unwrap(), None, "nothing of the batch");
    assert_eq!(store.commit(finish).await.unwrap(), Committed::Applied);
    assert_eq!(store.watch().write_state(), WriteState::Ok);
}

/// Ends every server session of the store (its writer's, its readers'),
/// as a server restart or a failover would.
async fn end_sessions(schema: &TestSchema) {
    let admin = schema.client().await;
    let sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE application_name = $1 AND pid <> pg_backend_pid()";
    admin.execute(sql, &[&schema.name]).await.unwrap();
}

#[tokio::test]
async fn lost_connections_are_replaced_and_nothing_half_written() {
    let Some(schema) = schema("lost_connections_are_replaced").await else { return };
    let store = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    store.commit(insert("before")).await.unwrap();
    assert!(store.get_run("before").await.unwrap().is_some(), "a reader is pooled");
    end_sessions(&schema).await;
    // A commit or read on a connection the server ended fails (503 to its
    // caller) or, once the client has noticed, goes over a new one.
    let mut attempt = 0;
    crate::test_support::eventually("a commit over a new connection", || {
        attempt += 1;
        let id = format!("after-{attempt}");
        let store = &store;
        async move {
            match store.commit(insert(&id)).await {
                Ok(committed) => committed == Committed::Applied,
                Err(StoreError::Unavailable(m)) => {
                    assert!(m.contains("postgres://"), "{m}");
                    false
                }
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await;
    crate::test_support::eventually("a read over a new connection", || async {
        store.list_runs(&RunQuery::default()).await.is_ok()
    })
    .await;
    let runs = store.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs.len(), 2, "before, and the one that went through: {runs:?}");
    assert_eq!(store.watch().write_state(), WriteState::Ok, "a write succeeded since");
}

#[test]
fn a_search_path_is_added_to_either_form_of_url() {
    assert_eq!(with_search_path("postgres://h/db", "t_1"), "postgres://h/db?options=-csearch_path%3Dt_1");
    assert_eq!(with_search_path("postgres://h/db?x=1", "t_1"), "postgres://h/db?x=1&options=-csearch_path%3Dt_1");
}

#[tokio::test]
async fn an_admission_hold_lets_one_replica_decide_for_a_sop_from_what_is_committed() {
    use crate::store::suite::{run as run_of, set_status, start};
    use fanin_core::runs::RunStatus;
    let Some(schema) = schema("an_admission_hold_lets_one_replica").await else { return };
    let a = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    let b = Arc::new(PostgresStore::open(&schema.url, Path::new("/")).await.unwrap());
    for (id, sop, status, secs) in [
        ("s1", "s", RunStatus::Running, 0),
        ("s2", "s", RunStatus::Deferred, 2),
        ("s3", "s", RunStatus::Deferred, 1),
        ("s4", "s", RunStatus::Running, 3),
        ("o1", "o", RunStatus::Deferred, 0),
    ] {
        a.commit(start(run_of(id, sop, status, t(secs)))).await.unwrap();
    }
    a.commit(set_status("s4", RunStatus::Running, RunStatus::Completed, t(9))).await.unwrap();

    let held = a.hold_admission(&["s".to_string(), "s".to_string()]).await.unwrap();
    let expected =
        SopLoad { sop: "s".into(), active: 1, last_finished_at: Some(t(9)), deferred: vec!["s3".into(), "s2".into()] };
    assert_eq!((held.loads.clone(), held.deferred_total), (vec![expected], 3));
    // Another SOP is not held up; the same one waits.
    let other = b.hold_admission(&["o".to_string()]).await.unwrap();
    assert_eq!(other.loads[0].deferred, ["o1"]);
    other.release().await;
    let waiting = tokio::spawn({
        let b = Arc::clone(&b);
        async move { b.hold_admission(&["s".to_string()]).await.unwrap() }
    });
    schema.wait_for_advisory_waiter("b waits for a's hold").await;
    // What a decides under the hold is committed before b reads.
    a.commit(start(run_of("s5", "s", RunStatus::Running, t(10)))).await.unwrap();
    held.release().await;
    let next = waiting.await.unwrap();
    assert_eq!(next.loads[0].active, 2, "b reads what a committed under its hold");
    next.release().await;

    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = crate::store::sqlite::SqliteStore::open(&sqlite_dir.path().join("f.db")).unwrap();
    assert!(matches!(sqlite.hold_admission(&["s".to_string()]).await, Err(StoreError::Invalid(_))));
}
