//! Planning: what an event or a request does to runs, worked out without
//! doing it. An event's matched triggers, admitted one by one, become the
//! runs, backlog entries, audit records and idempotency claim of one batch
//! (`plan_event`); a request about a run (approve, a step reported, a
//! delivery, a cancel…) becomes the writes that move it on
//! (`plan_transition`); and a run that starts, from an event or the backlog,
//! takes its first move (`start_move`), and a pending step is leased to an
//! agent loop (`plan_lease`). Everything comes in as arguments —
//! the SOP, the run, `now`, the registries snapshot, whether an agent loop
//! is attached, and fresh ids from an [`IdSource`] — so the dispatcher, which
//! reads the store, commits and reports, is only a driver.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

pub use super::lifecycle::HeadlessStep;
use super::lifecycle::{self, Effects, Move, MoveContext};
use super::{RunRecord, RunStatus};
use crate::admission::{Admission, Decision};
use crate::envelope::registry::RegistrySnapshot;
use crate::envelope::session::Continuation;
use crate::envelope::{self, Run};
use crate::event::{Event, IdempotencyKey, Request};
use crate::matching::index::TriggerRef;
use crate::matching::Catalog;
use crate::records::{AuditKind, Batch, IdempotencyClaim, NewAudit, StepRecord, StepStatus, Write};
use crate::sop::Sop;

/// Where fresh ids come from: the runtime makes time-ordered UUIDs, tests
/// count.
pub trait IdSource {
    fn fresh(&mut self) -> String;
}

/// What planning reads besides the run and its SOP.
#[derive(Clone, Copy)]
pub struct PlanContext<'a> {
    pub now: DateTime<Utc>,
    pub registries: &'a RegistrySnapshot,
    /// An agent loop polled within `agent_loop_grace_secs`.
    pub agent_attached: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Deferred,
    Coalesced,
    Skipped,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Deferred => "deferred",
            Outcome::Coalesced => "coalesced",
            Outcome::Skipped => "skipped",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What happened for one matching SOP.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOutcome {
    pub sop: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the caller is told, and what a duplicate of the request is told later.
pub fn summary(outcomes: &[RunOutcome]) -> Value {
    let sops: Vec<&str> = outcomes.iter().map(|o| o.sop.as_str()).collect();
    json!({"matched_sops": sops, "runs": outcomes})
}

/// Carries out `mv` for `run`: the status and step it ends at, and the
/// writes. A delivery whose envelope the schema refuses fails the run.
pub fn take_move(
    mv: Move,
    sop: &Sop,
    run: &RunRecord,
    ctx: &PlanContext<'_>,
    ids: &mut dyn IdSource,
) -> (RunStatus, u32, Effects) {
    // Only a delivery builds an envelope; the trigger event (a copy of the
    // payload) and the envelope id are not made for any other move.
    let delivers = matches!(mv, Move::Deliver { .. });
    let trigger = if delivers { envelope::trigger_from_run(run) } else { Value::Null };
    let envelope_id = if delivers { ids.fresh() } else { String::new() };
    let move_ctx = MoveContext {
        run: Run {
            run_id: &run.run_id,
            sop_name: &sop.name,
            sop_version: &sop.version,
            source: run.source,
            trigger: &trigger,
            session: run.session.as_ref(),
        },
        sop,
        now: ctx.now,
        envelope_id: &envelope_id,
        registries: ctx.registries,
        agent_attached: ctx.agent_attached,
    };
    let fx = lifecycle::effects(mv, &move_ctx);
    let step = mv.step(sop.steps.len());
    let status = if fx.invalid_envelope.is_some() { RunStatus::Failed } else { mv.status() };
    (status, step, fx)
}

/// The first move of a run that starts or leaves the backlog.
pub fn start_move(
    sop: &Sop,
    run: &RunRecord,
    ctx: &PlanContext<'_>,
    ids: &mut dyn IdSource,
) -> (RunStatus, u32, Effects) {
    take_move(lifecycle::next_move(sop, 0, false), sop, run, ctx, ids)
}

/// An event as planning takes it: the payload and request already capped
/// for storage, the session its body continues.
pub struct EventInput<'a> {
    pub event: &'a Event,
    pub payload: Value,
    pub request: Option<Request>,
    pub continuation: Continuation,
    /// How long the event's idempotency key is remembered.
    pub idempotency_ttl: chrono::Duration,
}

