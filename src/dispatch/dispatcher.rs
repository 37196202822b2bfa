//! The dispatcher: the one path from an event to durable runs.
//!
//! `dispatch` matches an event against the current catalog, asks admission
//! what each matching SOP does with it, and commits the runs, the backlog
//! entries and their audit records (with the idempotency key that guards
//! them), plus the first move of every started run (its outbox envelope or
//! its pending step), as one store batch. Only a committed batch is reported
//! back, so a source acknowledges nothing that is not durable. What happens
//! to a run after its start is in `advance.rs`.

use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::admission::{Admission, Decision};
use super::index::TriggerRef;
use super::matching::{Catalog, Explanation};
use crate::envelope::session::Continuation;
use crate::envelope::{self, Run};
use crate::event::{Event, IdempotencyKey, Request, Source};
use crate::registries::{Registries, RegistrySnapshot};
use crate::runs::lifecycle::{self, Effects, MoveContext};
use crate::runs::RunStatus;
use crate::sop::Sop;
use crate::store::{AuditKind, Batch, Committed, IdempotencyClaim, NewAudit, RunRecord, Store, StoreError, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Deferred,
    Coalesced,
    Skipped,
    Rejected,
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

#[derive(Clone, Debug, PartialEq)]
pub enum DispatchReport {
    /// Committed. `outcomes` is empty when no SOP matched (nothing written).
    Accepted { event_id: String, outcomes: Vec<RunOutcome> },
    /// The idempotency key was seen within its TTL; nothing was written.
    /// `response` is `{"matched_sops", "runs"}` as the first request got it,
    /// with that request's fingerprint (`IdempotencyKey::same_request`).
    Duplicate { response: Value },
}

/// An event a source refused but must acknowledge all the same (an MQTT
/// message: unacknowledged, the broker would redeliver it forever).
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub source: Source,
    pub topic: String,
    pub client: Option<String>,
    /// The error code (`payload_too_deep`) and its wording.
    pub reason: &'static str,
    pub detail: String,
    /// The size of what arrived.
    pub bytes: usize,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no run {0}")]
    NoSuchRun(String),
    #[error("run {run_id} is {from}; it cannot become {to}")]
    InvalidTransition { run_id: String, from: RunStatus, to: RunStatus },
    /// The run is not where the request assumes (approving a run that is not
    /// waiting, reporting a step that is not leased): HTTP 409.
    #[error("{0}")]
    Conflict(String),
}

#[derive(Clone, Debug)]
pub struct DispatchSettings {
    pub idempotency_ttl: chrono::Duration,
    /// `untrusted_payload_max_bytes`: payloads are stored capped to this.
    pub payload_cap: usize,
    pub max_deferred: usize,
    /// `agent_loop_grace_secs`: an agent loop that polled this recently is
    /// attached; a step pended without one is headless.
    pub agent_loop_grace: chrono::Duration,
}

pub struct Dispatcher {
    catalog: RwLock<Arc<Catalog>>,
    /// Bumped on every catalog replacement, so sources that derive state
    /// from the SOPs (the cron keys) rebuild it.
    catalog_version: tokio::sync::watch::Sender<u64>,
    pub(super) store: Arc<dyn Store>,
    pub(super) admission: Mutex<Admission>,
    pub(super) settings: DispatchSettings,
    registries: Option<Arc<Registries>>,
    /// When an agent loop last asked for work.
    last_agent_poll: Mutex<Option<DateTime<Utc>>>,
    /// Wakes agent loops waiting in a long poll when a step becomes pending.
    pub step_ready: Notify,
    /// Wakes the delivery workers (one per destination) when an envelope
    /// is queued, with `notify_waiters`: each arms its wait before it reads
    /// the store, so one queued in between is not missed.
    pub outbox_ready: Notify,
    /// What the outbox worker says of each destination, for `/ready`.
    pub delivery: crate::deliver::DeliveryStatus,
}

