//! What happens to a run after its start: approvals and denials, steps the
//! agent loop leases and reports, envelopes delivered or given up, and
//! operators cancelling or ending runs.
//!
//! Every change goes through [`Dispatcher::advance`], which checks that the
//! run is where the request assumes (else `Conflict`, HTTP 409), asks the
//! life cycle (`runs::lifecycle`) for the next move, keeps admission in step
//! (a run that leaves its slot promotes the oldest deferred run, in the same
//! commit), and commits it all as one batch with compare-and-set guards, so
//! two racing requests cannot both win.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::dispatcher::{start_move, take_move, DispatchError, Dispatcher};
use crate::runs::lifecycle::{self, Effects};
use crate::runs::RunStatus;
use crate::sop::Sop;
use crate::store::{AuditKind, Batch, NewAudit, RunRecord, StepRecord, StepStatus, Write};

/// A request to move a run on.
#[derive(Clone, Debug, PartialEq)]
pub enum RunInput {
    /// An operator approves the gate the run waits at.
    Approve { by: String, reason: Option<String> },
    /// An operator denies it: the run is cancelled.
    Deny { by: String, reason: Option<String> },
    /// The agent loop reports the step it leased.
    StepDone { index: u32, lease_id: String, completed: bool, output: Value },
    /// The run's envelope reached its destination.
    Delivered { envelope_id: String, attempts: u32 },
    /// The run's envelope was given up (dead letter).
    DeliveryFailed { envelope_id: String, attempts: u32, error: String },
    /// Ends the run (`completed`, `failed` or `cancelled`).
    Finish { to: RunStatus, reason: Option<String> },
    /// An operator cancels a run that has not ended, wherever it is: what
    /// it still has waiting (envelopes in the outbox, steps for the agent
    /// loop) is withdrawn, and the slot it held goes to the next deferred
    /// run as when a run finishes. `by` and `interface` (`admin_api`,
    /// `cli`) are recorded in `run_cancelled`.
    Cancel { by: String, interface: &'static str, reason: Option<String> },
}

/// Where the run is after the change.
#[derive(Clone, Debug, PartialEq)]
pub struct Advanced {
    pub run_id: String,
    /// Where the run was before the change.
    pub from: RunStatus,
    pub status: RunStatus,
    pub step: u32,
    /// Deferred runs that took the slot this change freed.
    pub promoted: Vec<String>,
    /// What a cancel withdrew (empty for every other change).
    pub withdrawn: Withdrawn,
}

/// What of a cancelled run was withdrawn in its cancel's commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Withdrawn {
    /// Outbox entries that were still pending: never sent.
    pub envelopes: Vec<String>,
    /// Steps (1-based numbers) pending or leased for the agent loop: no
    /// longer leased, a report of them refused.
    pub steps: Vec<u32>,
}

/// A step leased to an agent loop.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub run: RunRecord,
    pub step: StepRecord,
}

/// How the slot count changed, to undo it if the commit fails.
enum SlotChange {
    None,
    Freed { sop: String },
    Taken { sop: String },
    LeftBacklog { sop: String, run_id: String },
}

/// A change worked out but not committed yet: its writes, and what
/// admission already counted for it (given back if its commit fails).
pub struct Prepared {
    writes: Vec<Write>,
    effects: Effects,
    slot: SlotChange,
    /// `None` for writes that move no run ([`Prepared::writes`]).
    advanced: Option<Advanced>,
}

impl Prepared {
    /// Writes that move no run (the outbox worker's rescheduling), to be
    /// committed with the changes of runs.
    pub fn writes(writes: Vec<Write>) -> Prepared {
        Prepared { writes, effects: Effects::default(), slot: SlotChange::None, advanced: None }
    }
}

impl Dispatcher {
    /// Moves `run_id` on as `input` says, at `now`.
    pub async fn advance(&self, run_id: &str, input: RunInput, now: DateTime<Utc>) -> Result<Advanced, DispatchError> {
        let run = self.store.get_run(run_id).await?.ok_or_else(|| DispatchError::NoSuchRun(run_id.into()))?;
        let prepared = self.prepare(run, input, now).await?;
        let advanced = self.commit_prepared(prepared).await?;
        Ok(advanced.expect("a prepared change of a run says where the run is"))
    }