/// An event's plan: one batch, what the caller is told, what admission
/// reserved (given back if the commit fails) and what waking the commit
/// calls for.
pub struct EventPlan {
    pub batch: Batch,
    pub outcomes: Vec<RunOutcome>,
    /// `(sop, run_id, decision)` per matched SOP.
    pub reserved: Vec<(String, String, Decision)>,
    pub effects: Effects,
}

/// Admits every matched trigger of `input.event` in turn and plans what
/// each decision writes. Admission keeps its reservations; the caller gives
/// them back (`reserved`) when the batch does not commit.
pub fn plan_event(
    catalog: &Catalog,
    matched: &[TriggerRef],
    input: &EventInput<'_>,
    admission: &mut Admission,
    ctx: &PlanContext<'_>,
    ids: &mut dyn IdSource,
) -> EventPlan {
    let event = input.event;
    let mut plan = EventPlan {
        batch: Batch::default(),
        outcomes: Vec::with_capacity(matched.len()),
        reserved: Vec::with_capacity(matched.len()),
        effects: Effects::default(),
    };
    for &r in matched {
        let sop = catalog.sop(r);
        let run_id = ids.fresh();
        let mut decision = admission.admit(sop, &run_id, event.received_at);
        let planned = Planned { sop, r, run_id: &run_id, input };
        let (outcome, fx) = planned.write(&mut plan.batch, &decision, ctx, ids);
        if decision == Decision::Start && !fx.holds_slot {
            // Started straight into a state that holds no slot (waiting for
            // the agent loop, or failed): give it back now, and remember
            // there is nothing left to give back.
            admission.release(&sop.name, &run_id, &decision);
            decision = Decision::Skip { reason: String::new() };
        }
        plan.effects.absorb(fx.effects);
        plan.outcomes.push(outcome);
        plan.reserved.push((sop.name.clone(), run_id, decision));
    }
    if let Some(idem) = &event.idempotency {
        // The fingerprint rides in the stored response, so a later use of
        // the key can tell a retry from a different request.
        let mut response = summary(&plan.outcomes);
        response[IdempotencyKey::FINGERPRINT_FIELD] = Value::String(idem.fingerprint.clone());
        plan.batch.idempotency = Some(IdempotencyClaim {
            scope: idem.scope.clone(),
            key: idem.key.clone(),
            created_at: event.received_at,
            expires_at: event.received_at + idem.ttl.unwrap_or(input.idempotency_ttl),
            response,
        });
    }
    plan
}

/// One matched SOP of an event, being written into the batch.
struct Planned<'a> {
    sop: &'a Sop,
    r: TriggerRef,
    run_id: &'a str,
    input: &'a EventInput<'a>,
}

/// What planning one matched SOP produced beyond its outcome.
struct PlannedEffects {
    effects: Effects,
    /// The run (if one started) is in a state that holds a slot.
    holds_slot: bool,
}