impl Dispatcher {
    /// Seeds admission from what the store holds, so slots and the backlog
    /// survive restarts.
    pub async fn new(
        catalog: Catalog,
        store: Arc<dyn Store>,
        settings: DispatchSettings,
    ) -> Result<Dispatcher, StoreError> {
        let admission = Admission::new(settings.max_deferred, store.sop_loads().await?);
        Ok(Dispatcher {
            catalog: RwLock::new(Arc::new(catalog)),
            catalog_version: tokio::sync::watch::Sender::new(0),
            store,
            admission: Mutex::new(admission),
            settings,
            registries: None,
            last_agent_poll: Mutex::new(None),
            step_ready: Notify::new(),
            outbox_ready: Notify::new(),
            delivery: crate::deliver::DeliveryStatus::default(),
        })
    }

    /// The registries execution envelopes carry (none: empty registries).
    pub fn with_registries(mut self, registries: Arc<Registries>) -> Dispatcher {
        self.registries = Some(registries);
        self
    }

    pub fn registries(&self) -> Option<&Arc<Registries>> {
        self.registries.as_ref()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Swaps in a reloaded SOP set. Events already matching finish against
    /// the set they started with; admission state carries over by SOP name.
    pub fn replace_catalog(&self, catalog: Catalog) {
        *self.catalog.write().expect("catalog lock") = Arc::new(catalog);
        self.catalog_version.send_modify(|v| *v += 1);
    }

    /// Changes whenever `replace_catalog` runs.
    pub fn watch_catalog(&self) -> tokio::sync::watch::Receiver<u64> {
        self.catalog_version.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn explain(&self, event: &Event) -> Explanation {
        self.catalog().explain(event)
    }

    /// An agent loop asked for work at `now`.
    pub fn agent_polled(&self, now: DateTime<Utc>) {
        *self.last_agent_poll.lock().expect("poll lock") = Some(now);
    }

    /// Whether an agent loop polled within the grace period before `now`.
    pub fn agent_attached(&self, now: DateTime<Utc>) -> bool {
        let last = *self.last_agent_poll.lock().expect("poll lock");
        last.is_some_and(|at| now - at <= self.settings.agent_loop_grace)
    }

    /// Matches, admits and commits one event. Returns only once the outcome
    /// is durable; on an error nothing of the event was written.
    pub async fn dispatch(&self, event: Event) -> Result<DispatchReport, DispatchError> {
        self.dispatch_with(event, Vec::new()).await
    }

    /// `dispatch`, committing `extra` writes in the same transaction even
    /// when nothing matches (the cron scheduler's `CronChecked`, so a fire
    /// and its bookkeeping are durable together).
    pub async fn dispatch_with(&self, event: Event, extra: Vec<Write>) -> Result<DispatchReport, DispatchError> {
        let catalog = self.catalog();
        let mut matched = Vec::new();
        catalog.matching(&event, &mut matched);
        if matched.is_empty() {
            // The commit below claims a key atomically, so a matching event
            // needs no look first. One that matches nothing commits no
            // claim; its key may still name an earlier event that matched
            // (before a reload), whose answer a retry must get again.
            if let Some(idem) = &event.idempotency {
                let earlier = self.store.idempotency_response(&idem.scope, &idem.key, event.received_at).await?;
                if let Some(response) = earlier {
                    return Ok(DispatchReport::Duplicate { response });
                }
            }
            if !extra.is_empty() {
                self.store.commit(Batch { idempotency: None, writes: extra }).await?;
            }
            return Ok(DispatchReport::Accepted { event_id: event.id, outcomes: Vec::new() });
        }

        let cap = self.settings.payload_cap;
        let payload = crate::event::cap_value(event.payload.to_value(), cap);
        let request = event.request.clone().map(|request| request.capped(cap));
        let continuation = match (event.source, event.payload.json()) {
            (Source::Webhook | Source::SopWebhook, Some(body)) => Continuation::of_body(body, cap),
            _ => Continuation::New,
        };
        let registries = self.registry_snapshot();
        let agent_attached = self.agent_attached(event.received_at);
        let mut batch = Batch::default();
        let mut outcomes = Vec::with_capacity(matched.len());
        let mut reserved = Vec::with_capacity(matched.len());
        let mut effects = Effects::default();
        {
            let mut admission = self.admission.lock().expect("admission lock");
            for &r in &matched {
                let sop = catalog.sop(r);
                let run_id = crate::ids::fresh();
                let mut decision = admission.admit(sop, &run_id, event.received_at);
                let planned = Planned {
                    sop,
                    r,
                    run_id: &run_id,
                    event: &event,
                    payload: &payload,
                    request: &request,
                    continuation: &continuation,
                };
                let (outcome, fx) = planned.write(&mut batch, &decision, &registries, agent_attached);
                if decision == Decision::Start && !fx.holds_slot {
                    // Started straight into a state that holds no slot
                    // (waiting for the agent loop, or failed): give it back
                    // now, and remember there is nothing left to give back.
                    admission.release(&sop.name, &run_id, &decision);
                    decision = Decision::Skip { reason: String::new() };
                }
                effects.absorb(fx.effects);
                outcomes.push(outcome);
                reserved.push((sop.name.clone(), run_id, decision));
            }
        }
        batch.writes.extend(extra);
        if let Some(idem) = &event.idempotency {
            // The fingerprint rides in the stored response, so a later use
            // of the key can tell a retry from a different request.
            let mut response = summary(&outcomes);
            response[IdempotencyKey::FINGERPRINT_FIELD] = Value::String(idem.fingerprint.clone());
            batch.idempotency = Some(IdempotencyClaim {
                scope: idem.scope.clone(),
                key: idem.key.clone(),
                created_at: event.received_at,
                expires_at: event.received_at + self.settings.idempotency_ttl,
                response,
            });
        }

        // The MQTT source keeps a window of messages in flight, so its
        // commits can wait a moment to share an fsync; everyone else has a
        // caller waiting (HTTP) or is rare (cron, peripherals).
        let committed = match event.source {
            Source::Mqtt => self.store.commit_pipelined(batch).await,
            _ => self.store.commit(batch).await,
        };
        if !matches!(committed, Ok(Committed::Applied)) {
            let mut admission = self.admission.lock().expect("admission lock");
            for (sop, run_id, decision) in &reserved {
                admission.release(sop, run_id, decision);
            }
        }
        match committed? {
            Committed::Applied => {
                for o in &outcomes {
                    metrics::counter!("fanin_runs_total", "outcome" => outcome_name(o.outcome)).increment(1);
                }
                self.announce(&effects);
                Ok(DispatchReport::Accepted { event_id: event.id, outcomes })
            }
            Committed::Duplicate { response } => Ok(DispatchReport::Duplicate { response }),
        }
    }

    /// Audits a refused event (`event_refused`). Returns once the record is
    /// durable, so the source acknowledges only what left a trace.
    pub async fn refuse(&self, refusal: Refusal) -> Result<(), DispatchError> {
        let detail = json!({
            "source": refusal.source,
            "topic": refusal.topic,
            "client": refusal.client,
            "reason": refusal.reason,
            "detail": refusal.detail,
            "bytes": refusal.bytes,
            "received_at": refusal.received_at,
        });
        let record =
            NewAudit { at: refusal.received_at, kind: AuditKind::EventRefused, run_id: None, sop: None, detail };
        let batch = Batch { idempotency: None, writes: vec![Write::Audit(record)] };
        match refusal.source {
            Source::Mqtt => self.store.commit_pipelined(batch).await?,
            _ => self.store.commit(batch).await?,
        };
        metrics::counter!("fanin_events_refused_total", "source" => refusal.source.as_str(), "reason" => refusal.reason)
            .increment(1);
        Ok(())
    }

    /// The registries to put in an execution envelope now.
    pub(super) fn registry_snapshot(&self) -> Arc<RegistrySnapshot> {
        match &self.registries {
            Some(r) => r.snapshot(),
            None => Arc::new(RegistrySnapshot { categories: Vec::new() }),
        }
    }

    /// After a commit: wake whoever waits for what it produced.
    pub(super) fn announce(&self, effects: &Effects) {
        if effects.step_pended {
            self.step_ready.notify_waiters();
        }
        if effects.enqueued {
            self.outbox_ready.notify_waiters();
        }
    }
}

/// Carries out `mv` for `run`: the status and step it ends at, and the
/// writes. A delivery whose envelope the schema refuses fails the run.
pub(super) fn take_move(
    mv: lifecycle::Move,
    sop: &Sop,
    run: &RunRecord,
    now: DateTime<Utc>,
    registries: &RegistrySnapshot,
    agent_attached: bool,
) -> (RunStatus, u32, Effects) {
    // Only a delivery builds an envelope; the trigger event (a copy of the
    // payload) and the envelope id are not made for any other move.
    let delivers = matches!(mv, lifecycle::Move::Deliver { .. });
    let trigger = if delivers { envelope::trigger_from_run(run) } else { Value::Null };
    let envelope_id = if delivers { crate::ids::fresh() } else { String::new() };
    let ctx = MoveContext {
        run: Run {
            run_id: &run.run_id,
            sop_name: &sop.name,
            sop_version: &sop.version,
            source: run.source,
            trigger: &trigger,
            session: run.session.as_ref(),
        },
        sop,
        now,
        envelope_id: &envelope_id,
        registries,
        agent_attached,
    };
    let fx = lifecycle::effects(mv, &ctx);
    if fx.headless {
        log_headless(&run.run_id, &sop.name, mv.step(sop.steps.len()) + 1);
    }
    let status = if fx.invalid_envelope.is_some() { RunStatus::Failed } else { mv.status() };
    (status, mv.step(sop.steps.len()), fx)
}

/// Log lines per second for headless steps, beyond which they are counted
/// instead of written.
const HEADLESS_LINES_PER_SEC: u32 = 20;

/// Logs a step recorded pending with no agent loop attached (docs/operations.md#agent-loop),
/// one line per step, within `HEADLESS_LINES_PER_SEC`: a flood of events
/// with no agent loop would otherwise cost more in log lines than in runs.
/// The next line written says how many were left out; the audit (a
/// `step_pending` record with `"agent_loop": "absent"`) has every one.
fn log_headless(run_id: &str, sop: &str, step: u32) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::LazyLock;
    static BUDGET: LazyLock<governor::DefaultDirectRateLimiter> = LazyLock::new(|| {
        governor::RateLimiter::direct(governor::Quota::per_second(
            std::num::NonZeroU32::new(HEADLESS_LINES_PER_SEC).expect("non-zero"),
        ))
    });
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    if BUDGET.check().is_err() {
        LEFT_OUT.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let left_out = LEFT_OUT.swap(0, Ordering::Relaxed);
    if left_out == 0 {
        tracing::warn!(run_id, sop, step, "no agent loop attached: step recorded as pending, not executed");
    } else {
        tracing::warn!(run_id, sop, step, not_logged_since = left_out,
            "no agent loop attached: step recorded as pending, not executed (more such steps were not logged; see the audit)");
    }
}

impl Effects {
    /// Merges what another move produced.
    pub fn absorb(&mut self, other: Effects) {
        self.writes.extend(other.writes);
        self.step_pended |= other.step_pended;
        self.enqueued |= other.enqueued;
        self.headless |= other.headless;
    }
}

/// One matched SOP of an event, being written into the batch.
struct Planned<'a> {
    sop: &'a Sop,
    r: TriggerRef,
    run_id: &'a str,
    event: &'a Event,
    payload: &'a Value,
    /// The webhook request, capped for storage.
    request: &'a Option<Request>,
    continuation: &'a Continuation,
}

/// What planning one matched SOP produced beyond its outcome.
struct PlannedEffects {
    effects: Effects,
    /// The run (if one started) is in a state that holds a slot.
    holds_slot: bool,
}

impl Planned<'_> {
    /// Adds the writes for one admission decision to `batch` and says what the
    /// caller is told.
    fn write(
        &self,
        batch: &mut Batch,
        decision: &Decision,
        registries: &RegistrySnapshot,
        agent_attached: bool,
    ) -> (RunOutcome, PlannedEffects) {
        let (sop, event) = (self.sop, self.event);
        let trigger = &sop.triggers[self.r.trigger as usize];
        let trigger_json =
            json!({"index": self.r.trigger, "type": trigger.trigger_type(), "description": trigger.describe()});
        let mut planned = PlannedEffects { effects: Effects::default(), holds_slot: false };
        let outcome = |outcome, run_id: Option<&str>, reason: Option<&str>| RunOutcome {
            sop: sop.name.clone(),
            run_id: run_id.map(str::to_string),
            outcome,
            reason: reason.map(str::to_string),
        };
        let audit = |kind, run_id: Option<&str>, detail: Value| {
            Write::Audit(NewAudit {
                at: event.received_at,
                kind,
                run_id: run_id.map(str::to_string),
                sop: Some(sop.name.clone()),
                detail,
            })
        };
        match decision {
            Decision::Start | Decision::Defer => {
                let mut run = RunRecord {
                    run_id: self.run_id.to_string(),
                    sop: sop.name.clone(),
                    sop_version: sop.version.clone(),
                    status: RunStatus::Deferred,
                    trigger_index: self.r.trigger,
                    trigger: trigger.describe(),
                    source: event.source,
                    topic: event.topic.clone(),
                    event_id: event.id.clone(),
                    payload: self.payload.clone(),
                    request: self.request.clone(),
                    session: self.continuation.session().cloned(),
                    client: event.client.clone(),
                    idempotency_key: event.idempotency.as_ref().map(|i| i.key.clone()),
                    started_at: event.received_at,
                    updated_at: event.received_at,
                    finished_at: None,
                    coalesced: 0,
                    step: 0,
                };
                let kind = if *decision == Decision::Start {
                    let (status, step, fx) = start_move(sop, &run, event.received_at, registries, agent_attached);
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
                let record = start_record(sop, &run, &trigger_json, event, self.continuation);
                let o = if run.status == RunStatus::Deferred { Outcome::Deferred } else { Outcome::Started };
                batch.writes.push(Write::InsertRun(Box::new(run)));
                batch.writes.push(audit(kind, Some(self.run_id), record));
                batch.writes.append(&mut planned.effects.writes);
                (outcome(o, Some(self.run_id), None), planned)
            }
            Decision::Coalesce { into } => {
                batch.writes.push(Write::Coalesce {
                    run_id: into.clone(),
                    event_id: event.id.clone(),
                    payload: self.payload.clone(),
                    request: self.request.clone(),
                    session: self.continuation.session().cloned(),
                    client: event.client.clone(),
                    at: event.received_at,
                });
                let mut detail = json!({"into": into, "trigger": trigger_json, "event_id": event.id,
                    "source": event.source, "topic": event.topic});
                if let Some(session) = self.continuation.audit() {
                    detail["session"] = session;
                }
                batch.writes.push(audit(AuditKind::TriggerCoalesced, Some(into), detail));
                (outcome(Outcome::Coalesced, Some(into), None), planned)
            }
            Decision::Skip { reason } | Decision::Reject { reason } => {
                let (kind, o) = match decision {
                    Decision::Skip { .. } => (AuditKind::TriggerSkipped, Outcome::Skipped),
                    _ => (AuditKind::TriggerRejected, Outcome::Rejected),
                };
                let detail = json!({"reason": reason, "trigger": trigger_json, "event_id": event.id,
                    "source": event.source, "topic": event.topic, "client": event.client});
                batch.writes.push(audit(kind, None, detail));
                (outcome(o, None, Some(reason)), planned)
            }
        }
    }
}

/// The first move of a run that starts or leaves the backlog.
pub(super) fn start_move(
    sop: &Sop,
    run: &RunRecord,
    now: DateTime<Utc>,
    registries: &RegistrySnapshot,
    agent_attached: bool,
) -> (RunStatus, u32, Effects) {
    take_move(lifecycle::next_move(sop, 0, false), sop, run, now, registries, agent_attached)
}

/// The run-start audit record, with what became of a session
/// the webhook body named (`{"continued": id}` or `{"ignored": why}`).
fn start_record(sop: &Sop, run: &RunRecord, trigger: &Value, event: &Event, continuation: &Continuation) -> Value {
    let mut record = json!({
        "run_id": run.run_id,
        "sop": sop.name,
        "sop_version": sop.version,
        "status": run.status,
        "step": run.step,
        "trigger": trigger,
        "event_id": event.id,
        "source": event.source,
        "topic": event.topic,
        "payload": run.payload,
        "client": event.client,
        "idempotency_key": event.idempotency.as_ref().map(|i| &i.key),
        "received_at": event.received_at,
    });
    if let Some(session) = continuation.audit() {
        record["session"] = session;
    }
    record
}

/// What the caller is told, and what a duplicate of the request is told later.
pub fn summary(outcomes: &[RunOutcome]) -> Value {
    let sops: Vec<&str> = outcomes.iter().map(|o| o.sop.as_str()).collect();
    json!({"matched_sops": sops, "runs": outcomes})
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Started => "started",
        Outcome::Deferred => "deferred",
        Outcome::Coalesced => "coalesced",
        Outcome::Skipped => "skipped",
        Outcome::Rejected => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Payload, Source};
    use crate::sop::test_support::sop_with;
    use crate::sop::{AdmissionPolicy, TriggerSpec};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{AuditQuery, RunQuery};
    use chrono::TimeZone;

