//! The run's step index and the agent loop's step records: pending, leased,
//! expired, finished, and every compare-and-set that must refuse.

use super::*;

fn one(write: Write) -> Batch {
    Batch { idempotency: None, writes: vec![write] }
}

fn pend(run_id: &str, index: u32, at: DateTime<Utc>) -> Batch {
    one(Write::PendStep { run_id: run_id.into(), index, at })
}

fn lease(run_id: &str, index: u32, lease_id: &str, until: DateTime<Utc>, at: DateTime<Utc>) -> Batch {
    one(Write::LeaseStep { run_id: run_id.into(), index, lease_id: lease_id.into(), until, at })
}

fn finish(run_id: &str, index: u32, lease_id: &str, status: StepStatus, at: DateTime<Utc>) -> Batch {
    let output = json!({"by": lease_id, "status": format!("{status:?}")});
    one(Write::FinishStep { run_id: run_id.into(), index, lease_id: lease_id.into(), status, output, at })
}

fn set_step(run_id: &str, from: u32, to: u32, at: DateTime<Utc>) -> Batch {
    one(Write::SetStep { run_id: run_id.into(), from, to, at })
}

/// A run waiting for the agent loop at step 0, whose step is pending.
async fn waiting(store: &Opened, run_id: &str, at: DateTime<Utc>) {
    store.commit(start(run(run_id, "s", RunStatus::WaitingAgent, at))).await.unwrap();
    store.commit(pend(run_id, 0, at)).await.unwrap();
}

/// A conflict whose message names every one of `words`.
fn assert_conflict(result: Result<Committed, StoreError>, words: &[&str]) {
    match result {
        Err(StoreError::Conflict(m)) => assert!(words.iter().all(|w| m.contains(w)), "{m:?} should name {words:?}"),
        other => panic!("expected a conflict naming {words:?}, got {other:?}"),
    }
}

async fn step(store: &Opened, run_id: &str, index: u32) -> StepRecord {
    let steps = store.steps(run_id).await.unwrap();
    steps.into_iter().find(|s| s.index == index).expect("step record")
}

async fn set_step_is_compare_and_set(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();

    store.commit(set_step("r", 0, 1, t(1))).await.unwrap();
    let moved = store.get_run("r").await.unwrap().unwrap();
    assert_eq!((moved.step, moved.updated_at), (1, t(1)));

    assert_conflict(store.commit(set_step("r", 0, 2, t(2))).await, &["run r", "step is 1", "expected 0"]);
    assert_eq!(store.get_run("r").await.unwrap().unwrap(), moved);
    assert_conflict(store.commit(set_step("ghost", 0, 1, t(2))).await, &["ghost", "no such run"]);
}

async fn a_pended_step_is_pending_once(b: Backend) {
    let store = b.open().await;
    store.commit(pend("r", 0, t(1))).await.unwrap();
    let expected = StepRecord {
        run_id: "r".into(),
        index: 0,
        status: StepStatus::Pending,
        lease_id: None,
        leased_until: None,
        attempts: 0,
        output: None,
        created_at: t(1),
        updated_at: t(1),
    };
    assert_eq!(store.steps("r").await.unwrap(), vec![expected.clone()]);

    assert_conflict(store.commit(pend("r", 0, t(2))).await, &["run r step 0", "already", "pending"]);
    assert_eq!(store.steps("r").await.unwrap(), vec![expected]);
}

async fn steps_are_listed_by_index_per_run(b: Backend) {
    let store = b.open().await;
    for (run_id, index) in [("r", 2), ("other", 0), ("r", 0), ("r", 1)] {
        store.commit(pend(run_id, index, t(index as i64))).await.unwrap();
    }
    let indexes: Vec<u32> = store.steps("r").await.unwrap().iter().map(|s| s.index).collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(store.steps("none").await.unwrap().is_empty());
}

async fn a_lease_holds_until_it_ends_then_the_step_is_leasable_again(b: Backend) {
    let store = b.open().await;
    waiting(&store, "r", t(0)).await;
    assert_eq!(store.next_leasable_step(t(1)).await.unwrap().map(|s| s.index), Some(0));

    store.commit(lease("r", 0, "lease-a", t(60), t(1))).await.unwrap();
    let leased = step(&store, "r", 0).await;
    assert_eq!(
        (leased.status, leased.lease_id.as_deref(), leased.leased_until, leased.attempts, leased.updated_at),
        (StepStatus::Leased, Some("lease-a"), Some(t(60)), 1, t(1))
    );
    assert_eq!(leased.created_at, t(0));

    // Still held just before it ends: neither listed nor leasable.
    assert_eq!(store.next_leasable_step(t(59)).await.unwrap(), None);
    assert_conflict(store.commit(lease("r", 0, "lease-b", t(120), t(59))).await, &["run r step 0", "lease-a"]);
    assert_eq!(step(&store, "r", 0).await, leased);

    // Ended at t(60): leasable again, and a new lease counts one more attempt.
    assert_eq!(store.next_leasable_step(t(60)).await.unwrap(), Some(leased));
    store.commit(lease("r", 0, "lease-b", t(120), t(60))).await.unwrap();
    let released = step(&store, "r", 0).await;
    assert_eq!((released.lease_id.as_deref(), released.attempts), (Some("lease-b"), 2));
}