impl Planned<'_> {
    /// Adds the writes for one admission decision to `batch` and says what
    /// the caller is told.
    fn write(
        &self,
        batch: &mut Batch,
        decision: &Decision,
        ctx: &PlanContext<'_>,
        ids: &mut dyn IdSource,
    ) -> (RunOutcome, PlannedEffects) {
        let planned = PlannedEffects { effects: Effects::default(), holds_slot: false };
        match decision {
            Decision::Start | Decision::Defer => self.start_or_defer(batch, *decision == Decision::Start, ctx, ids),
            Decision::Coalesce { into } => {
                let event = self.input.event;
                batch.writes.push(Write::Coalesce {
                    run_id: into.clone(),
                    event_id: event.id.clone(),
                    payload: self.input.payload.clone(),
                    request: self.input.request.clone(),
                    session: self.input.continuation.session().cloned(),
                    client: event.client.clone(),
                    at: event.received_at,
                });
                let mut detail = json!({"into": into, "trigger": self.trigger_json(), "event_id": event.id,
                    "source": event.source, "topic": event.topic});
                if let Some(session) = self.input.continuation.audit() {
                    detail["session"] = session;
                }
                batch.writes.push(self.audit(AuditKind::TriggerCoalesced, Some(into), detail));
                (self.outcome(Outcome::Coalesced, Some(into), None), planned)
            }
            Decision::Skip { reason } | Decision::Reject { reason } => {
                let event = self.input.event;
                let (kind, o) = match decision {
                    Decision::Skip { .. } => (AuditKind::TriggerSkipped, Outcome::Skipped),
                    _ => (AuditKind::TriggerRejected, Outcome::Rejected),
                };
                let detail = json!({"reason": reason, "trigger": self.trigger_json(), "event_id": event.id,
                    "source": event.source, "topic": event.topic, "client": event.client});
                batch.writes.push(self.audit(kind, None, detail));
                (self.outcome(o, None, Some(reason)), planned)
            }
        }
    }

    /// A new run: started (with its first move) or put in the backlog.
    fn start_or_defer(
        &self,
        batch: &mut Batch,
        start: bool,
        ctx: &PlanContext<'_>,
        ids: &mut dyn IdSource,
    ) -> (RunOutcome, PlannedEffects) {
        let (sop, event) = (self.sop, self.input.event);
        let mut planned = PlannedEffects { effects: Effects::default(), holds_slot: false };
        let mut run = self.new_run();
        let kind = if start {
            let (status, step, fx) = start_move(sop, &run, ctx, ids);
            run.status = status;
            run.step = step;
            if status.is_terminal() {
                run.finished_at = Some(event.received_at);
            }
            planned.holds_slot = status.is_active();
            planned.effects = fx;
            AuditKind::RunStarted
        } else {
            AuditKind::RunDeferred
        };
        let record = self.start_record(&run);
        let o = if run.status == RunStatus::Deferred { Outcome::Deferred } else { Outcome::Started };
        batch.writes.push(Write::InsertRun(Box::new(run)));
        batch.writes.push(self.audit(kind, Some(self.run_id), record));
        batch.writes.append(&mut planned.effects.writes);
        (self.outcome(o, Some(self.run_id), None), planned)
    }

    /// The run as the backlog holds it; a start moves it on from there.
    fn new_run(&self) -> RunRecord {
        let (sop, event) = (self.sop, self.input.event);
        let trigger = &sop.triggers[self.r.trigger as usize];
        RunRecord {
            run_id: self.run_id.to_string(),
            sop: sop.name.clone(),
            sop_version: sop.version.clone(),
            status: RunStatus::Deferred,
            trigger_index: self.r.trigger,
            trigger: trigger.describe(),
            source: event.source,
            topic: event.topic.clone(),
            event_id: event.id.clone(),
            payload: self.input.payload.clone(),
            request: self.input.request.clone(),
            session: self.input.continuation.session().cloned(),
            client: event.client.clone(),
            idempotency_key: event.idempotency.as_ref().map(|i| i.key.clone()),
            started_at: event.received_at,
            updated_at: event.received_at,
            finished_at: None,
            coalesced: 0,
            step: 0,
        }
    }

    fn trigger_json(&self) -> Value {
        let trigger = &self.sop.triggers[self.r.trigger as usize];
        json!({"index": self.r.trigger, "type": trigger.trigger_type(), "description": trigger.describe()})
    }

    fn outcome(&self, outcome: Outcome, run_id: Option<&str>, reason: Option<&str>) -> RunOutcome {
        RunOutcome {
            sop: self.sop.name.clone(),
            run_id: run_id.map(str::to_string),
            outcome,
            reason: reason.map(str::to_string),
        }
    }

    fn audit(&self, kind: AuditKind, run_id: Option<&str>, detail: Value) -> Write {
        Write::Audit(NewAudit {
            at: self.input.event.received_at,
            kind,
            run_id: run_id.map(str::to_string),
            sop: Some(self.sop.name.clone()),
            detail,
        })
    }

    /// The run-start audit record, with what became of a session the
    /// webhook body named (`{"continued": id}` or `{"ignored": why}`).
    fn start_record(&self, run: &RunRecord) -> Value {
        let (sop, event) = (self.sop, self.input.event);
        let mut record = json!({
            "run_id": run.run_id,
            "sop": sop.name,
            "sop_version": sop.version,
            "status": run.status,
            "step": run.step,
            "trigger": self.trigger_json(),
            "event_id": event.id,
            "source": event.source,
            "topic": event.topic,
            "payload": run.payload,
            "client": event.client,
            "idempotency_key": event.idempotency.as_ref().map(|i| &i.key),
            "received_at": event.received_at,
        });
        if let Some(session) = self.input.continuation.audit() {
            record["session"] = session;
        }
        record
    }
}

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

