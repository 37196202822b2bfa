//! The trait's behaviour for runs, audit, idempotency keys, cursors,
//! pairing codes, tokens, cron state and SOP loads; group commit and its
//! refusals; reopening and read-only opening. Each test runs on both back
//! ends (see `store::suite`).

use super::*;

async fn a_run_round_trips(b: Backend) {
    let store = b.open().await;
    let mut r = run("r1", "deploy", RunStatus::Running, t(0));
    r.idempotency_key = Some("k-1".into());
    r.finished_at = Some(t(9));
    r.coalesced = 2;
    r.step = 3;
    r.request = Some(Request {
        query: json!({"a": ["1", "2"]}).as_object().cloned().unwrap(),
        headers: json!({"user-agent": "curl/8.5.0"}).as_object().cloned().unwrap(),
    });
    r.session = Some(json!({"session_id": "sess_1", "state": {"round": 2}, "stack": ["agent"]}));
    assert_eq!(store.commit(start(r.clone())).await.unwrap(), Committed::Applied);

    assert_eq!(store.get_run("r1").await.unwrap(), Some(r));
    assert_eq!(store.get_run("missing").await.unwrap(), None);
}

async fn times_keep_microseconds(b: Backend) {
    let store = b.open().await;
    let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
    store.commit(start(run("r1", "s", RunStatus::Running, at))).await.unwrap();
    assert_eq!(store.get_run("r1").await.unwrap().unwrap().started_at, at);
}

async fn inserting_a_run_id_twice_is_a_conflict(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r1", "s", RunStatus::Running, t(0)))).await.unwrap();
    let again = store.commit(start(run("r1", "other", RunStatus::Running, t(1)))).await;
    assert!(matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("r1")), "{again:?}");
    assert_eq!(store.get_run("r1").await.unwrap().unwrap().sop, "s");
    assert_eq!(store.audit(&all_audit()).await.unwrap().len(), 1);
}

async fn list_runs_is_newest_first_and_filters(b: Backend) {
    let store = b.open().await;
    let rows = [
        ("a", "deploy", RunStatus::Completed, 10),
        ("b", "backup", RunStatus::Running, 30),
        ("c", "deploy", RunStatus::Running, 20),
        ("d", "deploy", RunStatus::Running, 20), // same instant as c, inserted later
        ("e", "deploy", RunStatus::Deferred, 5),
    ];
    for (id, sop, status, secs) in rows {
        store.commit(start(run(id, sop, status, t(secs)))).await.unwrap();
    }

    let cases: Vec<(RunQuery, Vec<&str>)> = vec![
        (all_runs(), vec!["b", "d", "c", "a", "e"]),
        (RunQuery { sop: Some("deploy".into()), ..all_runs() }, vec!["d", "c", "a", "e"]),
        (RunQuery { status: Some(RunStatus::Running), ..all_runs() }, vec!["b", "d", "c"]),
        (RunQuery { sop: Some("deploy".into()), status: Some(RunStatus::Running), limit: 1, ..all_runs() }, vec!["d"]),
        (RunQuery { limit: 2, ..all_runs() }, vec!["b", "d"]),
        (RunQuery { sop: Some("nope".into()), ..all_runs() }, vec![]),
    ];
    for (query, expected) in cases {
        let listed = store.list_runs(&query).await.unwrap();
        assert_eq!(ids(&listed), expected, "{query:?}");
    }
}

async fn audit_is_oldest_first_with_increasing_seq_and_filters(b: Backend) {
    let store = b.open().await;
    for (id, secs) in [("a", 0), ("b", 1), ("c", 2)] {
        store.commit(start(run(id, "s", RunStatus::Running, t(secs)))).await.unwrap();
    }
    store.commit(set_status("a", RunStatus::Running, RunStatus::Completed, t(3))).await.unwrap();
    let transition = Batch {
        idempotency: None,
        writes: vec![Write::Audit(NewAudit {
            at: t(3),
            kind: AuditKind::RunTransition,
            run_id: Some("a".into()),
            sop: Some("s".into()),
            detail: json!({"from": "running", "to": "completed"}),
        })],
    };
    store.commit(transition).await.unwrap();

    let all = store.audit(&all_audit()).await.unwrap();
    let runs: Vec<_> = all.iter().map(|a| a.run_id.as_deref().unwrap()).collect();
    assert_eq!(runs, ["a", "b", "c", "a"]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "{all:?}");
    assert_eq!(all[3].kind, AuditKind::RunTransition);
    assert_eq!(all[3].detail, json!({"from": "running", "to": "completed"}));
    assert_eq!(all[0].at, t(0));
    assert_eq!(all[0].sop.as_deref(), Some("s"));

    let of_a = store.audit(&AuditQuery { run_id: Some("a".into()), ..all_audit() }).await.unwrap();
    assert_eq!(of_a, vec![all[0].clone(), all[3].clone()]);

    let after = store.audit(&AuditQuery { after_seq: Some(all[1].seq), ..all_audit() }).await.unwrap();
    assert_eq!(after, all[2..].to_vec());

    let limited = store.audit(&AuditQuery { limit: 2, ..all_audit() }).await.unwrap();
    assert_eq!(limited, all[..2].to_vec());
}

