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

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::admission::Admission;
use super::dispatcher::{DispatchError, Dispatcher};
use super::holds::HoldTicket;
use super::settle::settled;
use crate::ids::Fresh;
use crate::runs::lifecycle::Effects;
use crate::runs::plan::{self, PlanContext, Transition, Waiting};
pub use crate::runs::plan::{RunInput, Withdrawn};
use crate::runs::RunStatus;
use crate::sop::Sop;
use crate::store::{Batch, RunRecord, StepRecord, StoreError, Write};

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

/// What admission counted for a change not committed yet: given back when
/// dropped before [`Counted::keep`] (its commit failed, or never came
/// because the caller stopped waiting), newest first.
struct Counted {
    /// `None` once kept, and for a change that counted nothing.
    admission: Option<Arc<Mutex<Admission>>>,
    slot: SlotChange,
    /// Deferred runs counted as promoted into the freed slot, in order.
    promoted: Vec<String>,
}

impl Counted {
    fn nothing() -> Counted {
        Counted { admission: None, slot: SlotChange::None, promoted: Vec::new() }
    }

    /// The commit applied: what was counted stands.
    fn keep(&mut self) {
        self.admission = None;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some(admission) = self.admission.take() else { return };
        // A lock poisoned by a panic elsewhere: there is nothing to mirror.
        let Ok(mut admission) = admission.lock() else { return };
        if let SlotChange::Freed { sop } = &self.slot {
            for id in self.promoted.iter().rev() {
                admission.unpromote(sop, id);
            }
        }
        match &self.slot {
            SlotChange::Freed { sop } => admission.reoccupy(sop),
            SlotChange::Taken { sop } => admission.release_slot(sop),
            SlotChange::LeftBacklog { sop, run_id } => admission.requeue(sop, run_id),
            SlotChange::None => {}
        }
    }
}

/// A change worked out but not committed yet: its writes, and what
/// admission already counted for it (given back if its commit fails).
pub struct Prepared {
    writes: Vec<Write>,
    effects: Effects,
    counted: Counted,
    /// `None` for writes that move no run ([`Prepared::writes`]).
    advanced: Option<Advanced>,
    /// A replica's hold on the run's SOP, ended once the change is
    /// committed (or not).
    hold: Option<HoldTicket>,
}

impl Prepared {
    /// Writes that move no run (the outbox worker's rescheduling), to be
    /// committed with the changes of runs.
    pub fn writes(writes: Vec<Write>) -> Prepared {
        Prepared { writes, effects: Effects::default(), counted: Counted::nothing(), advanced: None, hold: None }
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
        let ctx = PlanContext { now, registries: &registries, agent_attached: self.agent_attached(now) };
        let waiting = match input {
            RunInput::Cancel { .. } if !run.status.is_terminal() => self.waiting(&run).await?,
            _ => Waiting::default(),
        };
        let Transition { mut writes, mut effects, to, step, withdrawn } =
            plan::plan_transition(&run, input, sop, waiting, &ctx, &mut Fresh)?;
        let moves_admission =
            run.status.is_active() != to.is_active() || to.is_terminal() || run.status == RunStatus::Deferred;
        let hold = match moves_admission {
            true => self.hold_admission(std::slice::from_ref(&run.sop)).await?,
            false => None,
        };
        let (slot, first_promoted) = self.move_slot(&run, to, sop, now);
        // From here on what admission counted is given back unless kept,
        // should this call be dropped while it reads the promoted runs.
        let mut counted = Counted { admission: Some(self.admission.clone()), slot, promoted: Vec::new() };
        if let Some(sop) = sop {
            let promoted = &mut counted.promoted;
            let promoting = self.promote(first_promoted, sop, &run.run_id, &ctx, &mut writes, &mut effects, promoted);
            if let Err(e) = promoting.await {
                drop(counted);
                release(hold).await;
                return Err(e);
            }
        }
        let promoted = counted.promoted.clone();
        let advanced = Advanced { run_id: run.run_id, from: run.status, status: to, step, promoted, withdrawn };
        Ok(Prepared { writes, effects, counted, advanced: Some(advanced), hold })
    }

    /// What `run` still has waiting, for a cancel to withdraw.
    async fn waiting(&self, run: &RunRecord) -> Result<Waiting, DispatchError> {
        let envelopes = self.store.outbox_pending_of_run(&run.run_id).await?;
        let steps = self.store.steps(&run.run_id).await?.into_iter().map(|s| (s.index, s.status)).collect();
        Ok(Waiting { envelopes, steps })
    }

