//! Where a run goes next (docs/operations.md), and the store writes that take it
//! there. Pure: ids, times, the registries snapshot and whether an agent
//! loop is attached all come in as arguments.
//!
//! A run is handed over in one of two ways:
//! - **as one envelope** — to the Executor (execution envelope, always), or
//!   to the Agent when the SOP has no steps (legacy envelope). The run is
//!   `running` while its envelope waits in the outbox and `completed` once it
//!   is delivered. Its one approval gate sits before delivery and applies
//!   when any step would be gated (mode, priority or
//!   `requires_confirmation`).
//! - **step by step** — to the Agent when the SOP has steps: each step
//!   becomes pending for the agent loop (`waiting_agent`), gated before it as
//!   the mode says; the run completes when the last step is reported
//!   completed. fanin never executes a step itself.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::gates::approval_before;
use super::RunStatus;
use crate::envelope::registry::RegistrySnapshot;
use crate::envelope::{execution, legacy, schema, Run};
use crate::records::{AuditKind, NewAudit, OutboxRecord, OutboxStatus, Write};
use crate::sop::{Destination, Sop};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    Envelope(Destination),
    AgentSteps,
}

pub fn handover(sop: &Sop) -> Handover {
    match (sop.destination, sop.steps.is_empty()) {
        (Destination::Executor, _) => Handover::Envelope(Destination::Executor),
        (Destination::Agent, true) => Handover::Envelope(Destination::Agent),
        (Destination::Agent, false) => Handover::AgentSteps,
    }
}

/// The next stop of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// An operator must approve before step `step` (0 for an envelope).
    AwaitApproval { step: u32 },
    /// The run goes out as one envelope.
    Deliver { destination: Destination },
    /// Step `step` is pending for the agent loop.
    PendStep { step: u32 },
    /// Every step is done.
    Complete,
}

impl Move {
    pub fn status(self) -> RunStatus {
        match self {
            Move::AwaitApproval { .. } => RunStatus::PendingApproval,
            Move::Deliver { .. } => RunStatus::Running,
            Move::PendStep { .. } => RunStatus::WaitingAgent,
            Move::Complete => RunStatus::Completed,
        }
    }

    /// The step index the run is at after the move.
    pub fn step(self, steps: usize) -> u32 {
        match self {
            Move::AwaitApproval { step } | Move::PendStep { step } => step,
            Move::Deliver { .. } => 0,
            Move::Complete => steps as u32,
        }
    }
}

/// Where a run at step `step` goes; `approved` when an operator has just
/// approved the gate it waits at.
pub fn next_move(sop: &Sop, step: u32, approved: bool) -> Move {
    match handover(sop) {
        Handover::Envelope(destination) => {
            let gated = (0..sop.steps.len().max(1)).any(|i| approval_before(sop, i));
            if gated && !approved {
                Move::AwaitApproval { step: 0 }
            } else {
                Move::Deliver { destination }
            }
        }
        Handover::AgentSteps => {
            if step as usize >= sop.steps.len() {
                Move::Complete
            } else if !approved && approval_before(sop, step as usize) {
                Move::AwaitApproval { step }
            } else {
                Move::PendStep { step }
            }
        }
    }
}

/// Everything a move needs from outside.
pub struct MoveContext<'a> {
    /// Its `trigger` is read only by a move that delivers an envelope.
    pub run: Run<'a>,
    pub sop: &'a Sop,
    pub now: DateTime<Utc>,
    /// The id the envelope gets if the move delivers one.
    pub envelope_id: &'a str,
    pub registries: &'a RegistrySnapshot,
    /// An agent loop polled within `agent_loop_grace_secs`.
    pub agent_attached: bool,
}

/// A step recorded pending with no agent loop attached: the driver tells
/// the operator (rate-limited; the audit has every one).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadlessStep {
    pub run_id: String,
    pub sop: String,
    /// 1-based.
    pub number: u32,
}

/// The writes a move adds beyond the run's status and step, and what they
/// mean for the caller.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub writes: Vec<Write>,
    /// A step became pending: wake agent loops that wait.
    pub step_pended: bool,
    /// An envelope was queued: wake the delivery worker.
    pub enqueued: bool,
    /// Steps that became pending with no agent loop attached (headless),
    /// for the driver to tell the operator about.
    pub headless_steps: Vec<HeadlessStep>,
    /// The envelope failed the shipped schema: the run must fail instead
    /// (a bug, audited, never sent).
    pub invalid_envelope: Option<Vec<String>>,
}

impl Effects {
    /// Merges what another move produced.
    pub fn absorb(&mut self, other: Effects) {
        self.writes.extend(other.writes);
        self.step_pended |= other.step_pended;
        self.enqueued |= other.enqueued;
        self.headless_steps.extend(other.headless_steps);
    }