async fn audit_seq_is_never_reused(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("a", "s", RunStatus::Running, t(0)))).await.unwrap();
    // A refused request's audit record is rolled back with it; the next
    // committed record still gets a number above every committed one.
    let refused = Batch {
        idempotency: None,
        writes: vec![
            audit_for(&run("a", "s", RunStatus::Running, t(1)), AuditKind::RunTransition),
            Write::SetStatus { run_id: "a".into(), from: RunStatus::Deferred, to: RunStatus::Running, at: t(1) },
        ],
    };
    assert!(store.commit(refused).await.is_err());
    store.commit(start(run("b", "s", RunStatus::Running, t(2)))).await.unwrap();
    let seqs: Vec<i64> = store.audit(&all_audit()).await.unwrap().iter().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] < seqs[1]);
}

async fn set_status_is_compare_and_set(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r", "s", RunStatus::PendingApproval, t(0)))).await.unwrap();

    store.commit(set_status("r", RunStatus::PendingApproval, RunStatus::Running, t(1))).await.unwrap();
    let running = store.get_run("r").await.unwrap().unwrap();
    assert_eq!((running.status, running.updated_at, running.finished_at), (RunStatus::Running, t(1), None));

    let stale = store.commit(set_status("r", RunStatus::PendingApproval, RunStatus::Cancelled, t(2))).await;
    assert!(matches!(stale, Err(StoreError::Conflict(ref m)) if m.contains("running")), "{stale:?}");
    assert_eq!(store.get_run("r").await.unwrap().unwrap(), running);

    store.commit(set_status("r", RunStatus::Running, RunStatus::Completed, t(3))).await.unwrap();
    let done = store.get_run("r").await.unwrap().unwrap();
    assert_eq!((done.status, done.updated_at, done.finished_at), (RunStatus::Completed, t(3), Some(t(3))));

    let missing = store.commit(set_status("ghost", RunStatus::Running, RunStatus::Failed, t(4))).await;
    assert!(matches!(missing, Err(StoreError::Conflict(ref m)) if m.contains("ghost")), "{missing:?}");
}

async fn a_source_cursor_is_compare_and_set(b: Backend) {
    let store = b.open().await;
    let set = |from: Option<&str>, to: &str, at| Batch {
        idempotency: None,
        writes: vec![Write::SetCursor { source: "email:ops".into(), from: from.map(Into::into), to: to.into(), at }],
    };
    assert_eq!(store.cursor("email:ops").await.unwrap(), None);
    store.commit(set(None, "7/10", t(1))).await.unwrap();
    assert_eq!(store.cursor("email:ops").await.unwrap(), Some(Cursor { value: "7/10".into(), updated_at: t(1) }));
    let again = store.commit(set(None, "7/11", t(2))).await;
    assert!(matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("email:ops")), "{again:?}");
    let stale = store.commit(set(Some("7/9"), "7/11", t(2))).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    store.commit(set(Some("7/10"), "7/12", t(3))).await.unwrap();
    assert_eq!(store.cursor("email:ops").await.unwrap().unwrap().value, "7/12");
    assert_eq!(store.cursor("telegram:bot").await.unwrap(), None, "cursors are per instance");
}