/// What of a cancelled run was withdrawn in its cancel's commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Withdrawn {
    /// Outbox entries that were still pending: never sent.
    pub envelopes: Vec<String>,
    /// Steps (1-based numbers) pending or leased for the agent loop: no
    /// longer leased, a report of them refused.
    pub steps: Vec<u32>,
}

/// What a run still has waiting, read before a cancel is planned: its
/// pending outbox entries `(id, destination)` and its steps with their
/// status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Waiting {
    pub envelopes: Vec<(String, String)>,
    pub steps: Vec<(u32, StepStatus)>,
}

/// Why a request cannot move the run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("run {run_id} is {from}; it cannot become {to}")]
    InvalidTransition { run_id: String, from: RunStatus, to: RunStatus },
    /// The run is not where the request assumes (approving a run that is
    /// not waiting, reporting a step that is not leased): HTTP 409.
    #[error("{0}")]
    Conflict(String),
}

/// A request's plan for its run: the writes (status and step changes and
/// their audit included), where the run ends up, and what a cancel withdrew.
/// Promoting deferred runs into a slot it frees is the driver's, which
/// reads them.
#[derive(Debug)]
pub struct Transition {
    pub writes: Vec<Write>,
    pub effects: Effects,
    pub to: RunStatus,
    pub step: u32,
    pub withdrawn: Withdrawn,
}

/// Plans `input` for `run`. `sop` is the run's SOP if it is still loaded;
/// `waiting` is what the run still has waiting (read for a cancel, else
/// empty).
pub fn plan_transition(
    run: &RunRecord,
    input: RunInput,
    sop: Option<&Sop>,
    waiting: Waiting,
    ctx: &PlanContext<'_>,
    ids: &mut dyn IdSource,
) -> Result<Transition, PlanError> {
    let mut plan = Planning { run, sop, ctx, writes: Vec::new() };
    let mut withdrawn = Withdrawn::default();
    let (to, step, effects, reason) = match input {
        RunInput::Approve { by, reason } => plan.approve(by, reason, ids)?,
        RunInput::Deny { by, reason } => plan.deny(by, reason)?,
        RunInput::StepDone { index, lease_id, completed, output } => {
            plan.step_done(index, lease_id, completed, output, ids)?
        }
        RunInput::Delivered { envelope_id, attempts } => plan.delivered(envelope_id, attempts)?,
        RunInput::DeliveryFailed { envelope_id, attempts, error } => {
            plan.delivery_failed(envelope_id, attempts, error)?
        }
        RunInput::Finish { to, reason } => {
            if !to.is_terminal() || !run.status.can_become(to) {
                return Err(PlanError::InvalidTransition { run_id: run.run_id.clone(), from: run.status, to });
            }
            (to, run.step, Effects::default(), reason)
        }
        RunInput::Cancel { by, interface, reason } => {
            withdrawn = plan.cancel(&by, interface, reason.as_deref(), waiting)?;
            (RunStatus::Cancelled, run.step, Effects::default(), reason.or(Some("cancelled".into())))
        }
    };
    if to != run.status && !run.status.can_become(to) {
        return Err(PlanError::InvalidTransition { run_id: run.run_id.clone(), from: run.status, to });
    }
    let now = ctx.now;
    if to != run.status {
        plan.writes.push(Write::SetStatus { run_id: run.run_id.clone(), from: run.status, to, at: now });
        let audit = plan.audit(AuditKind::RunTransition, json!({"from": run.status, "to": to, "reason": reason}));
        plan.writes.push(audit);
    }
    if step != run.step {
        plan.writes.push(Write::SetStep { run_id: run.run_id.clone(), from: run.step, to: step, at: now });
    }
    let mut effects = effects;
    plan.writes.append(&mut effects.writes);
    Ok(Transition { writes: plan.writes, effects, to, step, withdrawn })
}

/// Where the run goes, its step, the move's effects, and the reason its
/// transition records.
type Moved = (RunStatus, u32, Effects, Option<String>);

/// One request's planning in progress.
struct Planning<'a> {
    run: &'a RunRecord,
    sop: Option<&'a Sop>,
    ctx: &'a PlanContext<'a>,
    writes: Vec<Write>,
}

