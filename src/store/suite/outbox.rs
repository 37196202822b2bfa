//! The outbox: numbering, in-order delivery per run, retries, dead letters
//! and their revival.

use super::*;

/// A fresh pending entry due at `at`; its `seq` is deliberately bogus.
pub(crate) fn entry(id: &str, run_id: &str, at: DateTime<Utc>) -> OutboxRecord {
    OutboxRecord {
        id: id.into(),
        seq: 999,
        run_id: run_id.into(),
        destination: "agent".into(),
        envelope: json!({"id": id, "run_id": run_id, "input": {"steps": [1, 2]}}),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: at,
        last_error: None,
        created_at: at,
        delivered_at: None,
    }
}

fn one(write: Write) -> Batch {
    Batch { idempotency: None, writes: vec![write] }
}

async fn enqueue(store: &Opened, entry: OutboxRecord) {
    store.commit(one(Write::Enqueue(Box::new(entry)))).await.unwrap();
}

fn delivered(id: &str, attempts: u32, at: DateTime<Utc>) -> Batch {
    one(Write::Delivered { id: id.into(), attempts, at })
}

fn reschedule(id: &str, attempts: u32, next_attempt_at: DateTime<Utc>) -> Batch {
    one(Write::Reschedule { id: id.into(), attempts, next_attempt_at, error: format!("attempt {attempts} failed") })
}

fn dead_letter(id: &str, attempts: u32, at: DateTime<Utc>) -> Batch {
    one(Write::DeadLetter { id: id.into(), attempts, error: "gave up".into(), at })
}

fn revive(id: &str, at: DateTime<Utc>) -> Batch {
    one(Write::Revive { id: id.into(), at })
}

async fn due_ids(store: &Opened, now: DateTime<Utc>) -> Vec<String> {
    store.outbox_due("agent", now, 0).await.unwrap().into_iter().map(|e| e.id).collect()
}

async fn get(store: &Opened, id: &str) -> OutboxRecord {
    store.outbox_get(id).await.unwrap().expect("outbox entry")
}

/// Runs a and b with two entries each, written interleaved: a1 b1 a2 b2.
async fn two_runs_two_entries(store: &Opened) {
    for (i, (id, run_id)) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")].into_iter().enumerate() {
        enqueue(store, entry(id, run_id, t(i as i64))).await;
    }
}

async fn an_entry_round_trips_with_a_store_assigned_seq(b: Backend) {
    let store = b.open().await;
    let mut e = entry("e1", "r", t(0));
    e.last_error = Some("carried over".into());
    e.attempts = 2;
    enqueue(&store, e.clone()).await;
    enqueue(&store, entry("e2", "r", t(0))).await;

    let stored = get(&store, "e1").await;
    assert_ne!(stored.seq, 999, "the given seq is ignored");
    assert_eq!(stored, OutboxRecord { seq: stored.seq, ..e });
    assert!(get(&store, "e2").await.seq > stored.seq);
    assert_eq!(store.outbox_get("missing").await.unwrap(), None);
}

async fn an_id_is_enqueued_once_and_seq_is_never_reused(b: Backend) {
    let store = b.open().await;
    enqueue(&store, entry("e1", "r", t(0))).await;
    let again = store.commit(one(Write::Enqueue(Box::new(entry("e1", "other", t(1)))))).await;
    assert!(matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("e1") && m.contains("exists")), "{again:?}");
    assert_eq!(get(&store, "e1").await.run_id, "r");

    enqueue(&store, entry("e2", "r", t(2))).await;
    enqueue(&store, entry("e3", "r", t(3))).await;
    let seqs: Vec<i64> = store.outbox_list(None, 0).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

async fn only_the_head_of_each_run_is_due(b: Backend) {
    let store = b.open().await;
    two_runs_two_entries(&store).await;
    assert_eq!(due_ids(&store, t(10)).await, ["a1", "b1"]);
    // Due time counts: at t(0) only a1 is due.
    assert_eq!(due_ids(&store, t(0)).await, ["a1"]);

    store.commit(delivered("a1", 1, t(11))).await.unwrap();
    let done = get(&store, "a1").await;
    assert_eq!((done.status, done.attempts, done.delivered_at), (OutboxStatus::Delivered, 1, Some(t(11))));
    // a2 is a's head now; b1 was written before it.
    assert_eq!(due_ids(&store, t(11)).await, ["b1", "a2"]);

    store.commit(delivered("b1", 1, t(12))).await.unwrap();
    store.commit(delivered("a2", 1, t(12))).await.unwrap();
    assert_eq!(due_ids(&store, t(12)).await, ["b2"]);
}