async fn file_states_are_upserted_and_deleted_per_source(b: Backend) {
    let store = b.open().await;
    let state = |size: u64, sha: &str| FileState { size, mtime: t(size as i64), sha256: sha.into() };
    let set = |source: &str, path: &str, state: Option<FileState>| Batch {
        idempotency: None,
        writes: vec![Write::SetFileState { source: source.into(), path: path.into(), state }],
    };
    assert_eq!(store.file_states("filesystem").await.unwrap(), vec![]);
    store.commit(set("filesystem", "/drop/b.csv", Some(state(2, "bb")))).await.unwrap();
    store.commit(set("filesystem", "/drop/a.csv", Some(state(1, "aa")))).await.unwrap();
    store.commit(set("other", "/drop/a.csv", Some(state(9, "99")))).await.unwrap();
    store.commit(set("filesystem", "/drop/b.csv", Some(state(3, "cc")))).await.unwrap();
    assert_eq!(
        store.file_states("filesystem").await.unwrap(),
        vec![("/drop/a.csv".to_string(), state(1, "aa")), ("/drop/b.csv".to_string(), state(3, "cc"))],
        "ordered by path, the later write wins"
    );
    store.commit(set("filesystem", "/drop/a.csv", None)).await.unwrap();
    store.commit(set("filesystem", "/drop/never-seen", None)).await.unwrap();
    assert_eq!(store.file_states("filesystem").await.unwrap(), vec![("/drop/b.csv".to_string(), state(3, "cc"))]);
    assert_eq!(store.file_states("other").await.unwrap().len(), 1, "states are per source");
}

async fn a_batch_whose_second_write_fails_leaves_no_trace(b: Backend) {
    let store = b.open().await;
    let r = run("r", "s", RunStatus::Running, t(0));
    let batch = Batch {
        idempotency: Some(claim("/webhook", "k", t(0), 300, json!({"status": "accepted"}))),
        writes: vec![
            Write::InsertRun(Box::new(r.clone())),
            Write::SetStatus { run_id: "r".into(), from: RunStatus::Deferred, to: RunStatus::Running, at: t(0) },
            audit_for(&r, AuditKind::RunStarted),
        ],
    };
    assert!(matches!(store.commit(batch).await, Err(StoreError::Conflict(_))));

    assert_eq!(store.get_run("r").await.unwrap(), None);
    assert!(store.audit(&all_audit()).await.unwrap().is_empty());
    assert_eq!(store.idempotency_response("/webhook", "k", t(1)).await.unwrap(), None);
}

async fn coalesce_replaces_the_event_of_a_deferred_run_only(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r", "s", RunStatus::Deferred, t(0)))).await.unwrap();
    let coalesce = |event: &str, at| Batch {
        idempotency: None,
        writes: vec![Write::Coalesce {
            run_id: "r".into(),
            event_id: event.into(),
            payload: json!({"n": event}),
            request: Some(Request {
                query: json!({"event": event}).as_object().cloned().unwrap(),
                headers: serde_json::Map::new(),
            }),
            session: (event == "e3").then(|| json!({"session_id": "sess_3", "state": {}, "stack": []})),
            client: None,
            at,
        }],
    };
    store.commit(coalesce("e2", t(1))).await.unwrap();
    store.commit(coalesce("e3", t(2))).await.unwrap();
    let merged = store.get_run("r").await.unwrap().unwrap();
    assert_eq!(merged.event_id, "e3");
    assert_eq!(merged.payload, json!({"n": "e3"}));
    assert_eq!(merged.request.unwrap().query, *json!({"event": "e3"}).as_object().unwrap());
    assert_eq!(merged.session, Some(json!({"session_id": "sess_3", "state": {}, "stack": []})));
    assert_eq!(merged.client, None);
    assert_eq!(merged.coalesced, 2);
    assert_eq!((merged.started_at, merged.updated_at), (t(0), t(2)));

    store.commit(set_status("r", RunStatus::Deferred, RunStatus::Running, t(3))).await.unwrap();
    let late = store.commit(coalesce("e4", t(4))).await;
    assert!(matches!(late, Err(StoreError::Conflict(ref m)) if m.contains("running")), "{late:?}");
    assert_eq!(store.get_run("r").await.unwrap().unwrap().event_id, "e3");
}

async fn a_duplicate_key_returns_the_first_response_and_writes_nothing(b: Backend) {
    let store = b.open().await;
    let first = Batch {
        idempotency: Some(claim("/webhook", "k", t(0), 300, json!({"run_id": "r1"}))),
        ..start(run("r1", "s", RunStatus::Running, t(0)))
    };
    assert_eq!(store.commit(first).await.unwrap(), Committed::Applied);

    let second = Batch {
        idempotency: Some(claim("/webhook", "k", t(10), 300, json!({"run_id": "r2"}))),
        ..start(run("r2", "s", RunStatus::Running, t(10)))
    };
    assert_eq!(store.commit(second).await.unwrap(), Committed::Duplicate { response: json!({"run_id": "r1"}) });
    assert_eq!(store.get_run("r2").await.unwrap(), None);
    assert_eq!(store.audit(&all_audit()).await.unwrap().len(), 1);
    assert_eq!(store.idempotency_response("/webhook", "k", t(299)).await.unwrap(), Some(json!({"run_id": "r1"})));
    assert_eq!(store.idempotency_response("/webhook", "k", t(300)).await.unwrap(), None);
}

