//! Admission: whether a matched trigger starts a run now, waits in the
//! backlog, merges into a waiting trigger, or is skipped or rejected.
//!
//! Pure bookkeeping, no I/O and no clock: the dispatcher holds one
//! `Admission` behind a mutex, asks it for a decision (which reserves the slot
//! or backlog place at once, so concurrent events cannot both take the last
//! slot), commits, and gives the reservation back if the commit fails. It is
//! seeded from the store at start, so it always mirrors what is durable.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::sop::{AdmissionPolicy, Sop};

/// Per-SOP load, read once at start to seed admission.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SopLoad {
    pub sop: String,
    /// Runs holding a slot (pending_approval, running, waiting_agent).
    pub active: u32,
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Deferred run ids, oldest first.
    pub deferred: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A run starts now; a slot is reserved.
    Start,
    /// The trigger waits in the backlog as a deferred run with the id given
    /// to `admit`.
    Defer,
    /// The trigger merges into this waiting deferred run.
    Coalesce { into: String },
    /// No run: cooldown or the `drop` policy.
    Skip { reason: String },
    /// No run: the backlog is full.
    Reject { reason: String },
}

#[derive(Clone, Debug, Default, PartialEq)]
struct SopState {
    active: u32,
    last_finished_at: Option<DateTime<Utc>>,
    /// Deferred run ids, oldest first.
    deferred: VecDeque<String>,
}

#[derive(Clone, Debug)]
pub struct Admission {
    sops: HashMap<String, SopState>,
    deferred_total: usize,
    max_deferred: usize,
}

impl Admission {
    pub fn new(max_deferred: usize, loads: Vec<SopLoad>) -> Admission {
        let mut sops = HashMap::new();
        let mut deferred_total = 0;
        for load in loads {
            deferred_total += load.deferred.len();
            sops.insert(
                load.sop,
                SopState {
                    active: load.active,
                    last_finished_at: load.last_finished_at,
                    deferred: load.deferred.into(),
                },
            );
        }
        Admission { sops, deferred_total, max_deferred }
    }

    /// Replaces what this process knows of the SOPs in `loads` with what the
    /// store holds now, and the backlog's size with `deferred_total`: a
    /// replica's view before it decides under a hold on those SOPs, since
    /// other replicas start and finish their runs too.
    pub fn reseed(&mut self, loads: &[SopLoad], deferred_total: usize) {
        for load in loads {
            self.sops.insert(
                load.sop.clone(),
                SopState {
                    active: load.active,
                    last_finished_at: load.last_finished_at,
                    deferred: load.deferred.iter().cloned().collect(),
                },
            );
        }
        self.deferred_total = deferred_total;
    }

    /// Decides for one matched trigger of `sop` and reserves what the
    /// decision takes. `run_id` is the id a started or deferred run gets.
    pub fn admit(&mut self, sop: &Sop, run_id: &str, now: DateTime<Utc>) -> Decision {
        let state = self.sops.entry(sop.name.clone()).or_default();
        if let Some(left) = cooldown_left(sop, state, now) {
            return Decision::Skip {
                reason: format!("cooldown: {left} s left of cooldown_secs = {}", sop.cooldown_secs),
            };
        }
        let capacity = match sop.admission_policy {
            AdmissionPolicy::Hold => 1,
            _ => sop.max_concurrent,
        };
        if state.active < capacity && state.deferred.is_empty() {
            state.active += 1;
            return Decision::Start;
        }
        match sop.admission_policy {
            AdmissionPolicy::Drop => {
                return Decision::Skip {
                    reason: format!(
                        "at capacity: {} of max_concurrent = {} runs active, policy drop",
                        state.active, capacity
                    ),
                }
            }
            AdmissionPolicy::Coalesce => {
                if let Some(waiting) = state.deferred.back() {
                    return Decision::Coalesce { into: waiting.clone() };
                }
            }
            AdmissionPolicy::Parallel | AdmissionPolicy::Hold => {}
        }
        if self.deferred_total >= self.max_deferred {
            return Decision::Reject { reason: format!("backlog full: max_deferred = {}", self.max_deferred) };
        }
        state.deferred.push_back(run_id.to_string());
        self.deferred_total += 1;
        Decision::Defer
    }

    /// Gives back what `admit` reserved, when its commit did not happen.
    pub fn release(&mut self, sop: &str, run_id: &str, decision: &Decision) {
        match decision {
            Decision::Start => self.release_slot(sop),
            Decision::Defer => self.remove_deferred(sop, run_id),
            _ => {}
        }
    }

    /// A run of `sop` left its slot by finishing at `now`: `record_finish`
    /// and `free_slot` together.
    pub fn finish(&mut self, sop: &Sop, now: DateTime<Utc>) -> Option<String> {
        self.record_finish(&sop.name, now);
        self.free_slot(sop)
    }

