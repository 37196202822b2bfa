//! What a store has lately done, kept where every writer passes: whether its
//! writes succeed (for `/ready` and one log line per change, not one per
//! refused request), and counts that follow its commits (outbox depth,
//! runs waiting for approval) for `/metrics`.
//!
//! Why here: every writer (gateway, sources, outbox worker, pairing) goes
//! through the store, so a refused write is seen whoever made it, and a
//! count kept from committed batches is exact without a query per scrape.
//! The counts start from [`Tallies`] read once at daemon start (see
//! [`StoreWatch::seed`]), so they stay right across restarts. Pure apart
//! from its locks: times are arguments.
//!
//! It also numbers the committed batches ([`StoreWatch::commits`]), the one
//! signal the console's live lists follow: whoever wrote, a page showing
//! runs learns that it may be stale without asking the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::{Batch, Write};
use fanin_core::runs::RunStatus;

/// Counts read from the store itself, to start the live counts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Pending outbox entries per destination (`agent`, `executor`).
    pub outbox_pending: BTreeMap<String, u64>,
    /// Runs in `pending_approval`.
    pub pending_approvals: u64,
}

/// Whether the store's writes succeed, as `/ready` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteState {
    /// No write has failed since the last one that succeeded (or ever).
    Ok,
    /// The last write failed, and none succeeded since.
    Failing {
        reason: String,
        since: DateTime<Utc>,
        /// Writes refused since `since`.
        refused: u64,
    },
}

/// What the store should log after recording an outcome: only changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteNotice {
    /// Writes started failing.
    Failing { reason: String },
    /// A write succeeded after `refused` were refused since `since`.
    Recovered { since: DateTime<Utc>, refused: u64 },
}

#[derive(Default)]
pub struct StoreWatch {
    state: Mutex<Option<(String, DateTime<Utc>, u64)>>,
    outbox_pending: AtomicI64,
    pending_approvals: AtomicI64,
    /// Envelopes enqueued since start, per destination.
    enqueued: Mutex<BTreeMap<String, u64>>,
    /// Pending envelopes withdrawn since start (their run was cancelled),
    /// per destination.
    withdrawn: Mutex<BTreeMap<String, u64>>,
    /// Committed batches since start; a watch, so a slow reader sees only
    /// the latest number and is never queued behind the writers.
    commits: tokio::sync::watch::Sender<u64>,
}

impl StoreWatch {
    /// Starts the counts from what the store holds (at daemon start, before
    /// anything is written; later commits move them on).
    pub fn seed(&self, tallies: &Tallies) {
        let pending: u64 = tallies.outbox_pending.values().sum();
        self.outbox_pending.store(pending as i64, Ordering::Relaxed);
        self.pending_approvals.store(tallies.pending_approvals as i64, Ordering::Relaxed);
    }

    /// A write transaction that changed something committed.
    pub fn wrote(&self) -> Option<WriteNotice> {
        let was = self.lock_state().take();
        was.map(|(_, since, refused)| WriteNotice::Recovered { since, refused })
    }

    /// A write was refused at `at` for `reason` (nothing of it was written).
    pub fn refused(&self, reason: &str, at: DateTime<Utc>) -> Option<WriteNotice> {
        let mut state = self.lock_state();
        match state.as_mut() {
            Some((last, _, refused)) => {
                *refused += 1;
                *last = reason.to_string();
                None
            }
            None => {
                *state = Some((reason.to_string(), at, 1));
                Some(WriteNotice::Failing { reason: reason.to_string() })
            }
        }
    }

    pub fn write_state(&self) -> WriteState {
        match self.lock_state().as_ref() {
            None => WriteState::Ok,
            Some((reason, since, refused)) => {
                WriteState::Failing { reason: reason.clone(), since: *since, refused: *refused }
            }
        }
    }

    /// Moves the counts on by what a committed batch changed. Every write
    /// of a committed batch took effect (a compare-and-set that did not
    /// hold refuses the whole batch), so the counts stay exact.
    pub fn committed(&self, batch: &Batch) {
        self.commits.send_modify(|n| *n += 1);
        let (mut outbox, mut approvals) = (0i64, 0i64);
        for write in &batch.writes {
            match write {
                Write::Enqueue(entry) => {
                    outbox += 1;
                    *self.lock_enqueued().entry(entry.destination.clone()).or_default() += 1;
                }
                Write::Revive { .. } => outbox += 1,
                Write::Delivered { .. } | Write::DeadLetter { .. } => outbox -= 1,
                Write::WithdrawEnvelope { destination, .. } => {
                    outbox -= 1;
                    *self.lock_withdrawn().entry(destination.clone()).or_default() += 1;
                }
                Write::InsertRun(run) if run.status == RunStatus::PendingApproval => approvals += 1,
                Write::SetStatus { from, to, .. } => {
                    approvals += i64::from(*to == RunStatus::PendingApproval);
                    approvals -= i64::from(*from == RunStatus::PendingApproval);
                }
                _ => {}
            }
        }
        if outbox != 0 {
            self.outbox_pending.fetch_add(outbox, Ordering::Relaxed);
        }
        if approvals != 0 {
            self.pending_approvals.fetch_add(approvals, Ordering::Relaxed);
        }
    }

    /// Follows the number of committed batches: it changes after every
    /// commit (several commits may show as one change).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Pending outbox entries.
    pub fn outbox_pending(&self) -> u64 {
        self.outbox_pending.load(Ordering::Relaxed).max(0) as u64
    }

    /// Runs waiting for an operator's approval.
    pub fn pending_approvals(&self) -> u64 {
        self.pending_approvals.load(Ordering::Relaxed).max(0) as u64
    }