async fn an_expired_key_can_be_claimed_again(b: Backend) {
    let store = b.open().await;
    let claim_at =
        |secs, response| Batch { idempotency: Some(claim("/webhook", "k", t(secs), 60, response)), writes: vec![] };
    store.commit(claim_at(0, json!(1))).await.unwrap();
    assert_eq!(store.commit(claim_at(59, json!(2))).await.unwrap(), Committed::Duplicate { response: json!(1) });
    assert_eq!(store.commit(claim_at(60, json!(3))).await.unwrap(), Committed::Applied);
    assert_eq!(store.idempotency_response("/webhook", "k", t(61)).await.unwrap(), Some(json!(3)));
}

async fn idempotency_scopes_are_independent(b: Backend) {
    let store = b.open().await;
    for scope in ["/webhook", "/sop/deploy"] {
        let batch = Batch { idempotency: Some(claim(scope, "same-key", t(0), 300, json!(scope))), writes: vec![] };
        assert_eq!(store.commit(batch).await.unwrap(), Committed::Applied, "{scope}");
    }
    for scope in ["/webhook", "/sop/deploy"] {
        let stored = store.idempotency_response(scope, "same-key", t(1)).await.unwrap();
        assert_eq!(stored, Some(json!(scope)));
    }
    assert_eq!(store.idempotency_response("/other", "same-key", t(1)).await.unwrap(), None);
}

async fn purge_deletes_only_expired_keys(b: Backend) {
    let store = b.open().await;
    for (key, ttl) in [("short", 10), ("short2", 20), ("long", 1000)] {
        let batch = Batch { idempotency: Some(claim("/webhook", key, t(0), ttl, json!(key))), writes: vec![] };
        store.commit(batch).await.unwrap();
    }
    assert_eq!(store.purge_idempotency(t(20)).await.unwrap(), 2);
    assert_eq!(store.purge_idempotency(t(20)).await.unwrap(), 0);
    assert_eq!(store.idempotency_response("/webhook", "long", t(20)).await.unwrap(), Some(json!("long")));
}

async fn concurrent_commits_share_one_transaction(b: Backend) {
    concurrent_commits_share_one_transaction_when(b, |_| false).await;
}

/// A group of patient commits waits a moment for more (none come here) and
/// then commits like any other: once, all of it.
async fn concurrent_pipelined_commits_share_one_transaction(b: Backend) {
    concurrent_commits_share_one_transaction_when(b, |_| true).await;
}

async fn pipelined_and_immediate_commits_share_one_transaction(b: Backend) {
    concurrent_commits_share_one_transaction_when(b, |i| i % 2 == 0).await;
}

async fn concurrent_commits_share_one_transaction_when(b: Backend, pipelined: impl Fn(usize) -> bool) {
    let store = b.open().await;
    let store = Arc::new(store);
    let before = store.stats();
    let release = store.hold_writer().await;

    const N: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = Arc::clone(&store);
        let r = run(&format!("r{i}"), "s", RunStatus::Running, t(i as i64));
        let patient = pipelined(i);
        tasks.push(tokio::spawn(async move {
            match patient {
                true => store.commit_pipelined(start(r)).await,
                false => store.commit(start(r)).await,
            }
        }));
    }
    store.wait_until_queued(N).await;
    release.release();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Committed::Applied);
    }

    let after = store.stats();
    assert_eq!(after.requests - before.requests, N as u64);
    assert_eq!(after.transactions - before.transactions, 1);
    assert_eq!(store.list_runs(&all_runs()).await.unwrap().len(), N);
    assert_eq!(store.audit(&all_audit()).await.unwrap().len(), N);
}