    /// [`advance`](Dispatcher::advance) of a run the caller has read: checks
    /// that `run` is where `input` assumes, works out the writes and counts
    /// the change in admission, without committing; [`commit_all`] does.
    /// (`run` may lack its payload for a delivery outcome or a finish,
    /// which never read it.)
    ///
    /// [`commit_all`]: Dispatcher::commit_all
    pub async fn prepare(
        &self,
        run: RunRecord,
        input: RunInput,
        now: DateTime<Utc>,
    ) -> Result<Prepared, DispatchError> {
        let catalog = self.catalog();
        let sop = catalog.get(&run.sop);
        let registries = self.registry_snapshot();
        let attached = self.agent_attached(now);
        let mut writes = Vec::new();
        let audit = |kind, detail: Value| {
            Write::Audit(NewAudit {
                at: now,
                kind,
                run_id: Some(run.run_id.clone()),
                sop: Some(run.sop.clone()),
                detail,
            })
        };
        let need_sop = || sop.ok_or_else(|| DispatchError::Conflict(format!("SOP {} is no longer loaded", run.sop)));
        let expect = |status: RunStatus, doing: &str| {
            if run.status == status {
                Ok(())
            } else {
                Err(DispatchError::Conflict(format!(
                    "run {} is {}, not {status}: cannot {doing}",
                    run.run_id, run.status
                )))
            }
        };

        let mut withdrawn = Withdrawn::default();
        let (to, step, effects, reason) = match input {
            RunInput::Approve { by, reason } => {
                expect(RunStatus::PendingApproval, "approve")?;
                let sop = need_sop()?;
                writes.push(audit(
                    AuditKind::Approval,
                    json!({"outcome": "approved", "by": by, "reason": reason, "step": run.step}),
                ));
                let (to, step, fx) =
                    take_move(lifecycle::next_move(sop, run.step, true), sop, &run, now, &registries, attached);
                (to, step, fx, reason)
            }
            RunInput::Deny { by, reason } => {
                expect(RunStatus::PendingApproval, "deny")?;
                writes.push(audit(
                    AuditKind::Approval,
                    json!({"outcome": "denied", "by": by, "reason": reason, "step": run.step}),
                ));
                (RunStatus::Cancelled, run.step, Effects::default(), reason.or(Some("denied".into())))
            }
            RunInput::StepDone { index, lease_id, completed, output } => {
                expect(RunStatus::WaitingAgent, "report a step")?;
                if index != run.step {
                    return Err(DispatchError::Conflict(format!(
                        "run {} is at step {}, not {}",
                        run.run_id,
                        run.step + 1,
                        index + 1
                    )));
                }
                let status = if completed { StepStatus::Completed } else { StepStatus::Failed };
                writes.push(Write::FinishStep {
                    run_id: run.run_id.clone(),
                    index,
                    lease_id: lease_id.clone(),
                    status,
                    output: output.clone(),
                    at: now,
                });
                writes.push(audit(
                    AuditKind::StepReported,
                    json!({"step": index, "number": index + 1, "status": status, "lease_id": lease_id, "output": output}),
                ));
                if completed {
                    let sop = need_sop()?;
                    let mv = lifecycle::next_move(sop, index + 1, false);
                    let (to, step, fx) = take_move(mv, sop, &run, now, &registries, attached);
                    (to, step, fx, None)
                } else {
                    (RunStatus::Failed, index, Effects::default(), Some(format!("step {} failed", index + 1)))
                }
            }
            RunInput::Delivered { envelope_id, attempts } => {
                expect(RunStatus::Running, "complete a delivery")?;
                writes.push(Write::Delivered { id: envelope_id.clone(), attempts, at: now });
                writes.push(audit(
                    AuditKind::EnvelopeDelivered,
                    json!({"envelope_id": envelope_id, "attempts": attempts}),
                ));
                (RunStatus::Completed, run.step, Effects::default(), None)
            }
            RunInput::DeliveryFailed { envelope_id, attempts, error } => {
                expect(RunStatus::Running, "fail a delivery")?;
                writes.push(Write::DeadLetter { id: envelope_id.clone(), attempts, error: error.clone(), at: now });
                writes.push(audit(
                    AuditKind::EnvelopeFailed,
                    json!({"envelope_id": envelope_id, "reason": "dead_letter", "attempts": attempts, "error": error}),
                ));
                (RunStatus::Failed, run.step, Effects::default(), Some(format!("delivery gave up: {error}")))
            }
            RunInput::Finish { to, reason } => {
                if !to.is_terminal() || !run.status.can_become(to) {
                    return Err(DispatchError::InvalidTransition { run_id: run.run_id.clone(), from: run.status, to });
                }
                (to, run.step, Effects::default(), reason)
            }
            RunInput::Cancel { by, interface, reason } => {
                withdrawn = self.cancel_writes(&run, &by, interface, reason.as_deref(), now, &mut writes).await?;
                (RunStatus::Cancelled, run.step, Effects::default(), reason.or(Some("cancelled".into())))
            }
        };
        if to != run.status && !run.status.can_become(to) {
            return Err(DispatchError::InvalidTransition { run_id: run.run_id.clone(), from: run.status, to });
        }
        if to != run.status {
            writes.push(Write::SetStatus { run_id: run.run_id.clone(), from: run.status, to, at: now });
            writes.push(audit(AuditKind::RunTransition, json!({"from": run.status, "to": to, "reason": reason})));
        }
        if step != run.step {
            writes.push(Write::SetStep { run_id: run.run_id.clone(), from: run.step, to: step, at: now });
        }
        let mut effects = effects;
        writes.append(&mut effects.writes);

        let (slot, first_promoted) = self.move_slot(&run, to, sop, now);
        let mut promoted = Vec::new();
        let mut next = first_promoted;
        while let (Some(id), Some(sop)) = (next.take(), sop) {
            // Counted as promoted before it is read, so a failed read gives
            // it back to the backlog with the rest.
            promoted.push(id.clone());
            let (fx, holds_slot) =
                match self.promotion(&id, sop, &run.run_id, now, &registries, attached, &mut writes).await {
                    Ok(done) => done,
                    Err(e) => {
                        self.undo_slot(&slot, &promoted);
                        return Err(e);
                    }
                };
            effects.absorb(fx);
            if !holds_slot {
                // The promoted run went straight to a state without a slot:
                // the slot is free again for the next one.
                next = self.admission.lock().expect("admission lock").free_slot(sop);
            }
        }
        let advanced = Advanced { run_id: run.run_id, from: run.status, status: to, step, promoted, withdrawn };
        Ok(Prepared { writes, effects, slot, advanced: Some(advanced) })
    }