    /// A step became pending with no agent loop attached.
    pub fn headless(&self) -> bool {
        !self.headless_steps.is_empty()
    }
}

/// The writes that carry out `mv` for the run in `ctx`.
pub fn effects(mv: Move, ctx: &MoveContext<'_>) -> Effects {
    let mut fx = Effects::default();
    let audit = |kind, detail: Value| {
        Write::Audit(NewAudit {
            at: ctx.now,
            kind,
            run_id: Some(ctx.run.run_id.to_string()),
            sop: Some(ctx.sop.name.clone()),
            detail,
        })
    };
    match mv {
        Move::AwaitApproval { .. } | Move::Complete => {}
        Move::PendStep { step } => {
            let title = ctx.sop.steps.get(step as usize).map_or("", |s| s.title.as_str());
            fx.writes.push(Write::PendStep { run_id: ctx.run.run_id.to_string(), index: step, at: ctx.now });
            let agent_loop = if ctx.agent_attached { "attached" } else { "absent" };
            fx.writes.push(audit(
                AuditKind::StepPending,
                json!({"step": step, "number": step + 1, "title": title, "agent_loop": agent_loop}),
            ));
            fx.step_pended = true;
            if !ctx.agent_attached {
                let (run_id, sop) = (ctx.run.run_id.to_string(), ctx.sop.name.clone());
                fx.headless_steps.push(HeadlessStep { run_id, sop, number: step + 1 });
            }
        }
        Move::Deliver { destination } => {
            let envelope = build_envelope(destination, ctx);
            if let Err(errors) = schema::validate(&envelope) {
                fx.writes.push(audit(
                    AuditKind::EnvelopeFailed,
                    json!({"envelope_id": ctx.envelope_id, "reason": "schema", "errors": errors}),
                ));
                fx.invalid_envelope = Some(errors);
                return fx;
            }
            let destination = match destination {
                Destination::Agent => "agent",
                Destination::Executor => "executor",
            };
            fx.writes.push(Write::Enqueue(Box::new(OutboxRecord {
                id: ctx.envelope_id.to_string(),
                seq: 0,
                run_id: ctx.run.run_id.to_string(),
                destination: destination.to_string(),
                envelope,
                status: OutboxStatus::Pending,
                attempts: 0,
                next_attempt_at: ctx.now,
                last_error: None,
                created_at: ctx.now,
                delivered_at: None,
            })));
            fx.writes.push(audit(
                AuditKind::EnvelopeQueued,
                json!({"envelope_id": ctx.envelope_id, "destination": destination}),
            ));
            fx.enqueued = true;
        }
    }
    fx
}

