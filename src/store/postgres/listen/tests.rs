//! Wake-ups between two stores opened on one schema, as two replicas hold
//! it: what each kind of commit sends, that a group sends each kind once,
//! that what was refused or wrote nothing sends nothing, and that the
//! listener comes back after its connection is killed. A wake-up that
//! should not come is shown absent by the one that comes first after it.
//! The pure parts (channel names, payloads) need no server. The server
//! tests skip, saying so, without `FANIN_TEST_POSTGRES_URL`.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::*;
use crate::store::postgres::PostgresStore;
use crate::store::suite::outbox::entry;
use crate::store::suite::{run, set_status, start, t, Backend, TestSchema};
use crate::store::{Batch, Store};
use crate::test_support::DEADLINE;
use fanin_core::runs::RunStatus;

struct Pair {
    schema: TestSchema,
    /// The store that writes.
    a: Arc<PostgresStore>,
    /// The store that listens.
    b: PostgresStore,
    heard: broadcast::Receiver<Wakeup>,
}

/// Two stores on a fresh schema, `b` listening (its first `All` heard).
async fn pair(test: &str) -> Option<Pair> {
    let Backend::Postgres(schema) = Backend::postgres(test).await? else { unreachable!() };
    let a = Arc::new(PostgresStore::open(&schema.url, Path::new("/")).await.unwrap());
    let b = PostgresStore::open(&schema.url, Path::new("/")).await.unwrap();
    let mut heard = b.wakeups().expect("a PostgreSQL store has wake-ups");
    assert_eq!(next(&mut heard).await, Wakeup::All, "listening starts with everybody woken");
    Some(Pair { schema, a, b, heard })
}

async fn next(heard: &mut broadcast::Receiver<Wakeup>) -> Wakeup {
    tokio::time::timeout(DEADLINE, heard.recv()).await.expect("a wake-up in time").expect("the listener lives")
}

fn one(write: Write) -> Batch {
    Batch { idempotency: None, writes: vec![write] }
}

fn pend(run_id: &str) -> Batch {
    one(Write::PendStep { run_id: run_id.into(), index: 0, at: t(1) })
}

fn enqueue(id: &str) -> Batch {
    one(Write::Enqueue(Box::new(entry(id, "r", t(1)))))
}

#[test]
fn a_channel_is_its_schema_s_name_or_a_digest_of_a_name_that_would_not_do() {
    assert_eq!(channel("public"), "fanin_public");
    assert_eq!(channel("Tenant_7"), "fanin_Tenant_7");
    for awkward in ["my schema", "tenant\"7", "", &"x".repeat(58)] {
        let named = channel(awkward);
        assert!(named.starts_with("fanin_") && named.len() <= MAX_CHANNEL, "{awkward:?}: {named}");
        assert!(named.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{awkward:?}: {named}");
    }
    assert_eq!(channel(&"x".repeat(57)).len(), MAX_CHANNEL, "the longest plain name is kept");
    assert_ne!(channel("a b"), channel("a c"));
}

#[test]
fn a_payload_names_its_kind_and_a_store_s_own_are_left_out() {
    assert_eq!(wakeup_of("step o1", "o2"), Some(Wakeup::Step));
    assert_eq!(wakeup_of("outbox o1", "o2"), Some(Wakeup::Outbox));
    assert_eq!(wakeup_of("step o2", "o2"), None);
    assert_eq!(wakeup_of("outbox o2", "o2"), None);
    assert_eq!(wakeup_of("runs o1", "o2"), Some(Wakeup::Runs));
    assert_eq!(wakeup_of("runs o2", "o2"), None);
    assert_eq!(wakeup_of("step", "o2"), Some(Wakeup::Step), "an operator's NOTIFY names no origin");
    for unknown in ["", "run o1", "anything at all"] {
        assert_eq!(wakeup_of(unknown, "o2"), Some(Wakeup::All), "{unknown:?}");
    }
    let notices = Notices::new("fanin_s", "o1");
    assert_eq!(notices.commits[0], "COMMIT");
    assert_eq!(notices.commits[3], "NOTIFY \"fanin_s\", 'step o1'; NOTIFY \"fanin_s\", 'outbox o1'; COMMIT");
    assert_eq!(notices.commits[4], "NOTIFY \"fanin_s\", 'runs o1'; COMMIT");
}

#[tokio::test]
async fn a_pended_step_and_a_queued_or_revived_envelope_wake_the_other_store() {
    let Some(mut p) = pair("a_pended_step_and_a_queued_envelope_wake").await else { return };
    p.a.commit(pend("r1")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Step);
    p.a.commit(enqueue("e1")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Outbox);

    // The entry given up on is neither kind but changes what the console
    // lists; a cron check or a cursor is no run's: nothing, so the marker
    // after them is the first heard.
    p.a.commit(one(Write::DeadLetter { id: "e1".into(), attempts: 5, error: "gave up".into(), at: t(2) }))
        .await
        .unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Runs);
    p.a.commit(one(Write::CronChecked { key: "k".into(), at: t(2) })).await.unwrap();
    p.a.commit(one(Write::SetCursor { source: "email:ops".into(), from: None, to: "7/1".into(), at: t(2) }))
        .await
        .unwrap();
    p.a.commit(pend("r2")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Step);
    p.a.commit(start(run("r5", "sop", RunStatus::Running, t(2)))).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Runs, "a run started");
    p.a.commit(set_status("r5", RunStatus::Running, RunStatus::Completed, t(3))).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Runs, "a run moved on");
    p.a.commit(one(Write::Revive { id: "e1".into(), at: t(3) })).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Outbox);

    // Both in one batch: both kinds.
    let mut both = pend("r3");
    both.writes.extend(enqueue("e3").writes);
    p.a.commit(both).await.unwrap();
    assert_eq!([next(&mut p.heard).await, next(&mut p.heard).await], [Wakeup::Step, Wakeup::Outbox]);

    // The listener's own store's commits are left out: its process woke
    // its waiters itself.
    p.b.commit(pend("r4")).await.unwrap();
    p.a.commit(enqueue("e4")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Outbox);
}