async fn finishing_needs_the_latest_lease(b: Backend) {
    let store = b.open().await;
    store.commit(pend("r", 0, t(0))).await.unwrap();
    store.commit(lease("r", 0, "lease-a", t(10), t(1))).await.unwrap();
    store.commit(lease("r", 0, "lease-b", t(30), t(10))).await.unwrap();

    assert_conflict(
        store.commit(finish("r", 0, "lease-a", StepStatus::Completed, t(11))).await,
        &["run r step 0", "lease-b", "not lease-a"],
    );
    assert_eq!(step(&store, "r", 0).await.status, StepStatus::Leased);

    store.commit(finish("r", 0, "lease-b", StepStatus::Completed, t(12))).await.unwrap();
    let done = step(&store, "r", 0).await;
    assert_eq!((done.status, done.updated_at, done.attempts), (StepStatus::Completed, t(12), 2));
    assert_eq!(done.output, Some(json!({"by": "lease-b", "status": "Completed"})));

    // Finished is final: no second report, no new lease, not leasable.
    assert_conflict(
        store.commit(finish("r", 0, "lease-b", StepStatus::Failed, t(13))).await,
        &["run r step 0", "completed"],
    );
    assert_conflict(store.commit(lease("r", 0, "lease-c", t(99), t(50))).await, &["run r step 0", "completed"]);
    assert_eq!(store.next_leasable_step(t(50)).await.unwrap(), None);
}

async fn an_expired_lease_may_still_report_while_nobody_took_over(b: Backend) {
    let store = b.open().await;
    store.commit(pend("r", 3, t(0))).await.unwrap();
    store.commit(lease("r", 3, "lease-a", t(10), t(1))).await.unwrap();
    store.commit(finish("r", 3, "lease-a", StepStatus::Failed, t(20))).await.unwrap();
    let failed = step(&store, "r", 3).await;
    assert_eq!((failed.status, failed.attempts), (StepStatus::Failed, 1));
}

async fn steps_that_cannot_be_leased_or_finished(b: Backend) {
    let store = b.open().await;
    store.commit(pend("r", 0, t(0))).await.unwrap();

    assert_conflict(store.commit(lease("ghost", 0, "l", t(9), t(1))).await, &["run ghost step 0", "no such step"]);
    assert_conflict(
        store.commit(finish("ghost", 0, "l", StepStatus::Completed, t(1))).await,
        &["run ghost step 0", "no such step"],
    );
    assert_conflict(
        store.commit(finish("r", 0, "l", StepStatus::Completed, t(1))).await,
        &["run r step 0", "pending", "not leased"],
    );

    store.commit(lease("r", 0, "l", t(9), t(1))).await.unwrap();
    for status in [StepStatus::Pending, StepStatus::Leased] {
        let refused = store.commit(finish("r", 0, "l", status, t(2))).await;
        assert!(matches!(refused, Err(StoreError::Invalid(ref m)) if m.contains("run r step 0")), "{refused:?}");
    }
    assert_eq!(step(&store, "r", 0).await.status, StepStatus::Leased);
}

/// The run of the step an agent would be handed at `now`.
async fn next_run(store: &Opened, now: DateTime<Utc>) -> Option<String> {
    store.next_leasable_step(now).await.unwrap().map(|s| s.run_id)
}

async fn the_oldest_pending_or_expired_step_is_leased_first(b: Backend) {
    let store = b.open().await;
    // Written in this order; b0 and c0 became pending at the same instant.
    for (run_id, secs) in [("a", 5), ("b", 2), ("c", 2), ("d", 1)] {
        waiting(&store, run_id, t(secs)).await;
    }
    store.commit(lease("d", 0, "ld", t(100), t(6))).await.unwrap();
    store.commit(lease("b", 0, "lb", t(50), t(6))).await.unwrap();
    store.commit(finish("b", 0, "lb", StepStatus::Completed, t(7))).await.unwrap();

    // d is held, b is done: c (same instant as b, written after it) is next.
    assert_eq!(next_run(&store, t(10)).await.as_deref(), Some("c"));
    store.commit(lease("c", 0, "lc", t(200), t(10))).await.unwrap();
    assert_eq!(next_run(&store, t(10)).await.as_deref(), Some("a"));
    // Once d's lease ends, d is older than a.
    assert_eq!(next_run(&store, t(100)).await.as_deref(), Some("d"));
}