impl<'a> Planning<'a> {
    fn audit(&self, kind: AuditKind, detail: Value) -> Write {
        Write::Audit(NewAudit {
            at: self.ctx.now,
            kind,
            run_id: Some(self.run.run_id.clone()),
            sop: Some(self.run.sop.clone()),
            detail,
        })
    }

    fn need_sop(&self) -> Result<&'a Sop, PlanError> {
        self.sop.ok_or_else(|| PlanError::Conflict(format!("SOP {} is no longer loaded", self.run.sop)))
    }

    fn expect(&self, status: RunStatus, doing: &str) -> Result<(), PlanError> {
        if self.run.status == status {
            return Ok(());
        }
        Err(PlanError::Conflict(format!(
            "run {} is {}, not {status}: cannot {doing}",
            self.run.run_id, self.run.status
        )))
    }

    fn approve(&mut self, by: String, reason: Option<String>, ids: &mut dyn IdSource) -> Result<Moved, PlanError> {
        self.expect(RunStatus::PendingApproval, "approve")?;
        let sop = self.need_sop()?;
        let detail = json!({"outcome": "approved", "by": by, "reason": reason, "step": self.run.step});
        self.writes.push(self.audit(AuditKind::Approval, detail));
        let (to, step, fx) = take_move(lifecycle::next_move(sop, self.run.step, true), sop, self.run, self.ctx, ids);
        Ok((to, step, fx, reason))
    }

    fn deny(&mut self, by: String, reason: Option<String>) -> Result<Moved, PlanError> {
        self.expect(RunStatus::PendingApproval, "deny")?;
        let detail = json!({"outcome": "denied", "by": by, "reason": reason, "step": self.run.step});
        self.writes.push(self.audit(AuditKind::Approval, detail));
        Ok((RunStatus::Cancelled, self.run.step, Effects::default(), reason.or(Some("denied".into()))))
    }

    fn step_done(
        &mut self,
        index: u32,
        lease_id: String,
        completed: bool,
        output: Value,
        ids: &mut dyn IdSource,
    ) -> Result<Moved, PlanError> {
        let run = self.run;
        self.expect(RunStatus::WaitingAgent, "report a step")?;
        if index != run.step {
            let (at, reported) = (run.step + 1, index + 1);
            return Err(PlanError::Conflict(format!("run {} is at step {at}, not {reported}", run.run_id)));
        }
        let status = if completed { StepStatus::Completed } else { StepStatus::Failed };
        let finish = Write::FinishStep {
            run_id: run.run_id.clone(),
            index,
            lease_id: lease_id.clone(),
            status,
            output: output.clone(),
            at: self.ctx.now,
        };
        self.writes.push(finish);
        let detail =
            json!({"step": index, "number": index + 1, "status": status, "lease_id": lease_id, "output": output});
        self.writes.push(self.audit(AuditKind::StepReported, detail));
        if !completed {
            return Ok((RunStatus::Failed, index, Effects::default(), Some(format!("step {} failed", index + 1))));
        }
        let sop = self.need_sop()?;
        let (to, step, fx) = take_move(lifecycle::next_move(sop, index + 1, false), sop, run, self.ctx, ids);
        Ok((to, step, fx, None))
    }

    fn delivered(&mut self, envelope_id: String, attempts: u32) -> Result<Moved, PlanError> {
        self.expect(RunStatus::Running, "complete a delivery")?;
        self.writes.push(Write::Delivered { id: envelope_id.clone(), attempts, at: self.ctx.now });
        let detail = json!({"envelope_id": envelope_id, "attempts": attempts});
        self.writes.push(self.audit(AuditKind::EnvelopeDelivered, detail));
        Ok((RunStatus::Completed, self.run.step, Effects::default(), None))
    }

    fn delivery_failed(&mut self, envelope_id: String, attempts: u32, error: String) -> Result<Moved, PlanError> {
        self.expect(RunStatus::Running, "fail a delivery")?;
        let dead = Write::DeadLetter { id: envelope_id.clone(), attempts, error: error.clone(), at: self.ctx.now };
        self.writes.push(dead);
        let detail = json!({"envelope_id": envelope_id, "reason": "dead_letter", "attempts": attempts, "error": error});
        self.writes.push(self.audit(AuditKind::EnvelopeFailed, detail));
        let reason = Some(format!("delivery gave up: {error}"));
        Ok((RunStatus::Failed, self.run.step, Effects::default(), reason))
    }

    /// What cancelling the run writes besides its status: every envelope it
    /// still has pending in the outbox and every step it has pending or
    /// leased is withdrawn, each with a compare-and-set (a delivery or a
    /// report that commits first refuses the cancel, which the driver then
    /// plans again), and `run_cancelled` records who, through which
    /// interface, why, and what was withdrawn.
    fn cancel(
        &mut self,
        by: &str,
        interface: &str,
        reason: Option<&str>,
        waiting: Waiting,
    ) -> Result<Withdrawn, PlanError> {
        let (run, now) = (self.run, self.ctx.now);
        if run.status.is_terminal() {
            let (run_id, from) = (run.run_id.clone(), run.status);
            return Err(PlanError::InvalidTransition { run_id, from, to: RunStatus::Cancelled });
        }
        let open: Vec<u32> = (waiting.steps.into_iter())
            .filter(|(_, status)| matches!(status, StepStatus::Pending | StepStatus::Leased))
            .map(|(index, _)| index)
            .collect();
        let envelopes = waiting.envelopes.iter().map(|(id, _)| id.clone()).collect();
        let withdraw =
            waiting.envelopes.into_iter().map(|(id, destination)| Write::WithdrawEnvelope { id, destination });
        self.writes.extend(withdraw);
        let steps = open.iter().map(|&index| Write::WithdrawStep { run_id: run.run_id.clone(), index, at: now });
        self.writes.extend(steps);
        let withdrawn = Withdrawn { envelopes, steps: open.iter().map(|i| i + 1).collect() };
        let detail = json!({"by": by, "interface": interface, "reason": reason, "from": run.status,
            "step": run.step, "withdrawn": withdrawn});
        self.writes.push(self.audit(AuditKind::RunCancelled, detail));
        Ok(withdrawn)
    }
}