    /// A run of `sop` reached a terminal state at `now`: cooldown counts
    /// from here.
    pub fn record_finish(&mut self, sop: &str, now: DateTime<Utc>) {
        self.sops.entry(sop.to_string()).or_default().last_finished_at = Some(now);
    }

    /// A run of `sop` gave its slot back. Returns the deferred run to promote
    /// into it, already counted as active; the caller commits the promotion
    /// or calls `unpromote`.
    pub fn free_slot(&mut self, sop: &Sop) -> Option<String> {
        self.release_slot(&sop.name);
        self.promote(sop)
    }

    /// A slot of `sop` is given back, with no promotion (the SOP is gone, or
    /// a commit that took the slot failed).
    pub fn release_slot(&mut self, sop: &str) {
        if let Some(state) = self.sops.get_mut(sop) {
            state.active = state.active.saturating_sub(1);
        }
    }

    /// Promotes the oldest deferred run of `sop` if a slot is free.
    pub fn promote(&mut self, sop: &Sop) -> Option<String> {
        let capacity = match sop.admission_policy {
            AdmissionPolicy::Hold => 1,
            _ => sop.max_concurrent,
        };
        let state = self.sops.get_mut(&sop.name)?;
        if state.active >= capacity {
            return None;
        }
        let next = state.deferred.pop_front()?;
        state.active += 1;
        self.deferred_total -= 1;
        Some(next)
    }

    /// Undoes `promote` when its commit failed: the run waits again, first.
    pub fn unpromote(&mut self, sop: &str, run_id: &str) {
        if let Some(state) = self.sops.get_mut(sop) {
            state.active = state.active.saturating_sub(1);
            state.deferred.push_front(run_id.to_string());
            self.deferred_total += 1;
        }
    }

    /// A run of `sop` takes a slot without admission (a run going back to an
    /// approval gate), or a freed slot is taken back after a failed commit.
    pub fn reoccupy(&mut self, sop: &str) {
        self.sops.entry(sop.to_string()).or_default().active += 1;
    }

    /// Puts a deferred run back at the head of its backlog (its removal was
    /// not committed).
    pub fn requeue(&mut self, sop: &str, run_id: &str) {
        self.sops.entry(sop.to_string()).or_default().deferred.push_front(run_id.to_string());
        self.deferred_total += 1;
    }

    /// A deferred run left the backlog without starting (cancelled).
    pub fn remove_deferred(&mut self, sop: &str, run_id: &str) {
        if let Some(state) = self.sops.get_mut(sop) {
            if let Some(pos) = state.deferred.iter().position(|id| id == run_id) {
                state.deferred.remove(pos);
                self.deferred_total -= 1;
            }
        }
    }

    pub fn active(&self, sop: &str) -> u32 {
        self.sops.get(sop).map_or(0, |s| s.active)
    }

    pub fn deferred_total(&self) -> usize {
        self.deferred_total
    }
}