    /// Envelopes for `destination` enqueued since this process started.
    pub fn enqueued(&self, destination: &str) -> u64 {
        self.lock_enqueued().get(destination).copied().unwrap_or(0)
    }

    /// Pending envelopes for `destination` withdrawn since this process
    /// started.
    pub fn withdrawn(&self, destination: &str) -> u64 {
        self.lock_withdrawn().get(destination).copied().unwrap_or(0)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Option<(String, DateTime<Utc>, u64)>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_enqueued(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.enqueued.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_withdrawn(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.withdrawn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Source;
    use crate::store::{OutboxRecord, OutboxStatus, RunRecord};
    use chrono::TimeZone;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn enqueue(destination: &str) -> Write {
        Write::Enqueue(Box::new(OutboxRecord {
            id: "e".into(),
            seq: 0,
            run_id: "r".into(),
            destination: destination.into(),
            envelope: json!({}),
            status: OutboxStatus::Pending,
            attempts: 0,
            next_attempt_at: at(0),
            last_error: None,
            created_at: at(0),
            delivered_at: None,
        }))
    }

    fn batch(writes: Vec<Write>) -> Batch {
        Batch { idempotency: None, writes }
    }

    #[test]
    fn writes_failing_are_reported_once_until_one_succeeds() {
        let watch = StoreWatch::default();
        assert_eq!(watch.write_state(), WriteState::Ok);
        assert_eq!(watch.wrote(), None, "success while ok says nothing");
        assert_eq!(watch.refused("disk full", at(1)), Some(WriteNotice::Failing { reason: "disk full".into() }));
        assert_eq!(watch.refused("disk full", at(2)), None);
        assert_eq!(watch.refused("database is locked", at(3)), None);
        assert_eq!(
            watch.write_state(),
            WriteState::Failing { reason: "database is locked".into(), since: at(1), refused: 3 },
            "the latest reason, since the first refusal"
        );
        assert_eq!(watch.wrote(), Some(WriteNotice::Recovered { since: at(1), refused: 3 }));
        assert_eq!(watch.write_state(), WriteState::Ok);
        assert_eq!(watch.wrote(), None);
    }

    #[test]
    fn counts_start_from_the_seed_and_follow_committed_writes() {
        let watch = StoreWatch::default();
        let mut tallies = Tallies { pending_approvals: 2, ..Tallies::default() };
        tallies.outbox_pending.insert("agent".into(), 3);
        tallies.outbox_pending.insert("executor".into(), 1);
        watch.seed(&tallies);
        assert_eq!((watch.outbox_pending(), watch.pending_approvals()), (4, 2));

        let waiting = RunRecord {
            run_id: "r1".into(),
            sop: "s".into(),
            sop_version: "1".into(),
            status: RunStatus::PendingApproval,
            trigger_index: 0,
            trigger: "manual".into(),
            source: Source::Manual,
            topic: "s".into(),
            event_id: "ev".into(),
            payload: json!(null),
            client: None,
            idempotency_key: None,
            started_at: at(1),
            updated_at: at(1),
            finished_at: None,
            coalesced: 0,
            step: 0,
            request: None,
            session: None,
        };
        watch.committed(&batch(vec![
            enqueue("agent"),
            enqueue("executor"),
            Write::InsertRun(Box::new(waiting)),
            Write::SetStatus {
                run_id: "r0".into(),
                from: RunStatus::PendingApproval,
                to: RunStatus::Running,
                at: at(1),
            },
        ]));
        assert_eq!((watch.outbox_pending(), watch.pending_approvals()), (6, 2));
        watch.committed(&batch(vec![
            Write::Delivered { id: "e".into(), attempts: 1, at: at(2) },
            Write::DeadLetter { id: "f".into(), attempts: 3, error: "x".into(), at: at(2) },
            Write::SetStatus {
                run_id: "r1".into(),
                from: RunStatus::PendingApproval,
                to: RunStatus::Cancelled,
                at: at(2),
            },
        ]));
        assert_eq!((watch.outbox_pending(), watch.pending_approvals()), (4, 1));
        watch.committed(&batch(vec![Write::Revive { id: "f".into(), at: at(3) }]));
        assert_eq!(watch.outbox_pending(), 5);
        assert_eq!((watch.enqueued("agent"), watch.enqueued("executor"), watch.enqueued("other")), (1, 1, 0));
    }

    #[test]
    fn a_withdrawn_envelope_leaves_the_pending_count_and_is_counted_for_its_destination() {
        let watch = StoreWatch::default();
        watch.committed(&batch(vec![enqueue("agent"), enqueue("agent"), enqueue("executor")]));
        watch.committed(&batch(vec![
            Write::WithdrawEnvelope { id: "a1".into(), destination: "agent".into() },
            Write::WithdrawStep { run_id: "r".into(), index: 0, at: at(1) },
        ]));
        assert_eq!(watch.outbox_pending(), 2);
        assert_eq!((watch.withdrawn("agent"), watch.withdrawn("executor")), (1, 0));
        assert_eq!(watch.enqueued("agent"), 2, "what was enqueued stays counted as such");
    }

    #[test]
    fn every_committed_batch_is_seen_by_who_follows_the_commits() {
        let watch = StoreWatch::default();
        let mut commits = watch.commits();
        assert!(!commits.has_changed().unwrap());
        watch.committed(&batch(vec![enqueue("agent")]));
        assert!(commits.has_changed().unwrap());
        assert_eq!(*commits.borrow_and_update(), 1);
        watch.committed(&batch(vec![]));
        watch.committed(&batch(vec![enqueue("agent")]));
        assert_eq!(*commits.borrow_and_update(), 3, "a reader that fell behind sees the latest");
    }
}