async fn due_respects_the_limit_earliest_due_first_then_by_seq(b: Backend) {
    let store = b.open().await;
    for (i, run_id) in ["r1", "r2", "r3"].into_iter().enumerate() {
        enqueue(&store, entry(&format!("e-{run_id}"), run_id, t(10 - i as i64))).await;
    }
    enqueue(&store, entry("e-r4", "r4", t(8))).await;
    let due: Vec<String> = store.outbox_due("agent", t(10), 3).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(due, ["e-r3", "e-r4", "e-r2"], "r3 and r4 are due at the same time: written order");
}

async fn due_entries_are_of_one_destination_and_carry_their_run_without_payload(b: Backend) {
    let store = b.open().await;
    let r = run("r1", "deploy", RunStatus::Running, t(0));
    store.commit(one(Write::InsertRun(Box::new(r.clone())))).await.unwrap();
    enqueue(&store, entry("to-agent", "r1", t(1))).await;
    enqueue(&store, entry("no-run", "gone", t(2))).await;
    let mut other = entry("to-executor", "r2", t(0));
    other.destination = "executor".into();
    enqueue(&store, other).await;

    let due = store.outbox_due("agent", t(10), 0).await.unwrap();
    assert_eq!(due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["to-agent", "no-run"]);
    let first = &due[0];
    assert_eq!((first.destination.as_str(), first.attempts, first.last_error.as_deref()), ("agent", 0, None));
    let envelope: serde_json::Value = serde_json::from_str(&first.envelope).unwrap();
    assert_eq!(envelope, entry("to-agent", "r1", t(1)).envelope, "the envelope as stored, as text");
    assert_eq!(first.run, Some(RunRecord { payload: serde_json::Value::Null, ..r }), "its run, less the payload");
    assert_eq!(due[1].run, None, "an entry whose run is gone");

    let executor = store.outbox_due("executor", t(10), 0).await.unwrap();
    assert_eq!(executor.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["to-executor"]);
    assert_eq!(store.outbox_next_due("executor").await.unwrap(), Some(t(0)));
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), Some(t(1)));
    assert!(store.outbox_due("nowhere", t(10), 0).await.unwrap().is_empty());
}

async fn tallies_count_pending_entries_per_destination_and_runs_awaiting_approval(b: Backend) {
    let store = b.open().await;
    assert_eq!(store.tallies().await.unwrap(), Tallies::default());
    two_runs_two_entries(&store).await;
    let mut other = entry("x1", "x", t(0));
    other.destination = "executor".into();
    enqueue(&store, other).await;
    store.commit(delivered("a1", 1, t(10))).await.unwrap();
    store.commit(dead_letter("b1", 3, t(10))).await.unwrap();
    for (id, status) in
        [("w1", RunStatus::PendingApproval), ("w2", RunStatus::PendingApproval), ("x", RunStatus::Running)]
    {
        store.commit(one(Write::InsertRun(Box::new(run(id, "deploy", status, t(0)))))).await.unwrap();
    }
    let tallies = store.tallies().await.unwrap();
    assert_eq!(tallies.outbox_pending.into_iter().collect::<Vec<_>>(), [("agent".into(), 2), ("executor".into(), 1)]);
    assert_eq!(tallies.pending_approvals, 2);
}

async fn a_rescheduled_head_waits_and_holds_back_its_run(b: Backend) {
    let store = b.open().await;
    two_runs_two_entries(&store).await;
    store.commit(reschedule("a1", 1, t(30))).await.unwrap();
    let waiting = get(&store, "a1").await;
    assert_eq!(
        (waiting.status, waiting.attempts, waiting.next_attempt_at, waiting.last_error.as_deref()),
        (OutboxStatus::Pending, 1, t(30), Some("attempt 1 failed"))
    );

    // a2 is due by time but not a's head.
    assert_eq!(due_ids(&store, t(29)).await, ["b1"]);
    assert_eq!(due_ids(&store, t(30)).await, ["b1", "a1"], "earliest due first");
}

async fn a_dead_head_blocks_its_run_until_revived(b: Backend) {
    let store = b.open().await;
    two_runs_two_entries(&store).await;
    store.commit(dead_letter("a1", 10, t(20))).await.unwrap();
    let dead = get(&store, "a1").await;
    assert_eq!((dead.status, dead.attempts, dead.last_error.as_deref()), (OutboxStatus::Dead, 10, Some("gave up")));

    assert_eq!(due_ids(&store, t(100)).await, ["b1"]);
    store.commit(delivered("b1", 1, t(21))).await.unwrap();
    assert_eq!(due_ids(&store, t(100)).await, ["b2"]);
    store.commit(delivered("b2", 1, t(22))).await.unwrap();
    assert!(due_ids(&store, t(100)).await.is_empty(), "a2 waits behind dead a1");
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), None);

    store.commit(revive("a1", t(50))).await.unwrap();
    let revived = get(&store, "a1").await;
    assert_eq!(
        (revived.status, revived.attempts, revived.next_attempt_at, revived.last_error.as_deref()),
        (OutboxStatus::Pending, 0, t(50), Some("gave up"))
    );
    assert!(due_ids(&store, t(49)).await.is_empty());
    assert_eq!(due_ids(&store, t(50)).await, ["a1"]);
    store.commit(delivered("a1", 1, t(51))).await.unwrap();
    assert_eq!(due_ids(&store, t(51)).await, ["a2"]);
}