async fn only_a_run_waiting_at_that_step_offers_it(b: Backend) {
    let store = b.open().await;
    // A step record with no run, and one whose run an operator ended.
    store.commit(pend("orphan", 0, t(0))).await.unwrap();
    waiting(&store, "ended", t(1)).await;
    store.commit(set_status("ended", RunStatus::WaitingAgent, RunStatus::Cancelled, t(2))).await.unwrap();
    assert_eq!(next_run(&store, t(3)).await, None);
    waiting(&store, "live", t(4)).await;
    assert_eq!(next_run(&store, t(5)).await.as_deref(), Some("live"));
}

async fn agent_steps_are_the_open_steps_of_runs_waiting_at_them(b: Backend) {
    let store = b.open().await;
    assert_eq!(store.agent_steps(0).await.unwrap(), vec![]);
    // Written in this order; b0 and c0 became pending at the same instant.
    for (run_id, secs) in [("a", 5), ("b", 2), ("c", 2), ("d", 1), ("held", 3), ("done", 0)] {
        waiting(&store, run_id, t(secs)).await;
    }
    // A lease that has ended and one that holds: both still the agent's.
    store.commit(lease("d", 0, "ld", t(4), t(3))).await.unwrap();
    store.commit(lease("held", 0, "lh", t(1000), t(4))).await.unwrap();
    store.commit(lease("done", 0, "lx", t(100), t(1))).await.unwrap();
    store.commit(finish("done", 0, "lx", StepStatus::Completed, t(2))).await.unwrap();
    // Not waiting for the agent at that step: no run, a run an operator
    // ended, a running run, a withdrawn step, a run moved past its step.
    store.commit(pend("orphan", 0, t(0))).await.unwrap();
    waiting(&store, "ended", t(0)).await;
    store.commit(set_status("ended", RunStatus::WaitingAgent, RunStatus::Cancelled, t(1))).await.unwrap();
    store.commit(start(run("running", "s", RunStatus::Running, t(0)))).await.unwrap();
    store.commit(pend("running", 0, t(0))).await.unwrap();
    waiting(&store, "withdrawn", t(0)).await;
    store.commit(withdraw("withdrawn", 0, t(1))).await.unwrap();
    waiting(&store, "moved", t(0)).await;
    store.commit(set_step("moved", 0, 1, t(6))).await.unwrap();
    store.commit(pend("moved", 1, t(6))).await.unwrap();

    let listed = |steps: Vec<StepRecord>| -> Vec<(String, u32, StepStatus)> {
        steps.into_iter().map(|s| (s.run_id, s.index, s.status)).collect()
    };
    let all = vec![
        ("d".to_owned(), 0, StepStatus::Leased),
        ("b".to_owned(), 0, StepStatus::Pending),
        ("c".to_owned(), 0, StepStatus::Pending),
        ("held".to_owned(), 0, StepStatus::Leased),
        ("a".to_owned(), 0, StepStatus::Pending),
        ("moved".to_owned(), 1, StepStatus::Pending),
    ];
    assert_eq!(listed(store.agent_steps(0).await.unwrap()), all);
    assert_eq!(listed(store.agent_steps(3).await.unwrap()), all[..3]);
    assert_eq!(listed(store.agent_steps(100).await.unwrap()), all);
}

async fn a_failing_write_undoes_its_whole_batch(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r", "s", RunStatus::Running, t(0)))).await.unwrap();
    store.commit(pend("r", 0, t(0))).await.unwrap();

    let cases: Vec<(&str, Write)> = vec![
        ("a stale step index", Write::SetStep { run_id: "r".into(), from: 5, to: 6, at: t(1) }),
        ("a step pended twice", Write::PendStep { run_id: "r".into(), index: 0, at: t(1) }),
        (
            "a lease on a missing step",
            Write::LeaseStep { run_id: "r".into(), index: 9, lease_id: "x".into(), until: t(9), at: t(1) },
        ),
        (
            "a report without a lease",
            Write::FinishStep {
                run_id: "r".into(),
                index: 0,
                lease_id: "x".into(),
                status: StepStatus::Completed,
                output: json!(null),
                at: t(1),
            },
        ),
        ("a delivery of a missing entry", Write::Delivered { id: "ghost".into(), attempts: 1, at: t(1) }),
    ];
    for (what, failing) in cases {
        let batch = Batch {
            idempotency: Some(claim("/agent", what, t(1), 300, json!(what))),
            writes: vec![
                Write::SetStep { run_id: "r".into(), from: 0, to: 1, at: t(1) },
                Write::PendStep { run_id: "r".into(), index: 1, at: t(1) },
                Write::LeaseStep { run_id: "r".into(), index: 0, lease_id: "l".into(), until: t(9), at: t(1) },
                Write::Enqueue(Box::new(super::outbox::entry("e1", "r", t(1)))),
                failing,
            ],
        };
        assert!(matches!(store.commit(batch).await, Err(StoreError::Conflict(_))), "{what}");

        assert_eq!(store.get_run("r").await.unwrap().unwrap().step, 0, "{what}");
        let steps = store.steps("r").await.unwrap();
        assert_eq!((steps.len(), steps[0].status, steps[0].attempts), (1, StepStatus::Pending, 0), "{what}");
        assert!(store.outbox_list(None, 0).await.unwrap().is_empty(), "{what}");
        assert_eq!(store.idempotency_response("/agent", what, t(2)).await.unwrap(), None, "{what}");
    }
}