fn build_envelope(destination: Destination, ctx: &MoveContext<'_>) -> Value {
    match destination {
        Destination::Agent => legacy::build_for_run(&ctx.run, &ctx.sop.steps),
        Destination::Executor => execution::build(&execution::ExecutionInput {
            header: execution::Header {
                id: ctx.envelope_id,
                timestamp: ctx.now,
                destination,
                trace_id: Some(ctx.run.run_id),
            },
            run: ctx.run,
            steps: &ctx.sop.steps,
            registries: ctx.registries,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Source;
    use crate::sop::test_support::{sop_with, step};
    use crate::sop::{ExecutionMode, Priority, TriggerSpec};

    fn sop(destination: Destination, mode: ExecutionMode, confirms: &[bool]) -> Sop {
        let mut s = sop_with("s", vec![TriggerSpec::Manual]);
        s.destination = destination;
        s.execution_mode = mode;
        s.steps = confirms.iter().enumerate().map(|(i, c)| step(i as u32 + 1, *c)).collect();
        s
    }

    #[test]
    fn envelope_runs_have_one_gate_before_delivery() {
        use ExecutionMode::*;
        let agent = Destination::Agent;
        let exec = Destination::Executor;
        let rows = [
            (exec, Auto, vec![false, false], Move::Deliver { destination: exec }),
            (exec, Supervised, vec![false], Move::AwaitApproval { step: 0 }),
            (exec, StepByStep, vec![false, false], Move::AwaitApproval { step: 0 }),
            // A confirmation on a later step gates the single delivery.
            (exec, Auto, vec![false, true], Move::AwaitApproval { step: 0 }),
            (agent, Auto, vec![], Move::Deliver { destination: agent }),
            (agent, Supervised, vec![], Move::AwaitApproval { step: 0 }),
        ];
        for (dest, mode, confirms, want) in rows {
            let s = sop(dest, mode, &confirms);
            assert_eq!(next_move(&s, 0, false), want, "{dest:?} {mode:?} {confirms:?}");
            assert_eq!(next_move(&s, 0, true), Move::Deliver { destination: dest }, "approved");
        }
    }

    #[test]
    fn agent_steps_go_one_by_one_through_their_gates() {
        let s = sop(Destination::Agent, ExecutionMode::Supervised, &[false, true, false]);
        assert_eq!(next_move(&s, 0, false), Move::AwaitApproval { step: 0 });
        assert_eq!(next_move(&s, 0, true), Move::PendStep { step: 0 });
        assert_eq!(next_move(&s, 1, false), Move::AwaitApproval { step: 1 }, "requires_confirmation");
        assert_eq!(next_move(&s, 1, true), Move::PendStep { step: 1 });
        assert_eq!(next_move(&s, 2, false), Move::PendStep { step: 2 });
        assert_eq!(next_move(&s, 3, false), Move::Complete);
        let mut critical = sop(Destination::Agent, ExecutionMode::PriorityBased, &[false, false]);
        critical.priority = Priority::Critical;
        assert_eq!(next_move(&critical, 1, false), Move::AwaitApproval { step: 1 });
    }

    #[test]
    fn moves_say_their_status_and_step() {
        assert_eq!(Move::AwaitApproval { step: 2 }.status(), RunStatus::PendingApproval);
        assert_eq!(Move::PendStep { step: 2 }.step(3), 2);
        assert_eq!(Move::Complete.step(3), 3);
        assert_eq!(Move::Deliver { destination: Destination::Agent }.status(), RunStatus::Running);
    }

    fn ctx<'a>(sop: &'a Sop, trigger: &'a Value, registries: &'a RegistrySnapshot, attached: bool) -> MoveContext<'a> {
        MoveContext {
            run: Run {
                run_id: "run-1",
                sop_name: &sop.name,
                sop_version: &sop.version,
                source: Source::Manual,
                trigger,
                session: None,
            },
            sop,
            now: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc),
            envelope_id: "env-1",
            registries,
            agent_attached: attached,
        }
    }

    #[test]
    fn delivering_queues_a_schema_valid_envelope() {
        let trigger = json!({"id": "e1", "source": "manual", "timestamp": "2026-01-01T00:00:00.000Z", "topic": "s", "payload": {}});
        let registries = RegistrySnapshot { categories: vec![] };
        for dest in [Destination::Executor, Destination::Agent] {
            let s = sop(dest, ExecutionMode::Auto, if dest == Destination::Executor { &[false] } else { &[] });
            let fx = effects(Move::Deliver { destination: dest }, &ctx(&s, &trigger, &registries, false));
            assert!(fx.enqueued && fx.invalid_envelope.is_none(), "{dest:?}: {:?}", fx.invalid_envelope);
            let Write::Enqueue(entry) = &fx.writes[0] else { panic!("{:?}", fx.writes) };
            assert_eq!((entry.id.as_str(), entry.run_id.as_str()), ("env-1", "run-1"));
            assert!(schema::validate(&entry.envelope).is_ok());
        }
    }

    #[test]
    fn an_envelope_the_schema_refuses_is_audited_not_queued() {
        let trigger = json!({"id": "e1"});
        let registries = RegistrySnapshot { categories: vec![] };
        // An executor SOP without steps cannot make a valid execution envelope.
        let s = sop(Destination::Executor, ExecutionMode::Auto, &[]);
        let fx = effects(Move::Deliver { destination: Destination::Executor }, &ctx(&s, &trigger, &registries, true));
        assert!(!fx.enqueued);
        assert!(fx.invalid_envelope.is_some());
        assert!(matches!(&fx.writes[..], [Write::Audit(a)] if a.kind == AuditKind::EnvelopeFailed));
    }

    #[test]
    fn a_pending_step_says_whether_an_agent_loop_is_there() {
        let trigger = json!({});
        let registries = RegistrySnapshot { categories: vec![] };
        let s = sop(Destination::Agent, ExecutionMode::Auto, &[false]);
        let headless = effects(Move::PendStep { step: 0 }, &ctx(&s, &trigger, &registries, false));
        assert!(headless.step_pended && headless.headless());
        assert!(matches!(&headless.writes[0], Write::PendStep { index: 0, .. }));
        let Write::Audit(a) = &headless.writes[1] else { panic!() };
        assert_eq!((a.kind, a.detail["agent_loop"].clone()), (AuditKind::StepPending, json!("absent")));
        let attached = effects(Move::PendStep { step: 0 }, &ctx(&s, &trigger, &registries, true));
        assert!(!attached.headless());
    }
}