async fn a_refused_request_does_not_affect_its_transaction_neighbours(b: Backend) {
    let store = b.open().await;
    let store = Arc::new(store);
    store.commit(start(run("existing", "s", RunStatus::Running, t(0)))).await.unwrap();
    let before = store.stats();
    let release = store.hold_writer().await;

    let bad = Batch {
        idempotency: Some(claim("/webhook", "bad", t(1), 300, json!("bad"))),
        writes: vec![
            Write::InsertRun(Box::new(run("bad", "s", RunStatus::Running, t(1)))),
            Write::SetStatus { run_id: "existing".into(), from: RunStatus::Deferred, to: RunStatus::Running, at: t(1) },
        ],
    };
    let batches =
        [start(run("good1", "s", RunStatus::Running, t(1))), bad, start(run("good2", "s", RunStatus::Running, t(2)))];
    let mut tasks = Vec::new();
    for (queued, batch) in batches.into_iter().enumerate() {
        let committer = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { committer.commit(batch).await }));
        // One at a time, so the queue order is the order above.
        store.wait_until_queued(queued + 1).await;
    }
    release.release();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }

    assert!(matches!(results[0], Ok(Committed::Applied)), "{results:?}");
    assert!(matches!(results[1], Err(StoreError::Conflict(_))), "{results:?}");
    assert!(matches!(results[2], Ok(Committed::Applied)), "{results:?}");
    assert_eq!(store.stats().transactions - before.transactions, 1);
    assert!(store.get_run("good1").await.unwrap().is_some());
    assert!(store.get_run("good2").await.unwrap().is_some());
    assert_eq!(store.get_run("bad").await.unwrap(), None);
    assert_eq!(store.idempotency_response("/webhook", "bad", t(2)).await.unwrap(), None);
}

async fn a_key_claimed_twice_in_one_transaction_is_a_duplicate(b: Backend) {
    let store = b.open().await;
    let store = Arc::new(store);
    let release = store.hold_writer().await;
    let mut tasks = Vec::new();
    for (queued, id) in ["first", "second"].into_iter().enumerate() {
        let batch = Batch {
            idempotency: Some(claim("/webhook", "k", t(0), 300, json!(id))),
            ..start(run(id, "s", RunStatus::Running, t(0)))
        };
        let committer = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { committer.commit(batch).await }));
        store.wait_until_queued(queued + 1).await;
    }
    release.release();
    assert_eq!(tasks.remove(0).await.unwrap().unwrap(), Committed::Applied);
    assert_eq!(tasks.remove(0).await.unwrap().unwrap(), Committed::Duplicate { response: json!("first") });
    assert_eq!(store.get_run("second").await.unwrap(), None);
}