    struct Fixture {
        _dir: tempfile::TempDir,
        dispatcher: Dispatcher,
    }

    async fn fixture(sops: Vec<Sop>, max_deferred: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("fanin.db")).unwrap());
        let settings = DispatchSettings {
            idempotency_ttl: chrono::Duration::seconds(300),
            payload_cap: 1024,
            max_deferred,
            agent_loop_grace: chrono::Duration::seconds(60),
        };
        let dispatcher = Dispatcher::new(Catalog::new(sops), store, settings).await.unwrap();
        Fixture { _dir: dir, dispatcher }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn hook(path: &str, secs: i64) -> Event {
        Event::new(crate::ids::fresh(), Source::SopWebhook, path, Payload::Json(json!({"n": secs})), at(secs))
    }

    fn outcomes(report: DispatchReport) -> Vec<RunOutcome> {
        match report {
            DispatchReport::Accepted { outcomes, .. } => outcomes,
            other => panic!("expected accepted, got {other:?}"),
        }
    }

    async fn audit_kinds(store: &dyn Store) -> Vec<AuditKind> {
        let records = store.audit(&AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
        records.iter().map(|a| a.kind).collect()
    }

    fn deploy(policy: AdmissionPolicy) -> Sop {
        let mut s = sop_with("deploy", vec![TriggerSpec::Webhook { path: "/sop/deploy".into() }]);
        s.admission_policy = policy;
        s
    }

    #[tokio::test]
    async fn every_matching_sop_gets_one_run_and_one_start_record() {
        let mut twice = sop_with(
            "twice",
            vec![TriggerSpec::Webhook { path: "/sop/a".into() }, TriggerSpec::Webhook { path: "/sop/a".into() }],
        );
        twice.max_concurrent = 5;
        let f = fixture(vec![twice, sop_with("other", vec![TriggerSpec::Webhook { path: "/sop/a".into() }])], 10).await;
        let out = outcomes(f.dispatcher.dispatch(hook("/sop/a", 0)).await.unwrap());
        assert_eq!(out.iter().map(|o| o.sop.as_str()).collect::<Vec<_>>(), ["twice", "other"]);
        assert!(out.iter().all(|o| o.outcome == Outcome::Started));
        let store = f.dispatcher.store();
        let runs = store.list_runs(&RunQuery { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(runs.len(), 2);
        let audit = store.audit(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(audit.iter().filter(|a| a.kind == AuditKind::RunStarted).count(), 2);
        assert!(outcomes(f.dispatcher.dispatch(hook("/sop/b", 1)).await.unwrap()).is_empty());
    }

    #[tokio::test]
    async fn a_busy_sop_defers_then_promotes_when_its_run_finishes() {
        let f = fixture(vec![deploy(AdmissionPolicy::Parallel)], 10).await;
        let first = outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 0)).await.unwrap()).remove(0);
        let second = outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 1)).await.unwrap()).remove(0);
        assert_eq!((first.outcome, second.outcome), (Outcome::Started, Outcome::Deferred));
        let waiting = second.run_id.unwrap();
        let store = f.dispatcher.store().clone();
        assert_eq!(store.get_run(&waiting).await.unwrap().unwrap().status, RunStatus::Deferred);

        let promoted =
            f.dispatcher.finish_run(first.run_id.as_deref().unwrap(), RunStatus::Completed, at(2), None).await.unwrap();
        assert_eq!(promoted.as_deref(), Some(waiting.as_str()));
        assert_eq!(store.get_run(&waiting).await.unwrap().unwrap().status, RunStatus::Running);
        let kinds = audit_kinds(store.as_ref()).await;
        // Each run queues its envelope as it starts (a stepless agent SOP).
        assert_eq!(
            kinds,
            [
                AuditKind::RunStarted,
                AuditKind::EnvelopeQueued,
                AuditKind::RunDeferred,
                AuditKind::RunTransition,
                AuditKind::RunPromoted,
                AuditKind::EnvelopeQueued
            ]
        );
    }

    #[tokio::test]
    async fn coalesce_merges_into_the_waiting_run_and_reject_is_audited() {
        let f = fixture(
            vec![deploy(AdmissionPolicy::Coalesce), {
                let mut s = sop_with("full", vec![TriggerSpec::Webhook { path: "/sop/deploy".into() }]);
                s.admission_policy = AdmissionPolicy::Parallel;
                s
            }],
            2,
        )
        .await;
        let store = f.dispatcher.store().clone();
        // deploy: started, deferred, coalesced; full: started, deferred, rejected (backlog of 2 is full).
        let o: Vec<Vec<RunOutcome>> = vec![
            outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 0)).await.unwrap()),
            outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 1)).await.unwrap()),
            outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 2)).await.unwrap()),
        ];
        let by = |i: usize, sop: &str| o[i].iter().find(|r| r.sop == sop).unwrap().clone();
        assert_eq!(by(2, "deploy").outcome, Outcome::Coalesced);
        assert_eq!(by(2, "deploy").run_id, by(1, "deploy").run_id);
        assert_eq!(by(2, "full").outcome, Outcome::Rejected);
        assert!(by(2, "full").reason.unwrap().contains("max_deferred"));
        let merged = store.get_run(by(1, "deploy").run_id.as_deref().unwrap()).await.unwrap().unwrap();
        assert_eq!((merged.coalesced, merged.payload.clone()), (1, json!({"n": 2})), "the newest trigger wins");
        let kinds = audit_kinds(store.as_ref()).await;
        assert!(kinds.contains(&AuditKind::TriggerCoalesced) && kinds.contains(&AuditKind::TriggerRejected));
    }

    #[tokio::test]
    async fn a_duplicate_key_releases_what_admission_reserved() {
        let f = fixture(vec![deploy(AdmissionPolicy::Drop)], 10).await;
        let keyed = |secs| {
            let mut e = hook("/sop/deploy", secs);
            e.idempotency = Some(IdempotencyKey::new("token:t", "/sop/deploy", "k", b"{}"));
            e
        };
        let first = outcomes(f.dispatcher.dispatch(keyed(0)).await.unwrap());
        match f.dispatcher.dispatch(keyed(1)).await.unwrap() {
            DispatchReport::Duplicate { response } => {
                assert_eq!(response["runs"], json!(first));
                assert_eq!(
                    response[IdempotencyKey::FINGERPRINT_FIELD],
                    json!(keyed(1).idempotency.unwrap().fingerprint)
                );
            }
            other => panic!("{other:?}"),
        }
        f.dispatcher.finish_run(first[0].run_id.as_deref().unwrap(), RunStatus::Completed, at(2), None).await.unwrap();
        // Only the first request holds a slot, so after it finishes a new run starts (drop policy would skip otherwise).
        assert_eq!(outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 3)).await.unwrap())[0].outcome, Outcome::Started);
    }

    #[tokio::test]
    async fn admission_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DispatchSettings {
            idempotency_ttl: chrono::Duration::seconds(300),
            payload_cap: 1024,
            max_deferred: 10,
            agent_loop_grace: chrono::Duration::seconds(60),
        };
        let open = || async {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("fanin.db")).unwrap());
            Dispatcher::new(Catalog::new(vec![deploy(AdmissionPolicy::Parallel)]), store, settings.clone())
                .await
                .unwrap()
        };
        let d = open().await;
        assert_eq!(outcomes(d.dispatch(hook("/sop/deploy", 0)).await.unwrap())[0].outcome, Outcome::Started);
        drop(d);
        let d = open().await;
        assert_eq!(outcomes(d.dispatch(hook("/sop/deploy", 1)).await.unwrap())[0].outcome, Outcome::Deferred);
    }

    #[tokio::test]
    async fn finishing_checks_the_transition() {
        let f = fixture(vec![deploy(AdmissionPolicy::Parallel)], 10).await;
        let run = outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 0)).await.unwrap()).remove(0).run_id.unwrap();
        f.dispatcher.finish_run(&run, RunStatus::Completed, at(1), None).await.unwrap();
        let again = f.dispatcher.finish_run(&run, RunStatus::Failed, at(2), None).await;
        assert!(matches!(again, Err(DispatchError::InvalidTransition { .. })));
        assert!(matches!(
            f.dispatcher.finish_run("nope", RunStatus::Failed, at(2), None).await,
            Err(DispatchError::NoSuchRun(_))
        ));
    }
}