    /// What cancelling `run` writes besides its status: every envelope it
    /// still has pending in the outbox and every step it has pending or
    /// leased is withdrawn, each with a compare-and-set (a delivery or a
    /// report that commits first refuses the cancel, which then looks
    /// again), and `run_cancelled` records who, through which interface,
    /// why, and what was withdrawn.
    async fn cancel_writes(
        &self,
        run: &RunRecord,
        by: &str,
        interface: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
        writes: &mut Vec<Write>,
    ) -> Result<Withdrawn, DispatchError> {
        if run.status.is_terminal() {
            let (run_id, from) = (run.run_id.clone(), run.status);
            return Err(DispatchError::InvalidTransition { run_id, from, to: RunStatus::Cancelled });
        }
        let pending = self.store.outbox_pending_of_run(&run.run_id).await?;
        let open: Vec<u32> = (self.store.steps(&run.run_id).await?.into_iter())
            .filter(|s| matches!(s.status, StepStatus::Pending | StepStatus::Leased))
            .map(|s| s.index)
            .collect();
        let envelopes = pending.iter().map(|(id, _)| id.clone()).collect();
        writes.extend(pending.into_iter().map(|(id, destination)| Write::WithdrawEnvelope { id, destination }));
        writes.extend(open.iter().map(|&index| Write::WithdrawStep { run_id: run.run_id.clone(), index, at: now }));
        let withdrawn = Withdrawn { envelopes, steps: open.iter().map(|i| i + 1).collect() };
        writes.push(Write::Audit(NewAudit {
            at: now,
            kind: AuditKind::RunCancelled,
            run_id: Some(run.run_id.clone()),
            sop: Some(run.sop.clone()),
            detail: json!({"by": by, "interface": interface, "reason": reason, "from": run.status,
                "step": run.step, "withdrawn": withdrawn}),
        }));
        Ok(withdrawn)
    }