async fn next_due_is_the_earliest_pending_head(b: Backend) {
    let store = b.open().await;
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), None);

    enqueue(&store, entry("a1", "a", t(40))).await;
    // Earlier, but behind a1 in run a: not a head.
    enqueue(&store, entry("a2", "a", t(5))).await;
    enqueue(&store, entry("b1", "b", t(30))).await;
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), Some(t(30)));

    store.commit(delivered("b1", 1, t(31))).await.unwrap();
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), Some(t(40)));
    store.commit(delivered("a1", 1, t(41))).await.unwrap();
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), Some(t(5)));
    store.commit(dead_letter("a2", 3, t(42))).await.unwrap();
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), None);
}

async fn list_filters_by_status_oldest_first(b: Backend) {
    let store = b.open().await;
    two_runs_two_entries(&store).await;
    store.commit(delivered("a1", 1, t(10))).await.unwrap();
    store.commit(dead_letter("b1", 3, t(10))).await.unwrap();

    let cases: Vec<(Option<OutboxStatus>, usize, Vec<&str>)> = vec![
        (None, 0, vec!["a1", "b1", "a2", "b2"]),
        (None, 3, vec!["a1", "b1", "a2"]),
        (Some(OutboxStatus::Pending), 0, vec!["a2", "b2"]),
        (Some(OutboxStatus::Pending), 1, vec!["a2"]),
        (Some(OutboxStatus::Delivered), 0, vec!["a1"]),
        (Some(OutboxStatus::Dead), 0, vec!["b1"]),
    ];
    for (status, limit, expected) in cases {
        let listed: Vec<String> = store.outbox_list(status, limit).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(listed, expected, "{status:?} limit {limit}");
    }
}

/// How many entries there are, then how many of each status, in
/// [`OutboxStatus::ALL`]'s order (pending, delivered, dead, withdrawn).
async fn outbox_counts(store: &Opened) -> Vec<u64> {
    let mut counts = vec![store.count_outbox(None).await.unwrap()];
    for status in OutboxStatus::ALL {
        counts.push(store.count_outbox(Some(status)).await.unwrap());
    }
    counts
}

async fn count_outbox_counts_one_status_or_all(b: Backend) {
    let store = b.open().await;
    assert_eq!(outbox_counts(&store).await, [0, 0, 0, 0, 0]);

    two_runs_two_entries(&store).await;
    enqueue(&store, entry("b3", "b", t(5))).await;
    enqueue(&store, entry("c1", "c", t(6))).await;
    store.commit(delivered("a1", 1, t(10))).await.unwrap();
    store.commit(dead_letter("b1", 3, t(10))).await.unwrap();
    store.commit(withdraw("c1")).await.unwrap();
    assert_eq!(outbox_counts(&store).await, [6, 3, 1, 1, 1]);

    store.commit(revive("b1", t(11))).await.unwrap();
    assert_eq!(outbox_counts(&store).await, [6, 4, 1, 0, 1]);
}