async fn the_watch_counts_what_committed_and_nothing_of_a_refused_batch(b: Backend) {
    let store = b.open().await;
    let entry = |id: &str| Write::Enqueue(Box::new(super::outbox::entry(id, "r", t(0))));
    let mut waiting = run("w", "s", RunStatus::PendingApproval, t(0));
    waiting.step = 0;
    let batch = Batch { idempotency: None, writes: vec![entry("e1"), Write::InsertRun(Box::new(waiting))] };
    store.commit(batch).await.unwrap();
    assert_eq!((store.watch().outbox_pending(), store.watch().pending_approvals()), (1, 1));

    // Refused whole: the delivery of an entry that does not exist.
    let refused = Batch {
        idempotency: None,
        writes: vec![entry("e2"), Write::Delivered { id: "ghost".into(), attempts: 1, at: t(1) }],
    };
    assert!(matches!(store.commit(refused).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.watch().outbox_pending(), 1);
    assert_eq!(store.watch().write_state(), WriteState::Ok, "a refused compare-and-set is not a failing store");

    let done = Batch {
        idempotency: None,
        writes: vec![
            Write::Delivered { id: "e1".into(), attempts: 1, at: t(2) },
            Write::SetStatus {
                run_id: "w".into(),
                from: RunStatus::PendingApproval,
                to: RunStatus::Cancelled,
                at: t(2),
            },
        ],
    };
    store.commit(done).await.unwrap();
    assert_eq!((store.watch().outbox_pending(), store.watch().pending_approvals()), (0, 0));
    assert_eq!(store.watch().enqueued("agent"), 1);
}

async fn committed_data_survives_closing_and_reopening(b: Backend) {
    let store = b.open().await;
    let r = run("r", "s", RunStatus::Running, t(0));
    let batch = Batch {
        idempotency: Some(claim("/webhook", "k", t(0), 300, json!("first"))),
        writes: vec![
            Write::InsertRun(Box::new(r.clone())),
            audit_for(&r, AuditKind::RunStarted),
            Write::CronChecked { key: "0 0 8 * * *@UTC".into(), at: t(5) },
        ],
    };
    store.commit(batch).await.unwrap();
    store.add_pairing_code("code-hash", t(0), t(300)).await.unwrap();
    let audit = store.audit(&all_audit()).await.unwrap();
    drop(store);

    let store = b.open().await;
    assert_eq!(store.get_run("r").await.unwrap(), Some(r));
    assert_eq!(store.audit(&all_audit()).await.unwrap(), audit);
    assert_eq!(store.idempotency_response("/webhook", "k", t(1)).await.unwrap(), Some(json!("first")));
    assert_eq!(store.cron_last_check("0 0 8 * * *@UTC").await.unwrap(), Some(t(5)));
    assert!(store.redeem_pairing_code("code-hash", t(1), &token("abcd1234", t(1))).await.unwrap());
}

async fn a_second_opener_sees_what_the_first_wrote(b: Backend) {
    let daemon = b.open().await;
    let cli = b.open().await;

    daemon.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();
    assert!(cli.get_run("r").await.unwrap().is_some());
    assert_eq!(cli.audit(&all_audit()).await.unwrap().len(), 1);

    cli.add_pairing_code("code", t(0), t(300)).await.unwrap();
    assert!(daemon.redeem_pairing_code("code", t(1), &token("abcd1234", t(1))).await.unwrap());
    assert_eq!(cli.find_token("abcd1234").await.unwrap(), Some(token("abcd1234", t(1))));
    cli.ping().await.unwrap();
    daemon.ping().await.unwrap();
}

async fn a_pairing_code_buys_one_token_while_it_lives(b: Backend) {
    let store = b.open().await;
    store.add_pairing_code("live", t(0), t(300)).await.unwrap();
    store.add_pairing_code("old", t(0), t(10)).await.unwrap();

    assert!(store.redeem_pairing_code("live", t(1), &token("aaaa0001", t(1))).await.unwrap());
    assert!(!store.redeem_pairing_code("live", t(2), &token("aaaa0002", t(2))).await.unwrap());
    assert!(!store.redeem_pairing_code("old", t(10), &token("aaaa0003", t(10))).await.unwrap());
    assert!(!store.redeem_pairing_code("unknown", t(1), &token("aaaa0004", t(1))).await.unwrap());

    assert_eq!(store.list_tokens().await.unwrap(), vec![token("aaaa0001", t(1))]);
    assert_eq!(store.find_token("aaaa0002").await.unwrap(), None);
}

async fn a_token_that_cannot_be_stored_leaves_the_code_unused(b: Backend) {
    let store = b.open().await;
    store.add_pairing_code("c1", t(0), t(300)).await.unwrap();
    store.add_pairing_code("c2", t(0), t(300)).await.unwrap();
    assert!(store.redeem_pairing_code("c1", t(1), &token("aaaa0001", t(1))).await.unwrap());

    let clash = store.redeem_pairing_code("c2", t(2), &token("aaaa0001", t(2))).await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert!(store.redeem_pairing_code("c2", t(3), &token("bbbb0001", t(3))).await.unwrap());
}

async fn a_code_generated_again_is_fresh(b: Backend) {
    let store = b.open().await;
    store.add_pairing_code("same", t(0), t(300)).await.unwrap();
    assert!(store.redeem_pairing_code("same", t(1), &token("aaaa0001", t(1))).await.unwrap());
    store.add_pairing_code("same", t(400), t(700)).await.unwrap();
    assert!(store.redeem_pairing_code("same", t(401), &token("aaaa0002", t(401))).await.unwrap());
}

/// Wrong guesses made so far against the code with this MAC, and when it
/// was retired.
async fn wrong_guesses(b: &Backend, mac: &str) -> (i64, Option<i64>) {
    let rows = b.integers(&format!("SELECT wrong_guesses, retired_at FROM pairing_codes WHERE hash = '{mac}'")).await;
    (rows[0][0].expect("a count"), rows[0][1])
}

async fn a_wrong_guess_is_charged_to_every_code_live_when_it_was_made(b: Backend) {
    let store = b.open().await;
    store.add_pairing_code("early", t(0), t(300)).await.unwrap();
    store.add_pairing_code("late", t(10), t(300)).await.unwrap();
    store.add_pairing_code("short", t(0), t(8)).await.unwrap();
    assert_eq!(store.pairing_lookup("early", t(5)).await.unwrap(), PairingLookup { matches: true, live: 2 });

    assert_eq!(store.charge_pairing_guess(t(5), 3).await.unwrap(), 0);
    assert_eq!(wrong_guesses(&b, "early").await, (1, None));
    assert_eq!(wrong_guesses(&b, "late").await.0, 0, "issued after the guess");
    assert_eq!(wrong_guesses(&b, "short").await.0, 1);
    assert_eq!(store.charge_pairing_guess(t(20), 3).await.unwrap(), 0);
    assert_eq!(wrong_guesses(&b, "short").await.0, 1, "an expired code is not charged");

    assert_eq!(store.charge_pairing_guess(t(21), 3).await.unwrap(), 1, "the budget is spent: retired");
    assert_eq!(wrong_guesses(&b, "early").await, (3, Some(micros(t(21)))));
    assert_eq!(wrong_guesses(&b, "late").await, (2, None));
    assert_eq!(store.pairing_lookup("early", t(22)).await.unwrap(), PairingLookup { matches: false, live: 1 });
    assert!(!store.redeem_pairing_code("early", t(22), &token("aaaa0001", t(22))).await.unwrap());
    assert!(store.redeem_pairing_code("late", t(23), &token("aaaa0002", t(23))).await.unwrap());
    assert_eq!(store.pairing_lookup("late", t(24)).await.unwrap(), PairingLookup::default(), "used");
    assert_eq!(store.charge_pairing_guess(t(25), 3).await.unwrap(), 0, "a used code is not charged");

    let audit = store.audit(&all_audit()).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].kind, audit[0].at, audit[0].run_id.as_deref()), (AuditKind::PairingCodeRetired, t(21), None));
    assert_eq!(audit[0].detail["wrong_guesses"], json!(3));
    assert_eq!(audit[0].detail["issued_at"], json!(t(0).to_rfc3339()));
}