async fn steps_and_the_step_index_survive_reopening(b: Backend) {
    let store = b.open().await;
    store.commit(start(run("r", "s", RunStatus::WaitingAgent, t(0)))).await.unwrap();
    store.commit(set_step("r", 0, 1, t(1))).await.unwrap();
    store.commit(pend("r", 0, t(1))).await.unwrap();
    store.commit(pend("r", 1, t(2))).await.unwrap();
    store.commit(lease("r", 0, "l", t(9), t(3))).await.unwrap();
    store.commit(finish("r", 0, "l", StepStatus::Completed, t(4))).await.unwrap();
    let steps = store.steps("r").await.unwrap();
    drop(store);

    let store = b.open().await;
    assert_eq!(store.get_run("r").await.unwrap().unwrap().step, 1);
    assert_eq!(store.steps("r").await.unwrap(), steps);
    assert_eq!(store.next_leasable_step(t(5)).await.unwrap().map(|s| s.index), Some(1));
}

fn withdraw(run_id: &str, index: u32, at: DateTime<Utc>) -> Batch {
    one(Write::WithdrawStep { run_id: run_id.into(), index, at })
}

async fn an_open_step_is_withdrawn_once_and_then_neither_leased_nor_finished(b: Backend) {
    let store = b.open().await;
    waiting(&store, "pending", t(0)).await;
    waiting(&store, "leased", t(0)).await;
    store.commit(lease("leased", 0, "l", t(100), t(1))).await.unwrap();
    waiting(&store, "done", t(0)).await;
    store.commit(lease("done", 0, "d", t(100), t(1))).await.unwrap();
    store.commit(finish("done", 0, "d", StepStatus::Completed, t(2))).await.unwrap();

    for run_id in ["pending", "leased"] {
        store.commit(withdraw(run_id, 0, t(3))).await.unwrap();
        let withdrawn = step(&store, run_id, 0).await;
        assert_eq!((withdrawn.status, withdrawn.updated_at), (StepStatus::Withdrawn, t(3)), "{run_id}");
    }
    assert_conflict(store.commit(withdraw("pending", 0, t(4))).await, &["run pending step 0", "withdrawn"]);
    assert_conflict(store.commit(withdraw("done", 0, t(4))).await, &["run done step 0", "completed"]);
    assert_conflict(store.commit(withdraw("ghost", 0, t(4))).await, &["run ghost step 0", "no such step"]);
    assert_conflict(store.commit(lease("pending", 0, "x", t(200), t(150))).await, &["run pending step 0", "withdrawn"]);
    assert_conflict(
        store.commit(finish("leased", 0, "l", StepStatus::Completed, t(5))).await,
        &["run leased step 0", "withdrawn", "not leased"],
    );
    assert_eq!(store.next_leasable_step(t(500)).await.unwrap(), None, "nothing open is left to lease");
}

suite!(
    set_step_is_compare_and_set,
    a_pended_step_is_pending_once,
    steps_are_listed_by_index_per_run,
    a_lease_holds_until_it_ends_then_the_step_is_leasable_again,
    finishing_needs_the_latest_lease,
    an_expired_lease_may_still_report_while_nobody_took_over,
    steps_that_cannot_be_leased_or_finished,
    the_oldest_pending_or_expired_step_is_leased_first,
    only_a_run_waiting_at_that_step_offers_it,
    agent_steps_are_the_open_steps_of_runs_waiting_at_them,
    a_failing_write_undoes_its_whole_batch,
    steps_and_the_step_index_survive_reopening,
    an_open_step_is_withdrawn_once_and_then_neither_leased_nor_finished,
);