#[tokio::test]
async fn a_group_sends_each_kind_once_and_nothing_for_what_it_refused() {
    let Some(mut p) = pair("a_group_sends_each_kind_once").await else { return };
    p.a.commit(pend("taken")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Step);

    // Three steps pended in one transaction: one notification.
    let held = p.a.hold_writer().await;
    let commits: Vec<_> = ["g1", "g2", "g3"]
        .into_iter()
        .map(|run| {
            let a = Arc::clone(&p.a);
            tokio::spawn(async move { a.commit(pend(run)).await })
        })
        .collect();
    while p.a.queued() < 3 {
        tokio::task::yield_now().await;
    }
    let before = p.a.stats().transactions;
    held.send(()).unwrap();
    for commit in commits {
        commit.await.unwrap().unwrap();
    }
    assert_eq!(p.a.stats().transactions, before + 1, "the three went in one transaction");
    p.a.commit(enqueue("marker")).await.unwrap();
    assert_eq!([next(&mut p.heard).await, next(&mut p.heard).await], [Wakeup::Step, Wakeup::Outbox]);

    // A step pended again is refused in its savepoint; the envelope queued
    // beside it in the group is committed and wakes the outbox only.
    let held = p.a.hold_writer().await;
    let refused = tokio::spawn({
        let a = Arc::clone(&p.a);
        async move { a.commit(pend("taken")).await }
    });
    while p.a.queued() < 1 {
        tokio::task::yield_now().await;
    }
    let applied = tokio::spawn({
        let a = Arc::clone(&p.a);
        async move { a.commit(enqueue("beside")).await }
    });
    while p.a.queued() < 2 {
        tokio::task::yield_now().await;
    }
    held.send(()).unwrap();
    assert!(matches!(refused.await.unwrap(), Err(StoreError::Conflict(_))));
    applied.await.unwrap().unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Outbox, "the refused step sent nothing");
    p.a.commit(pend("after")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Step);
}

#[tokio::test]
async fn a_listener_whose_connection_is_killed_listens_again_and_wakes_everybody() {
    let Some(mut p) = pair("a_listener_whose_connection_is_killed").await else { return };
    let pid = p.b.listener_pid().expect("listening");
    let admin = p.schema.client().await;
    let killed: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
    assert!(killed);
    assert_eq!(next(&mut p.heard).await, Wakeup::All, "what was sent meanwhile is lost: everybody looks");
    assert!(p.b.listener_pid().is_some_and(|again| again != pid), "on a connection of its own");
    p.a.commit(pend("r")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Step);
}

#[tokio::test]
async fn stores_in_other_schemas_of_the_database_do_not_wake_each_other() {
    let Some(mut p) = pair("stores_in_other_schemas").await else { return };
    let Backend::Postgres(other) = Backend::postgres("stores_in_other_schemas").await.unwrap() else { unreachable!() };
    let elsewhere = PostgresStore::open(&other.url, Path::new("/")).await.unwrap();
    elsewhere.commit(pend("r")).await.unwrap();
    p.a.commit(enqueue("e")).await.unwrap();
    assert_eq!(next(&mut p.heard).await, Wakeup::Outbox);
}

#[tokio::test]
async fn a_dropped_store_stops_listening() {
    let Some(p) = pair("a_dropped_store_stops_listening").await else { return };
    let pid = p.b.listener_pid().expect("listening");
    let Pair { schema, b, mut heard, .. } = p;
    drop(b);
    assert!(matches!(heard.recv().await, Err(broadcast::error::RecvError::Closed)), "the listener ended");
    let admin = schema.client().await;
    crate::test_support::eventually("the listening connection closed", || async {
        let row = admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;
}