async fn a_code_drawn_again_gets_its_whole_budget_and_expired_codes_go(b: Backend) {
    let store = b.open().await;
    store.add_pairing_code("same", t(0), t(300)).await.unwrap();
    store.add_pairing_code("gone", t(0), t(100)).await.unwrap();
    store.charge_pairing_guess(t(1), 1).await.unwrap();
    assert!(wrong_guesses(&b, "same").await.1.is_some(), "retired");
    store.add_pairing_code("same", t(200), t(500)).await.unwrap();
    assert_eq!(wrong_guesses(&b, "same").await, (0, None));
    assert!(store.pairing_lookup("same", t(201)).await.unwrap().matches);
    let left = b.integers("SELECT COUNT(*) FROM pairing_codes").await;
    assert_eq!(left, [[Some(1)]], "the code that expired before the new one was issued is removed");
}

async fn a_read_only_store_reads_and_takes_no_writes(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();
    let reader = b.open_read_only().await;
    assert!(reader.get_run("r").await.unwrap().is_some());
    reader.ping().await.unwrap();
    store.commit(start(run("r2", "s", RunStatus::Running, t(1)))).await.unwrap();
    assert_eq!(reader.list_runs(&all_runs()).await.unwrap().len(), 2, "it sees later commits");
    match reader.commit(start(run("r3", "s", RunStatus::Running, t(2)))).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("read-only"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(matches!(reader.add_pairing_code("c", t(0), t(1)).await, Err(StoreError::Invalid(_))));
}

async fn revoke_tokens_by_prefix(b: Backend) {
    let store = b.open().await;
    for (i, prefix) in ["abcd0001", "abcd0002", "ffff0001"].into_iter().enumerate() {
        let code = format!("code{i}");
        store.add_pairing_code(&code, t(0), t(300)).await.unwrap();
        assert!(store.redeem_pairing_code(&code, t(i as i64), &token(prefix, t(i as i64))).await.unwrap());
    }

    assert_eq!(store.revoke_tokens("abcd", t(10)).await.unwrap(), 2);
    assert_eq!(store.revoke_tokens("abcd", t(11)).await.unwrap(), 0, "already revoked");
    assert_eq!(store.revoke_tokens("%", t(11)).await.unwrap(), 0, "no pattern matching");
    assert!(matches!(store.revoke_tokens("", t(11)).await, Err(StoreError::Invalid(_))));

    let listed = store.list_tokens().await.unwrap();
    let revoked: Vec<_> = listed.iter().map(|tk| (tk.prefix.as_str(), tk.revoked_at)).collect();
    assert_eq!(revoked, [("abcd0001", Some(t(10))), ("abcd0002", Some(t(10))), ("ffff0001", None)]);
    assert_eq!(store.find_token("abcd0001").await.unwrap().unwrap().revoked_at, Some(t(10)));
}

async fn cron_last_check_is_upserted(b: Backend) {
    let store = b.open().await;
    assert_eq!(store.cron_last_check("k").await.unwrap(), None);
    for secs in [5, 65] {
        let batch = Batch { idempotency: None, writes: vec![Write::CronChecked { key: "k".into(), at: t(secs) }] };
        store.commit(batch).await.unwrap();
        assert_eq!(store.cron_last_check("k").await.unwrap(), Some(t(secs)));
    }
    assert_eq!(store.cron_last_check("other").await.unwrap(), None);
}

async fn sop_loads_count_slots_finish_times_and_backlog(b: Backend) {
    let store = b.open().await;
    let rows = [
        ("d1", "deploy", RunStatus::PendingApproval, 0),
        ("d2", "deploy", RunStatus::Running, 1),
        ("d3", "deploy", RunStatus::WaitingAgent, 2),
        ("d4", "deploy", RunStatus::Deferred, 4),
        ("d5", "deploy", RunStatus::Deferred, 3),
        ("d6", "deploy", RunStatus::Running, 5),
        ("d7", "deploy", RunStatus::Running, 6),
        ("b1", "backup", RunStatus::Running, 0),
    ];
    for (id, sop, status, secs) in rows {
        store.commit(start(run(id, sop, status, t(secs)))).await.unwrap();
    }
    store.commit(set_status("d6", RunStatus::Running, RunStatus::Completed, t(50))).await.unwrap();
    store.commit(set_status("d7", RunStatus::Running, RunStatus::Failed, t(40))).await.unwrap();
    store.commit(set_status("b1", RunStatus::Running, RunStatus::Cancelled, t(9))).await.unwrap();

    let loads = store.sop_loads().await.unwrap();
    assert_eq!(
        loads,
        vec![
            SopLoad { sop: "backup".into(), active: 0, last_finished_at: Some(t(9)), deferred: vec![] },
            SopLoad {
                sop: "deploy".into(),
                // d1 and d2; d3 waits for the agent loop and holds no slot.
                active: 2,
                last_finished_at: Some(t(50)),
                deferred: vec!["d5".into(), "d4".into()],
            },
        ]
    );
}

async fn an_empty_store_has_no_loads_and_answers_ping(b: Backend) {
    let store = b.open().await;
    assert!(store.sop_loads().await.unwrap().is_empty());
    assert!(store.list_runs(&all_runs()).await.unwrap().is_empty());
    assert!(store.list_tokens().await.unwrap().is_empty());
    store.ping().await.unwrap();
}

async fn a_store_of_a_newer_fanin_is_refused(b: Backend) {
    drop(b.open().await);
    let newer = b.schema_version() + 1;
    b.set_schema_version(newer).await;
    match b.try_open().await {
        Err(StoreError::Invalid(m)) => {
            assert!(m.contains(&format!("schema version {newer}")) && m.contains(b.name_hint()), "{m}")
        }
        Err(other) => panic!("expected Invalid, got {other:?}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

suite!(
    a_run_round_trips,
    times_keep_microseconds,
    inserting_a_run_id_twice_is_a_conflict,
    list_runs_is_newest_first_and_filters,
    audit_is_oldest_first_with_increasing_seq_and_filters,
    audit_seq_is_never_reused,
    set_status_is_compare_and_set,
    a_source_cursor_is_compare_and_set,
    file_states_are_upserted_and_deleted_per_source,
    a_batch_whose_second_write_fails_leaves_no_trace,
    coalesce_replaces_the_event_of_a_deferred_run_only,
    a_duplicate_key_returns_the_first_response_and_writes_nothing,
    an_expired_key_can_be_claimed_again,
    idempotency_scopes_are_independent,
    purge_deletes_only_expired_keys,
    concurrent_commits_share_one_transaction,
    concurrent_pipelined_commits_share_one_transaction,
    pipelined_and_immediate_commits_share_one_transaction,
    a_refused_request_does_not_affect_its_transaction_neighbours,
    a_key_claimed_twice_in_one_transaction_is_a_duplicate,
    the_watch_counts_what_committed_and_nothing_of_a_refused_batch,
    committed_data_survives_closing_and_reopening,
    a_second_opener_sees_what_the_first_wrote,
    a_pairing_code_buys_one_token_while_it_lives,
    a_token_that_cannot_be_stored_leaves_the_code_unused,
    a_code_generated_again_is_fresh,
    a_wrong_guess_is_charged_to_every_code_live_when_it_was_made,
    a_code_drawn_again_gets_its_whole_budget_and_expired_codes_go,
    a_read_only_store_reads_and_takes_no_writes,
    revoke_tokens_by_prefix,
    cron_last_check_is_upserted,
    sop_loads_count_slots_finish_times_and_backlog,
    an_empty_store_has_no_loads_and_answers_ping,
    a_store_of_a_newer_fanin_is_refused,
);