    /// Starts deferred runs in the slot a change freed, beginning with
    /// `next`, for as long as each goes straight to a state that holds no
    /// slot, naming each in `promoted` as admission counts it (so what is
    /// given back after an error, or a drop, is all of them).
    #[allow(clippy::too_many_arguments)]
    async fn promote(
        &self,
        mut next: Option<String>,
        sop: &Sop,
        freed_by: &str,
        ctx: &PlanContext<'_>,
        writes: &mut Vec<Write>,
        effects: &mut Effects,
        promoted: &mut Vec<String>,
    ) -> Result<(), DispatchError> {
        while let Some(id) = next.take() {
            // Counted as promoted before it is read, so a failed read gives
            // it back to the backlog with the rest.
            promoted.push(id.clone());
            let run = match self.store.get_run(&id).await {
                Ok(Some(run)) => run,
                Ok(None) => return Err(DispatchError::NoSuchRun(id)),
                Err(e) => return Err(e.into()),
            };
            let (mut more, fx, holds_slot) = plan::plan_promotion(&run, sop, freed_by, ctx, &mut Fresh);
            writes.append(&mut more);
            effects.absorb(fx);
            if !holds_slot {
                // The promoted run went straight to a state without a slot:
                // the slot is free again for the next one.
                next = self.admission.lock().expect("admission lock").free_slot(sop);
            }
        }
        Ok(())
    }

    /// Commits one prepared change; a failed commit gives back what
    /// admission counted for it (settled even if the caller stops waiting).
    async fn commit_prepared(&self, prepared: Prepared) -> Result<Option<Advanced>, DispatchError> {
        let Prepared { writes, effects, mut counted, advanced, hold } = prepared;
        let store = self.store.clone();
        let committed = settled(async move {
            let committed = store.commit(Batch { idempotency: None, writes }).await;
            match committed {
                Ok(_) => counted.keep(),
                Err(_) => drop(counted),
            }
            release(hold).await;
            committed
        })
        .await;
        committed?;
        self.announce(&effects);
        Ok(advanced)
    }

    /// Commits prepared changes (of distinct runs) in one batch: one
    /// commit for a whole round of outbox outcomes. When the batch is
    /// refused because one change no longer holds (a compare-and-set: an
    /// operator moved that run meanwhile), each change is committed alone,
    /// so only that one fails. Answers in the order given.
    /// Under a shared admission a change that moves a slot holds its SOP
    /// from `prepare` on, so such changes are prepared and committed one at
    /// a time, never several in one call.
    pub async fn commit_all(&self, prepared: Vec<Prepared>) -> Vec<Result<Option<Advanced>, DispatchError>> {
        if prepared.len() <= 1 || prepared.iter().any(|p| p.hold.is_some()) {
            let mut answers = Vec::with_capacity(1);
            for p in prepared {
                answers.push(self.commit_prepared(p).await);
            }
            return answers;
        }
        let count = prepared.len();
        let writes = prepared.iter().flat_map(|p| p.writes.iter().cloned()).collect();
        let store = self.store.clone();
        let (committed, prepared) = settled(async move {
            let mut prepared = prepared;
            let committed = store.commit(Batch { idempotency: None, writes }).await;
            match &committed {
                Ok(_) => prepared.iter_mut().for_each(|p| p.counted.keep()),
                // Each is committed alone below, counted until then.
                Err(StoreError::Conflict(_)) => {}
                // Given back newest first: the admission changes were made
                // in this order.
                Err(_) => while prepared.pop().is_some() {},
            }
            (committed, prepared)
        })
        .await;
        match committed {
            Ok(_) => prepared
                .into_iter()
                .map(|p| {
                    self.announce(&p.effects);
                    Ok(p.advanced)
                })
                .collect(),
            Err(StoreError::Conflict(_)) => {
                let mut answers = Vec::with_capacity(count);
                for p in prepared {
                    answers.push(self.commit_prepared(p).await);
                }
                answers
            }
            Err(e) => (0..count).map(|_| Err(e.clone().into())).collect(),
        }
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
            let (writes, leased) = plan::plan_lease(&run, &step, now + lease_for, now, &mut Fresh);
            match self.store.commit(Batch { idempotency: None, writes }).await {
                Ok(_) => return Ok(Some(Lease { run, step: leased })),
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
}

/// Ends a replica's share of a hold on a SOP, if it took one.
async fn release(hold: Option<HoldTicket>) {
    if let Some(hold) = hold {
        hold.release().await;
    }
}
