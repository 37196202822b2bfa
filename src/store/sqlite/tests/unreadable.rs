//! Rows this fanin cannot read back, written straight into the file: JSON
//! nested beyond what serde_json reads, text that is not JSON, columns
//! holding another type. Every read still answers; the JSON reads as the
//! `unreadable` stand-in, and a list leaves out only a row it cannot decode
//! at all.

use super::*;
use crate::store::suite::outbox::entry;
use crate::store::{unreadable, unreadable_reason};

fn deep_json() -> String {
    format!("{}1{}", "[".repeat(200), "]".repeat(200))
}

fn raw(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(db_path(dir)).unwrap()
}

fn reason_of(value: &Value) -> &str {
    unreadable_reason(value).unwrap_or_else(|| panic!("not the unreadable stand-in: {value}"))
}

#[test]
fn the_stand_in_is_recognised_and_nothing_else_is() {
    let stand_in = unreadable("why".into(), 12);
    assert_eq!(unreadable_reason(&stand_in), Some("why"));
    assert_eq!(unreadable_reason(&json!({"unreadable": "why"})), None);
    assert_eq!(unreadable_reason(&json!({"unreadable": "why", "stored_bytes": 1, "x": 2})), None);
    assert_eq!(unreadable_reason(&json!({"context": {}, "input": {}})), None);
    assert_eq!(unreadable_reason(&json!("unreadable")), None);
}

#[tokio::test]
async fn json_that_cannot_be_read_back_reads_as_the_stand_in() {
    let (dir, store) = open_temp();
    let good = run("good", "deploy", RunStatus::Running, t(0));
    store.commit(start(good.clone())).await.unwrap();
    store.commit(start(run("deep", "deploy", RunStatus::Running, t(1)))).await.unwrap();
    store
        .commit(Batch { idempotency: None, writes: vec![Write::Enqueue(Box::new(entry("e-good", "good", t(0))))] })
        .await
        .unwrap();
    store
        .commit(Batch { idempotency: None, writes: vec![Write::Enqueue(Box::new(entry("e-deep", "deep", t(0))))] })
        .await
        .unwrap();
    store
        .commit(Batch { idempotency: Some(claim("s", "k", t(0), 300, json!({"runs": []}))), writes: vec![] })
        .await
        .unwrap();
    let conn = raw(&dir);
    conn.execute("UPDATE runs SET payload = ?1 WHERE run_id = 'deep'", [deep_json()]).unwrap();
    conn.execute("UPDATE outbox SET envelope = ?1 WHERE id = 'e-deep'", [deep_json()]).unwrap();
    conn.execute("UPDATE audit SET detail = 'not json' WHERE run_id = 'deep'", []).unwrap();
    conn.execute("UPDATE idempotency SET response = ?1", [deep_json()]).unwrap();
    conn.execute(
        "INSERT INTO run_steps (run_id, step_index, status, output, created_at, updated_at) \
                  VALUES ('deep', 0, 'completed', x'ff00', 0, 0)",
        [],
    )
    .unwrap();

    let runs = store.list_runs(&all_runs()).await.unwrap();
    assert_eq!(ids(&runs), ["deep", "good"]);
    assert!(reason_of(&runs[0].payload).contains("recursion limit"), "{}", runs[0].payload);
    assert_eq!(runs[1].payload, good.payload);
    assert!(reason_of(&store.get_run("deep").await.unwrap().unwrap().payload).contains("recursion limit"));

    let audit = store.audit(&all_audit()).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(reason_of(&audit[1].detail).contains("cannot be read"));
    assert_eq!(audit[0].detail, json!({"event_id": "event-good"}));

    // The worker sends envelopes as stored, unparsed: a deep one is text.
    let due = store.outbox_due("agent", t(1), 10).await.unwrap();
    assert_eq!(due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e-good", "e-deep"]);
    assert_eq!(due[1].envelope, deep_json());
    assert_eq!(store.outbox_list(None, 0).await.unwrap().len(), 2);
    assert!(unreadable_reason(&store.outbox_get("e-deep").await.unwrap().unwrap().envelope).is_some());

    let steps = store.steps("deep").await.unwrap();
    assert!(reason_of(steps[0].output.as_ref().unwrap()).contains("cannot be read"));
    assert!(unreadable_reason(&store.idempotency_response("s", "k", t(1)).await.unwrap().unwrap()).is_some());
    // The key still holds: a second claim is a duplicate, not an error.
    let again = store.commit(Batch { idempotency: Some(claim("s", "k", t(1), 300, json!({}))), writes: vec![] });
    assert!(matches!(again.await.unwrap(), Committed::Duplicate { .. }));
}

#[tokio::test]
async fn a_row_that_cannot_be_decoded_is_left_out_of_lists_and_due_entries_still_come_back() {
    let (dir, store) = open_temp();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        store.commit(start(run(id, "deploy", RunStatus::Running, t(i as i64)))).await.unwrap();
        let write = Write::Enqueue(Box::new(entry(&format!("e-{id}"), id, t(0))));
        store.commit(Batch { idempotency: None, writes: vec![write] }).await.unwrap();
    }
    let conn = raw(&dir);
    conn.execute("UPDATE runs SET status = 'exploded' WHERE run_id = 'b'", []).unwrap();
    conn.execute("UPDATE audit SET at = 'yesterday' WHERE run_id = 'b'", []).unwrap();
    conn.execute("UPDATE outbox SET attempts = 'many' WHERE id = 'e-b'", []).unwrap();

    assert_eq!(ids(&store.list_runs(&all_runs()).await.unwrap()), ["c", "a"]);
    let audit = store.audit(&all_audit()).await.unwrap();
    assert_eq!(audit.iter().map(|r| r.run_id.as_deref().unwrap()).collect::<Vec<_>>(), ["a", "c"]);
    let listed = store.outbox_list(None, 0).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e-a", "e-c"]);
    // The worker must see a due entry it cannot decode, or it would look
    // for it again and again: it comes back without its run, and why.
    let due = store.outbox_due("agent", t(1), 10).await.unwrap();
    assert_eq!(due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e-a", "e-b", "e-c"]);
    assert_eq!((due[1].run_id.as_str(), due[1].run.is_none()), ("b", true));
    assert!(due[1].unreadable.as_deref().unwrap().contains("cannot be read"), "{:?}", due[1]);
    // A single record that cannot be decoded is still an error naming it.
    let err = store.get_run("b").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref m) if m.contains("exploded")), "{err}");
}