    /// Commits one prepared change; a failed commit gives back what
    /// admission counted for it.
    async fn commit_prepared(&self, prepared: Prepared) -> Result<Option<Advanced>, DispatchError> {
        let Prepared { writes, effects, slot, advanced } = prepared;
        if let Err(e) = self.store.commit(Batch { idempotency: None, writes }).await {
            self.undo(&slot, advanced.as_ref());
            return Err(e.into());
        }
        self.announce(&effects);
        Ok(advanced)
    }

    /// Commits prepared changes (of distinct runs) in one batch: one
    /// commit for a whole round of outbox outcomes. When the batch is
    /// refused because one change no longer holds (a compare-and-set: an
    /// operator moved that run meanwhile), each change is committed alone,
    /// so only that one fails. Answers in the order given.
    pub async fn commit_all(&self, prepared: Vec<Prepared>) -> Vec<Result<Option<Advanced>, DispatchError>> {
        if prepared.len() <= 1 {
            let mut answers = Vec::with_capacity(1);
            for p in prepared {
                answers.push(self.commit_prepared(p).await);
            }
            return answers;
        }
        let writes = prepared.iter().flat_map(|p| p.writes.iter().cloned()).collect();
        match self.store.commit(Batch { idempotency: None, writes }).await {
            Ok(_) => prepared
                .into_iter()
                .map(|p| {
                    self.announce(&p.effects);
                    Ok(p.advanced)
                })
                .collect(),
            Err(crate::store::StoreError::Conflict(_)) => {
                let mut answers = Vec::with_capacity(prepared.len());
                for p in prepared {
                    answers.push(self.commit_prepared(p).await);
                }
                answers
            }
            Err(e) => {
                // Given back newest first: the admission changes were made
                // in this order.
                for p in prepared.iter().rev() {
                    self.undo(&p.slot, p.advanced.as_ref());
                }
                prepared.iter().map(|_| Err(e.clone().into())).collect()
            }
        }
    }

    fn undo(&self, slot: &SlotChange, advanced: Option<&Advanced>) {
        let promoted = advanced.map_or(&[][..], |a| a.promoted.as_slice());
        self.undo_slot(slot, promoted);
    }