async fn status_changes_are_compare_and_set(b: Backend) {
    let store = b.open().await;
    enqueue(&store, entry("pending", "r1", t(0))).await;
    enqueue(&store, entry("done", "r2", t(0))).await;
    enqueue(&store, entry("dead", "r3", t(0))).await;
    store.commit(delivered("done", 1, t(1))).await.unwrap();
    store.commit(dead_letter("dead", 3, t(1))).await.unwrap();
    let before = store.outbox_list(None, 0).await.unwrap();

    let cases: Vec<(Batch, &[&str])> = vec![
        (delivered("done", 2, t(2)), &["done", "delivered", "expected pending"]),
        (delivered("dead", 2, t(2)), &["dead", "expected pending"]),
        (delivered("ghost", 1, t(2)), &["ghost", "no such entry"]),
        (reschedule("done", 2, t(9)), &["done", "delivered", "expected pending"]),
        (reschedule("dead", 2, t(9)), &["dead", "expected pending"]),
        (reschedule("ghost", 2, t(9)), &["ghost", "no such entry"]),
        (dead_letter("done", 2, t(2)), &["done", "delivered", "expected pending"]),
        (dead_letter("dead", 2, t(2)), &["dead", "expected pending"]),
        (dead_letter("ghost", 2, t(2)), &["ghost", "no such entry"]),
        (revive("pending", t(2)), &["pending", "expected dead"]),
        (revive("done", t(2)), &["done", "delivered", "expected dead"]),
        (revive("ghost", t(2)), &["ghost", "no such entry"]),
    ];
    for (batch, words) in cases {
        let what = format!("{:?}", batch.writes[0]);
        match store.commit(batch).await {
            Err(StoreError::Conflict(m)) => assert!(words.iter().all(|w| m.contains(w)), "{what}: {m:?}"),
            other => panic!("{what}: expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(store.outbox_list(None, 0).await.unwrap(), before);
}

async fn the_outbox_survives_reopening(b: Backend) {
    let store = b.open().await;
    two_runs_two_entries(&store).await;
    store.commit(delivered("a1", 1, t(10))).await.unwrap();
    store.commit(reschedule("b1", 2, t(20))).await.unwrap();
    let before = store.outbox_list(None, 0).await.unwrap();
    drop(store);

    let store = b.open().await;
    assert_eq!(store.outbox_list(None, 0).await.unwrap(), before);
    assert_eq!(due_ids(&store, t(20)).await, ["a2", "b1"]);
    assert_eq!(store.outbox_next_due("agent").await.unwrap(), Some(t(2)));
    // Numbering goes on after the entries already there.
    enqueue(&store, entry("c1", "c", t(30))).await;
    assert!(get(&store, "c1").await.seq > before.iter().map(|e| e.seq).max().unwrap());
}

fn withdraw(id: &str) -> Batch {
    one(Write::WithdrawEnvelope { id: id.into(), destination: "agent".into() })
}

async fn a_withdrawn_entry_is_never_due_never_revived_and_still_listed(b: Backend) {
    let store = b.open().await;
    two_runs_two_entries(&store).await;
    enqueue(&store, entry("b3", "b", t(5))).await;
    store.commit(dead_letter("b1", 3, t(6))).await.unwrap();
    let pending_of_a = store.outbox_pending_of_run("a").await.unwrap();
    assert_eq!(pending_of_a, [("a1".to_string(), "agent".to_string()), ("a2".to_string(), "agent".to_string())]);
    let of_b: Vec<String> = store.outbox_pending_of_run("b").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(of_b, ["b2", "b3"], "a dead letter is not pending");
    assert_eq!(store.outbox_pending_of_run("ghost").await.unwrap(), []);

    let both =
        Batch { idempotency: None, writes: vec![withdraw("a1").writes.remove(0), withdraw("a2").writes.remove(0)] };
    store.commit(both).await.unwrap();
    assert_eq!(store.outbox_pending_of_run("a").await.unwrap(), []);
    assert_eq!(get(&store, "a1").await.status, OutboxStatus::Withdrawn);
    assert!(due_ids(&store, t(100)).await.iter().all(|id| !id.starts_with('a')), "a withdrawn entry is never due");
    let listed: Vec<String> =
        store.outbox_list(Some(OutboxStatus::Withdrawn), 0).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(listed, ["a1", "a2"]);
    assert_eq!(store.tallies().await.unwrap().outbox_pending.get("agent"), Some(&2), "b2 and b3");

    for (batch, words) in [
        (withdraw("a1"), &["a1", "withdrawn", "expected pending"][..]),
        (withdraw("b1"), &["b1", "dead", "expected pending"]),
        (withdraw("ghost"), &["ghost", "no such entry"]),
        (revive("a1", t(7)), &["a1", "withdrawn", "expected dead"]),
        (delivered("a2", 1, t(7)), &["a2", "withdrawn", "expected pending"]),
    ] {
        match store.commit(batch).await {
            Err(StoreError::Conflict(m)) => assert!(words.iter().all(|w| m.contains(w)), "{m:?} should name {words:?}"),
            other => panic!("expected a conflict naming {words:?}, got {other:?}"),
        }
    }
}

suite!(
    an_entry_round_trips_with_a_store_assigned_seq,
    an_id_is_enqueued_once_and_seq_is_never_reused,
    only_the_head_of_each_run_is_due,
    due_respects_the_limit_earliest_due_first_then_by_seq,
    due_entries_are_of_one_destination_and_carry_their_run_without_payload,
    tallies_count_pending_entries_per_destination_and_runs_awaiting_approval,
    a_rescheduled_head_waits_and_holds_back_its_run,
    a_dead_head_blocks_its_run_until_revived,
    next_due_is_the_earliest_pending_head,
    list_filters_by_status_oldest_first,
    count_outbox_counts_one_status_or_all,
    status_changes_are_compare_and_set,
    the_outbox_survives_reopening,
    a_withdrawn_entry_is_never_due_never_revived_and_still_listed,
);