/// Whole seconds of cooldown left, if any.
fn cooldown_left(sop: &Sop, state: &SopState, now: DateTime<Utc>) -> Option<i64> {
    if sop.cooldown_secs == 0 {
        return None;
    }
    let until = state.last_finished_at? + chrono::Duration::seconds(sop.cooldown_secs as i64);
    (until > now).then(|| ((until - now).num_milliseconds() + 999) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sop::test_support::sop_with;
    use crate::sop::TriggerSpec;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn sop(policy: AdmissionPolicy, max_concurrent: u32, cooldown_secs: u64) -> Sop {
        let mut s = sop_with("s", vec![TriggerSpec::Manual]);
        s.admission_policy = policy;
        s.max_concurrent = max_concurrent;
        s.cooldown_secs = cooldown_secs;
        s
    }

    #[test]
    fn parallel_starts_up_to_max_then_defers_in_order() {
        let s = sop(AdmissionPolicy::Parallel, 2, 0);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "r1", t(0)), Decision::Start);
        assert_eq!(a.admit(&s, "r2", t(0)), Decision::Start);
        assert_eq!(a.admit(&s, "r3", t(0)), Decision::Defer);
        assert_eq!(a.admit(&s, "r4", t(0)), Decision::Defer);
        assert_eq!(a.finish(&s, t(1)), Some("r3".into()));
        assert_eq!(a.active("s"), 2);
        assert_eq!(a.finish(&s, t(2)), Some("r4".into()));
        assert_eq!(a.finish(&s, t(3)), None);
        assert_eq!(a.active("s"), 1);
    }

    #[test]
    fn a_new_trigger_never_overtakes_the_backlog() {
        let s = sop(AdmissionPolicy::Parallel, 1, 0);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "r1", t(0)), Decision::Start);
        assert_eq!(a.admit(&s, "r2", t(0)), Decision::Defer);
        // r1 finishes but the promotion of r2 failed to commit: r2 still first.
        assert_eq!(a.finish(&s, t(1)), Some("r2".into()));
        a.unpromote("s", "r2");
        assert_eq!(a.admit(&s, "r3", t(1)), Decision::Defer);
        assert_eq!(a.promote(&s), Some("r2".into()));
    }

    #[test]
    fn hold_runs_one_at_a_time_whatever_max_concurrent_says() {
        let s = sop(AdmissionPolicy::Hold, 5, 0);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "r1", t(0)), Decision::Start);
        assert_eq!(a.admit(&s, "r2", t(0)), Decision::Defer);
    }

    #[test]
    fn coalesce_keeps_one_waiting_trigger() {
        let s = sop(AdmissionPolicy::Coalesce, 1, 0);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "r1", t(0)), Decision::Start);
        assert_eq!(a.admit(&s, "r2", t(0)), Decision::Defer);
        assert_eq!(a.admit(&s, "r3", t(0)), Decision::Coalesce { into: "r2".into() });
        assert_eq!(a.deferred_total(), 1);
    }

    #[test]
    fn drop_skips_at_capacity() {
        let s = sop(AdmissionPolicy::Drop, 1, 0);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "r1", t(0)), Decision::Start);
        assert!(matches!(a.admit(&s, "r2", t(0)), Decision::Skip { reason } if reason.contains("policy drop")));
        assert_eq!(a.deferred_total(), 0);
    }

    #[test]
    fn cooldown_counts_from_the_last_finished_run() {
        let s = sop(AdmissionPolicy::Parallel, 1, 60);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "r1", t(0)), Decision::Start);
        assert_eq!(a.finish(&s, t(100)), None);
        assert!(matches!(a.admit(&s, "r2", t(130)), Decision::Skip { reason } if reason.starts_with("cooldown: 30 s")));
        assert!(matches!(a.admit(&s, "r3", t(159)), Decision::Skip { .. }));
        assert_eq!(a.admit(&s, "r4", t(160)), Decision::Start);
    }

    #[test]
    fn the_backlog_bound_is_global_and_rejects() {
        let s1 = sop(AdmissionPolicy::Parallel, 1, 0);
        let mut s2 = s1.clone();
        s2.name = "other".into();
        let mut a = Admission::new(2, vec![]);
        assert_eq!(a.admit(&s1, "a1", t(0)), Decision::Start);
        assert_eq!(a.admit(&s2, "b1", t(0)), Decision::Start);
        assert_eq!(a.admit(&s1, "a2", t(0)), Decision::Defer);
        assert_eq!(a.admit(&s2, "b2", t(0)), Decision::Defer);
        assert!(matches!(a.admit(&s1, "a3", t(0)), Decision::Reject { reason } if reason.contains("max_deferred = 2")));
    }

    #[test]
    fn release_gives_back_exactly_what_admit_took() {
        let s = sop(AdmissionPolicy::Parallel, 1, 0);
        let mut a = Admission::new(10, vec![]);
        let d1 = a.admit(&s, "r1", t(0));
        let d2 = a.admit(&s, "r2", t(0));
        a.release("s", "r2", &d2);
        a.release("s", "r1", &d1);
        assert_eq!(a.active("s"), 0);
        assert_eq!(a.deferred_total(), 0);
        assert_eq!(a.admit(&s, "r3", t(0)), Decision::Start);
    }

    #[test]
    fn seeded_from_the_store() {
        let s = sop(AdmissionPolicy::Parallel, 1, 0);
        let load = SopLoad { sop: "s".into(), active: 1, last_finished_at: None, deferred: vec!["old".into()] };
        let mut a = Admission::new(10, vec![load]);
        assert_eq!(a.admit(&s, "new", t(0)), Decision::Defer);
        assert_eq!(a.finish(&s, t(1)), Some("old".into()));
    }

    #[test]
    fn reseeding_replaces_what_another_replica_changed() {
        let s = sop(AdmissionPolicy::Parallel, 1, 60);
        let mut a = Admission::new(10, vec![]);
        assert_eq!(a.admit(&s, "mine", t(0)), Decision::Start);
        // Meanwhile another replica finished that run, started one and
        // deferred one behind it.
        let load =
            SopLoad { sop: "s".into(), active: 1, last_finished_at: Some(t(5)), deferred: vec!["theirs".into()] };
        a.reseed(&[load], 4);
        assert_eq!(a.active("s"), 1);
        assert_eq!(a.deferred_total(), 4);
        assert!(matches!(a.admit(&s, "late", t(10)), Decision::Skip { reason } if reason.contains("55 s left")));
        let quiet = SopLoad { sop: "s".into(), active: 0, last_finished_at: Some(t(5)), deferred: vec![] };
        a.reseed(&[quiet], 0);
        assert_eq!(a.admit(&s, "next", t(70)), Decision::Start);
    }
}