    /// Ends a run (`completed`, `failed` or `cancelled`); returns the deferred
    /// run promoted into its slot, if any.
    pub async fn finish_run(
        &self,
        run_id: &str,
        to: RunStatus,
        now: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<Option<String>, DispatchError> {
        let advanced = self.advance(run_id, RunInput::Finish { to, reason: reason.map(str::to_string) }, now).await?;
        Ok(advanced.promoted.into_iter().next())
    }

    /// Leases the oldest leasable step to an agent loop for `lease_for`.
    /// `None` when no step waits.
    pub async fn lease_next(
        &self,
        lease_for: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, DispatchError> {
        self.agent_polled(now);
        // Another agent may take the same step between the read and the
        // commit; the compare-and-set refuses the loser, which tries again.
        for _ in 0..8 {
            let Some(step) = self.store.next_leasable_step(now).await? else { return Ok(None) };
            let Some(run) = self.store.get_run(&step.run_id).await? else { continue };
            let lease_id = crate::ids::fresh();
            let until = now + lease_for;
            let expired = step.status == StepStatus::Leased;
            let writes = vec![
                Write::LeaseStep {
                    run_id: run.run_id.clone(),
                    index: step.index,
                    lease_id: lease_id.clone(),
                    until,
                    at: now,
                },
                Write::Audit(NewAudit {
                    at: now,
                    kind: AuditKind::StepLeased,
                    run_id: Some(run.run_id.clone()),
                    sop: Some(run.sop.clone()),
                    detail: json!({"step": step.index, "number": step.index + 1, "lease_id": lease_id,
                        "until": until, "attempt": step.attempts + 1, "previous_lease_expired": expired}),
                }),
            ];
            match self.store.commit(Batch { idempotency: None, writes }).await {
                Ok(_) => {
                    let step = StepRecord {
                        status: StepStatus::Leased,
                        lease_id: Some(lease_id),
                        leased_until: Some(until),
                        attempts: step.attempts + 1,
                        updated_at: now,
                        ..step
                    };
                    return Ok(Some(Lease { run, step }));
                }
                Err(crate::store::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Adjusts the slot count for a run moving from its status to `to`;
    /// returns the change and a deferred run to promote.
    fn move_slot(
        &self,
        run: &RunRecord,
        to: RunStatus,
        sop: Option<&Sop>,
        now: DateTime<Utc>,
    ) -> (SlotChange, Option<String>) {
        let mut admission = self.admission.lock().expect("admission lock");
        let (was, is) = (run.status.is_active(), to.is_active());
        if run.status == RunStatus::Deferred && to.is_terminal() {
            admission.remove_deferred(&run.sop, &run.run_id);
            return (SlotChange::LeftBacklog { sop: run.sop.clone(), run_id: run.run_id.clone() }, None);
        }
        if to.is_terminal() {
            admission.record_finish(&run.sop, now);
        }
        match (was, is, sop) {
            (true, false, Some(sop)) => (SlotChange::Freed { sop: sop.name.clone() }, admission.free_slot(sop)),
            (true, false, None) => {
                admission.release_slot(&run.sop);
                (SlotChange::Freed { sop: run.sop.clone() }, None)
            }
            (false, true, _) => {
                admission.reoccupy(&run.sop);
                (SlotChange::Taken { sop: run.sop.clone() }, None)
            }
            _ => (SlotChange::None, None),
        }
    }

    /// Gives back what `move_slot` and promotions did, after a failed commit.
    fn undo_slot(&self, slot: &SlotChange, promoted: &[String]) {
        let mut admission = self.admission.lock().expect("admission lock");
        for id in promoted.iter().rev() {
            if let SlotChange::Freed { sop } = slot {
                admission.unpromote(sop, id);
            }
        }
        match slot {
            SlotChange::Freed { sop } => admission.reoccupy(sop),
            SlotChange::Taken { sop } => admission.release_slot(sop),
            SlotChange::LeftBacklog { sop, run_id } => admission.requeue(sop, run_id),
            SlotChange::None => {}
        }
    }

    /// The writes that start deferred run `id` in the slot `freed_by` left.
    #[allow(clippy::too_many_arguments)]
    async fn promotion(
        &self,
        id: &str,
        sop: &Sop,
        freed_by: &str,
        now: DateTime<Utc>,
        registries: &crate::envelope::registry::RegistrySnapshot,
        attached: bool,
        writes: &mut Vec<Write>,
    ) -> Result<(Effects, bool), DispatchError> {
        let run = self.store.get_run(id).await?.ok_or_else(|| DispatchError::NoSuchRun(id.into()))?;
        let (status, step, mut fx) = start_move(sop, &run, now, registries, attached);
        writes.push(Write::SetStatus { run_id: id.to_string(), from: RunStatus::Deferred, to: status, at: now });
        if step != run.step {
            writes.push(Write::SetStep { run_id: id.to_string(), from: run.step, to: step, at: now });
        }
        writes.push(Write::Audit(NewAudit {
            at: now,
            kind: AuditKind::RunPromoted,
            run_id: Some(id.to_string()),
            sop: Some(sop.name.clone()),
            detail: json!({"status": status, "step": step, "slot_freed_by": freed_by}),
        }));
        writes.append(&mut fx.writes);
        Ok((fx, status.is_active()))
    }
}