/// The writes that start deferred run `run` in the slot `freed_by` left,
/// and whether it then holds the slot.
pub fn plan_promotion(
    run: &RunRecord,
    sop: &Sop,
    freed_by: &str,
    ctx: &PlanContext<'_>,
    ids: &mut dyn IdSource,
) -> (Vec<Write>, Effects, bool) {
    let now = ctx.now;
    let (status, step, mut fx) = start_move(sop, run, ctx, ids);
    let mut writes =
        vec![Write::SetStatus { run_id: run.run_id.clone(), from: RunStatus::Deferred, to: status, at: now }];
    if step != run.step {
        writes.push(Write::SetStep { run_id: run.run_id.clone(), from: run.step, to: step, at: now });
    }
    writes.push(Write::Audit(NewAudit {
        at: now,
        kind: AuditKind::RunPromoted,
        run_id: Some(run.run_id.clone()),
        sop: Some(sop.name.clone()),
        detail: json!({"status": status, "step": step, "slot_freed_by": freed_by}),
    }));
    writes.append(&mut fx.writes);
    (writes, fx, status.is_active())
}

/// The writes that lease `step` of `run` to an agent loop until `until`,
/// and the step as it is once they commit (a compare-and-set: another agent
/// that leased it first makes the commit refuse).
pub fn plan_lease(
    run: &RunRecord,
    step: &StepRecord,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
    ids: &mut dyn IdSource,
) -> (Vec<Write>, StepRecord) {
    let lease_id = ids.fresh();
    let expired = step.status == StepStatus::Leased;
    let writes = vec![
        Write::LeaseStep { run_id: run.run_id.clone(), index: step.index, lease_id: lease_id.clone(), until, at: now },
        Write::Audit(NewAudit {
            at: now,
            kind: AuditKind::StepLeased,
            run_id: Some(run.run_id.clone()),
            sop: Some(run.sop.clone()),
            detail: json!({"step": step.index, "number": step.index + 1, "lease_id": lease_id,
                "until": until, "attempt": step.attempts + 1, "previous_lease_expired": expired}),
        }),
    ];
    let leased = StepRecord {
        status: StepStatus::Leased,
        lease_id: Some(lease_id),
        leased_until: Some(until),
        attempts: step.attempts + 1,
        updated_at: now,
        ..step.clone()
    };
    (writes, leased)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::event::{Payload, Source};
    use crate::sop::test_support::{sop_with, step};
    use crate::sop::{AdmissionPolicy, ExecutionMode, TriggerSpec};

    /// Ids `id-1`, `id-2`, … in the order planning asks for them.
    #[derive(Default)]
    struct Counter(u32);

    impl IdSource for Counter {
        fn fresh(&mut self) -> String {
            self.0 += 1;
            format!("id-{}", self.0)
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn hook(name: &str) -> Sop {
        sop_with(name, vec![TriggerSpec::Webhook { path: format!("/sop/{name}") }])
    }

    fn event(name: &str, secs: i64) -> Event {
        let mut e = Event::new(
            format!("e-{secs}"),
            Source::SopWebhook,
            format!("/sop/{name}"),
            Payload::Json(json!({})),
            at(secs),
        );
        e.idempotency = Some(IdempotencyKey::new("token:t", &format!("/sop/{name}"), "k", b"{}"));
        e
    }

    fn input(event: &Event) -> EventInput<'_> {
        EventInput {
            event,
            payload: event.payload.to_value(),
            request: None,
            continuation: Continuation::New,
            idempotency_ttl: chrono::Duration::seconds(60),
        }
    }

    fn plan(catalog: &Catalog, event: &Event, admission: &mut Admission, ids: &mut Counter) -> EventPlan {
        let mut matched = Vec::new();
        catalog.matching(event, &mut matched);
        let registries = RegistrySnapshot { categories: Vec::new() };
        let ctx = PlanContext { now: event.received_at, registries: &registries, agent_attached: false };
        plan_event(catalog, &matched, &input(event), admission, &ctx, ids)
    }

    fn kinds(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .map(|w| match w {
                Write::Audit(a) => format!("audit:{}", a.kind.as_str()),
                other => format!("{other:?}").split([' ', '(']).next().unwrap().to_string(),
            })
            .collect()
    }

    #[test]
    fn a_started_run_is_one_batch_with_its_envelope_its_audit_and_the_key() {
        let catalog = Catalog::new(vec![hook("deploy")]);
        let mut admission = Admission::new(10, Vec::new());
        let e = event("deploy", 0);
        let plan = plan(&catalog, &e, &mut admission, &mut Counter::default());
        assert_eq!(plan.outcomes.len(), 1);
        assert_eq!(plan.outcomes[0].outcome, Outcome::Started);
        assert_eq!(plan.outcomes[0].run_id.as_deref(), Some("id-1"), "the run id is the first fresh id");
        assert_eq!(
            kinds(&plan.batch.writes),
            ["InsertRun", "audit:run_started", "Enqueue", "audit:envelope_queued"],
            "a stepless agent SOP leaves as one envelope in the start's commit"
        );
        let Write::Enqueue(entry) = &plan.batch.writes[2] else { unreachable!() };
        assert_eq!(entry.id, "id-2", "the envelope id is the next fresh id");
        assert_eq!(entry.created_at, at(0), "time is the event's, not a clock's");
        let claim = plan.batch.idempotency.as_ref().expect("the key is claimed in the same batch");
        assert_eq!(claim.expires_at, at(60));
        assert_eq!(claim.response["matched_sops"], json!(["deploy"]));
        assert!(claim.response[IdempotencyKey::FINGERPRINT_FIELD].is_string());
        assert!(plan.effects.enqueued && !plan.effects.step_pended);
        assert_eq!(plan.reserved, [("deploy".to_string(), "id-1".to_string(), Decision::Start)]);
    }

    #[test]
    fn at_capacity_a_drop_policy_writes_only_its_audit() {
        let mut sop = hook("deploy");
        sop.admission_policy = AdmissionPolicy::Drop;
        sop.steps = vec![step(1, true)];
        sop.execution_mode = ExecutionMode::Supervised;
        let catalog = Catalog::new(vec![sop]);
        let mut admission = Admission::new(10, Vec::new());
        let first = plan(&catalog, &event("deploy", 0), &mut admission, &mut Counter::default());
        assert_eq!(first.outcomes[0].outcome, Outcome::Started, "waits at its gate, holding the slot");
        let second = plan(&catalog, &event("deploy", 1), &mut admission, &mut Counter(10));
        assert_eq!(second.outcomes[0].outcome, Outcome::Skipped);
        assert_eq!(kinds(&second.batch.writes), ["audit:trigger_skipped"]);
    }

    fn run(status: RunStatus, sop: &Sop) -> RunRecord {
        let e = event(&sop.name, 0);
        let mut admission = Admission::new(10, Vec::new());
        let plan = plan(&Catalog::new(vec![sop.clone()]), &e, &mut admission, &mut Counter::default());
        let Write::InsertRun(run) = &plan.batch.writes[0] else { unreachable!() };
        RunRecord { status, ..(**run).clone() }
    }

    #[test]
    fn a_request_moves_only_a_run_where_it_assumes_and_says_why_not() {
        let mut sop = hook("deploy");
        sop.execution_mode = ExecutionMode::Supervised;
        let registries = RegistrySnapshot { categories: Vec::new() };
        let ctx = PlanContext { now: at(5), registries: &registries, agent_attached: false };
        let approve = || RunInput::Approve { by: "admin:127.0.0.1".into(), reason: None };

        let waiting = run(RunStatus::PendingApproval, &sop);
        let t = plan_transition(&waiting, approve(), Some(&sop), Waiting::default(), &ctx, &mut Counter(20)).unwrap();
        assert_eq!(t.to, RunStatus::Running, "approved, its envelope is queued");
        assert_eq!(
            kinds(&t.writes),
            ["audit:approval", "SetStatus", "audit:run_transition", "Enqueue", "audit:envelope_queued"]
        );

        let running = run(RunStatus::Running, &sop);
        let refused = plan_transition(&running, approve(), Some(&sop), Waiting::default(), &ctx, &mut Counter(20));
        assert!(matches!(refused, Err(PlanError::Conflict(reason)) if reason.contains("not pending_approval")));
        let unloaded = plan_transition(&waiting, approve(), None, Waiting::default(), &ctx, &mut Counter(20));
        assert!(matches!(unloaded, Err(PlanError::Conflict(reason)) if reason.contains("no longer loaded")));
    }

    #[test]
    fn a_cancel_withdraws_what_waits_and_records_it() {
        let sop = hook("deploy");
        let registries = RegistrySnapshot { categories: Vec::new() };
        let ctx = PlanContext { now: at(5), registries: &registries, agent_attached: false };
        let cancel = || RunInput::Cancel { by: "admin:127.0.0.1".into(), interface: "admin_api", reason: None };
        let waiting = Waiting {
            envelopes: vec![("env-1".into(), "agent".into())],
            steps: vec![(0, StepStatus::Completed), (1, StepStatus::Leased), (2, StepStatus::Pending)],
        };
        let running = run(RunStatus::Running, &sop);
        let t = plan_transition(&running, cancel(), Some(&sop), waiting, &ctx, &mut Counter::default()).unwrap();
        assert_eq!(t.to, RunStatus::Cancelled);
        assert_eq!(t.withdrawn, Withdrawn { envelopes: vec!["env-1".into()], steps: vec![2, 3] });
        assert_eq!(
            kinds(&t.writes),
            [
                "WithdrawEnvelope",
                "WithdrawStep",
                "WithdrawStep",
                "audit:run_cancelled",
                "SetStatus",
                "audit:run_transition"
            ]
        );
        let done = run(RunStatus::Completed, &sop);
        let refused = plan_transition(&done, cancel(), Some(&sop), Waiting::default(), &ctx, &mut Counter::default());
        assert!(matches!(refused, Err(PlanError::InvalidTransition { from: RunStatus::Completed, .. })));
    }

    #[test]
    fn a_lease_takes_a_fresh_id_and_counts_the_attempt() {
        let sop = hook("deploy");
        let r = run(RunStatus::WaitingAgent, &sop);
        let pending = StepRecord {
            run_id: r.run_id.clone(),
            index: 0,
            status: StepStatus::Pending,
            lease_id: None,
            leased_until: None,
            attempts: 0,
            output: None,
            created_at: at(0),
            updated_at: at(0),
        };
        let (writes, leased) = plan_lease(&r, &pending, at(65), at(5), &mut Counter(41));
        assert_eq!(kinds(&writes), ["LeaseStep", "audit:step_leased"]);
        assert_eq!(leased.lease_id.as_deref(), Some("id-42"));
        assert_eq!((leased.status, leased.attempts, leased.leased_until), (StepStatus::Leased, 1, Some(at(65))));
    }
}
