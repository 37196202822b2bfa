//! The dispatcher: the one path from an event to durable runs, as a driver.
//!
//! `dispatch` matches an event against the current catalog, and under the
//! admission lock has the core plan it (`runs::plan::plan_event`: what each
//! matching SOP does with it, and the runs, backlog entries, audit records,
//! idempotency claim and first moves that says, as one batch); then it
//! commits, gives back what admission reserved if the commit fails (the
//! two settled together even if the caller stops waiting, `settle.rs`),
//! and reports. Only a committed batch is reported back, so a source
//! acknowledges nothing that is not durable. What happens to a run after
//! its start is in `advance.rs`.

use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use super::holds::{HoldTicket, SharedHolds};
use super::matching::{Catalog, Explanation};
use super::settle::settled;
use crate::envelope::session::Continuation;
use crate::event::{Event, Source};
use crate::ids::Fresh;
use crate::registries::{Registries, RegistrySnapshot};
use crate::runs::lifecycle::Effects;
use crate::runs::plan::{self, EventInput, EventPlan, PlanContext, PlanError};
pub use crate::runs::plan::{summary, Outcome, RunOutcome};
use crate::runs::RunStatus;
use crate::store::{AdmissionHold, AuditKind, Batch, Committed, NewAudit, Store, StoreError, Wakeup, Write};

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

impl From<PlanError> for DispatchError {
    fn from(e: PlanError) -> DispatchError {
        match e {
            PlanError::InvalidTransition { run_id, from, to } => DispatchError::InvalidTransition { run_id, from, to },
            PlanError::Conflict(reason) => DispatchError::Conflict(reason),
        }
    }
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

#[cfg(test)]
impl DispatchSettings {
    /// What the unit tests dispatch with: a five-minute key, a 1 KiB cap, a
    /// minute's grace.
    pub(crate) fn for_tests(max_deferred: usize) -> DispatchSettings {
        DispatchSettings {
            idempotency_ttl: chrono::Duration::seconds(300),
            payload_cap: 1024,
            max_deferred,
            agent_loop_grace: chrono::Duration::seconds(60),
        }
    }
}

pub struct Dispatcher {
    catalog: RwLock<Arc<Catalog>>,
    /// Bumped on every catalog replacement, so sources that derive state
    /// from the SOPs (the cron keys) rebuild it.
    catalog_version: tokio::sync::watch::Sender<u64>,
    pub(super) store: Arc<dyn Store>,
    /// Shared with the commits [`settled`] finishes for callers that
    /// stopped waiting.
    pub(super) admission: Arc<Mutex<Admission>>,
    pub(super) settings: DispatchSettings,
    registries: Option<Arc<Registries>>,
    /// When an agent loop last asked for work.
    last_agent_poll: Mutex<Option<DateTime<Utc>>>,
    /// Wakes agent loops waiting in a long poll when a step becomes pending
    /// (here, or in another process on the store: [`Dispatcher::follow`]).
    pub step_ready: Notify,
    /// Wakes the delivery workers (one per destination) when an envelope
    /// is queued (here or elsewhere, as `step_ready`), with
    /// `notify_waiters`: each arms its wait before it reads the store, so
    /// one queued in between is not missed.
    pub outbox_ready: Notify,
    /// Set for a replica: admission decides under a hold on the SOPs taken
    /// in the store ([`Store::hold_admission`]), from their committed load.
    shared_admission: bool,
    holds: SharedHolds,
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
            admission: Arc::new(Mutex::new(admission)),
            settings,
            registries: None,
            last_agent_poll: Mutex::new(None),
            step_ready: Notify::new(),
            outbox_ready: Notify::new(),
            shared_admission: false,
            holds: SharedHolds::default(),
        })
    }

    /// The registries execution envelopes carry (none: empty registries).
    pub fn with_registries(mut self, registries: Arc<Registries>) -> Dispatcher {
        self.registries = Some(registries);
        self
    }

    /// For a replica among several on one store: each admission decision is
    /// taken under the store's hold on its SOPs, so `max_concurrent`,
    /// cooldown and the backlog count every replica's runs.
    pub fn sharing_admission(mut self) -> Dispatcher {
        self.shared_admission = true;
        self
    }

    pub fn shares_admission(&self) -> bool {
        self.shared_admission
    }

    /// Under a shared admission, holds `sops` in the store (sharing the
    /// hold with this process's other requests for them, `holds.rs`), with
    /// this process's admission brought up to what the store holds for them.
    pub(super) async fn hold_admission(&self, sops: &[String]) -> Result<Option<HoldTicket>, StoreError> {
        if !self.shared_admission {
            return Ok(None);
        }
        let reseed = |hold: &AdmissionHold| {
            self.admission.lock().expect("admission lock").reseed(&hold.loads, hold.deferred_total);
        };
        Ok(Some(self.holds.acquire(self.store.as_ref(), sops, reseed).await?))
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
    /// when nothing matches or the event is a duplicate (the cron
    /// scheduler's `CronChecked`, a source's cursor), so a fire
    /// and its bookkeeping are durable together). One pass: match, admit and
    /// plan (`runs::plan`), commit, report.
    pub async fn dispatch_with(&self, event: Event, extra: Vec<Write>) -> Result<DispatchReport, DispatchError> {
        let catalog = self.catalog();
        let mut matched = Vec::new();
        catalog.matching(&event, &mut matched);
        if matched.is_empty() {
            return self.nothing_matched(event, extra).await;
        }
        let input = self.event_input(&event);
        let registries = self.registry_snapshot();
        let ctx = PlanContext {
            now: event.received_at,
            registries: &registries,
            agent_attached: self.agent_attached(event.received_at),
        };
        let mut sops: Vec<String> = matched.iter().map(|m| catalog.sops[m.sop as usize].name.clone()).collect();
        sops.dedup();
        let hold = self.hold_admission(&sops).await?;
        let EventPlan { mut batch, outcomes, reserved, effects } = {
            let mut admission = self.admission.lock().expect("admission lock");
            plan::plan_event(&catalog, &matched, &input, &mut admission, &ctx, &mut Fresh)
        };
        let extra_alone = (!extra.is_empty()).then(|| extra.clone());
        batch.writes.extend(extra);
        // The MQTT and AMQP sources keep a window of messages in flight and
        // the filesystem source a burst of changes, so their commits can wait a
        // moment to share an fsync; everyone else has a caller waiting
        // (HTTP) or is rare (cron, peripherals).
        let pipelined = matches!(event.source, Source::Mqtt | Source::Amqp | Source::Filesystem);
        let (store, admission) = (self.store.clone(), self.admission.clone());
        let committed = settled(async move {
            let committed = match pipelined {
                true => store.commit_pipelined(batch).await,
                false => store.commit(batch).await,
            };
            if !matches!(committed, Ok(Committed::Applied)) {
                let mut admission = admission.lock().expect("admission lock");
                for (sop, run_id, decision) in &reserved {
                    admission.release(sop, run_id, decision);
                }
            }
            if let Some(hold) = hold {
                hold.release().await;
            }
            committed
        })
        .await;
        match committed? {
            Committed::Applied => {
                for o in &outcomes {
                    metrics::counter!("fanin_runs_total", "outcome" => o.outcome.as_str()).increment(1);
                }
                self.announce(&effects);
                Ok(DispatchReport::Accepted { event_id: event.id, outcomes })
            }
            Committed::Duplicate { response } => {
                // Nothing of the event was written; its source's
                // bookkeeping (a cursor past a redelivered message) still is.
                if let Some(writes) = extra_alone {
                    self.store.commit(Batch { idempotency: None, writes }).await?;
                }
                Ok(DispatchReport::Duplicate { response })
            }
        }
    }

    /// An event no trigger matches: nothing is written but `extra`. The
    /// commit of a matching event claims its key atomically, so it needs no
    /// look first; one that matches nothing commits no claim, but its key
    /// may still name an earlier event that matched (before a reload), whose
    /// answer a retry must get again.
    async fn nothing_matched(&self, event: Event, extra: Vec<Write>) -> Result<DispatchReport, DispatchError> {
        if let Some(idem) = &event.idempotency {
            let earlier = self.store.idempotency_response(&idem.scope, &idem.key, event.received_at).await?;
            if let Some(response) = earlier {
                if !extra.is_empty() {
                    self.store.commit(Batch { idempotency: None, writes: extra }).await?;
                }
                return Ok(DispatchReport::Duplicate { response });
            }
        }
        if !extra.is_empty() {
            self.store.commit(Batch { idempotency: None, writes: extra }).await?;
        }
        Ok(DispatchReport::Accepted { event_id: event.id, outcomes: Vec::new() })
    }

    /// The event as planning takes it: payload and request capped for
    /// storage, and the session a webhook body continues.
    fn event_input<'e>(&self, event: &'e Event) -> EventInput<'e> {
        let cap = self.settings.payload_cap;
        let continuation = match (event.source, event.payload.json()) {
            (Source::Webhook | Source::SopWebhook, Some(body)) => Continuation::of_body(body, cap),
            _ => Continuation::New,
        };
        EventInput {
            event,
            payload: crate::event::cap_value(event.payload.to_value(), cap),
            request: event.request.clone().map(|request| request.capped(cap)),
            continuation,
            idempotency_ttl: self.settings.idempotency_ttl,
        }
    }

    /// Audits a refused event (`event_refused`). Returns once the record is
    /// durable, so the source acknowledges only what left a trace.
    pub async fn refuse(&self, refusal: Refusal) -> Result<(), DispatchError> {
        self.refuse_with(refusal, Vec::new()).await
    }

    /// `refuse`, committing `extra` with the record (a source's cursor
    /// moving past what it refused).
    pub async fn refuse_with(&self, refusal: Refusal, extra: Vec<Write>) -> Result<(), DispatchError> {
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
        let mut writes = vec![Write::Audit(record)];
        writes.extend(extra);
        let batch = Batch { idempotency: None, writes };
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

    /// Wakes this process's waiters for what other processes commit to a
    /// shared store ([`Store::wakeups`]) until `shutdown`, as
    /// [`announce`](Dispatcher::announce) does for this one's commits.
    pub async fn follow(&self, mut wakeups: broadcast::Receiver<Wakeup>, shutdown: CancellationToken) {
        loop {
            let wakeup = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = wakeups.recv() => match received {
                    Ok(wakeup) => wakeup,
                    Err(broadcast::error::RecvError::Lagged(_)) => Wakeup::All,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let kind = match wakeup {
                Wakeup::Step => "step",
                Wakeup::Outbox => "outbox",
                Wakeup::Runs => "runs",
                Wakeup::All => "all",
            };
            metrics::counter!("fanin_store_wakeups_total", "kind" => kind).increment(1);
            if matches!(wakeup, Wakeup::Step | Wakeup::All) {
                self.step_ready.notify_waiters();
            }
            if matches!(wakeup, Wakeup::Outbox | Wakeup::All) {
                self.outbox_ready.notify_waiters();
            }
        }
    }

    /// After a commit: wake whoever waits for what it produced.
    pub(super) fn announce(&self, effects: &Effects) {
        for step in &effects.headless_steps {
            log_headless(&step.run_id, &step.sop, step.number);
        }
        if effects.step_pended {
            self.step_ready.notify_waiters();
        }
        if effects.enqueued {
            self.outbox_ready.notify_waiters();
        }
    }
}

/// Log lines per second for headless steps, beyond which they are counted
/// instead of written.
const HEADLESS_LINES_PER_SEC: u32 = 20;

/// Logs a step recorded pending with no agent loop attached
/// (docs/operations.md#agent-loop), one line per step, within `HEADLESS_LINES_PER_SEC`: a flood of events
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IdempotencyKey, Payload, Source};
    use crate::sop::test_support::sop_with;
    use crate::sop::Sop;
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
        let settings = DispatchSettings::for_tests(max_deferred);
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
    async fn a_dispatch_dropped_while_its_commit_waits_still_gives_back_what_admission_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteStore::open(&dir.path().join("fanin.db")).unwrap());
        let settings = DispatchSettings::for_tests(10);
        let store: Arc<dyn Store> = sqlite.clone();
        let d = Dispatcher::new(Catalog::new(vec![deploy(AdmissionPolicy::Drop)]), store, settings).await.unwrap();
        let keyed = |secs| {
            let mut e = hook("/sop/deploy", secs);
            e.idempotency = Some(IdempotencyKey::new("token:t", "/sop/deploy", "k", b"{}"));
            e
        };
        let active = || d.admission.lock().unwrap().active("deploy");
        let first = outcomes(d.dispatch(keyed(0)).await.unwrap());
        d.finish_run(first[0].run_id.as_deref().unwrap(), RunStatus::Completed, at(1), None).await.unwrap();
        assert_eq!(active(), 0);

        // A retry of the first request: admission reserves the slot before
        // the commit finds the key taken. Its caller stops waiting while
        // the commit is queued.
        let release = crate::store::sqlite::hold_writer(&sqlite).await;
        let mut retry = Box::pin(d.dispatch(keyed(2)));
        while crate::store::sqlite::queued(&sqlite) == 0 {
            assert!(futures_util::poll!(retry.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        assert_eq!(active(), 1, "reserved while the commit waits");
        drop(retry);
        release.send(()).unwrap();
        crate::test_support::eventually("the slot given back", async || active() == 0).await;
        assert_eq!(outcomes(d.dispatch(hook("/sop/deploy", 3)).await.unwrap())[0].outcome, Outcome::Started);
    }

    #[tokio::test]
    async fn a_change_prepared_and_never_committed_gives_back_its_slot_and_promotions() {
        let f = fixture(vec![deploy(AdmissionPolicy::Parallel)], 10).await;
        let first = outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 0)).await.unwrap()).remove(0);
        let second = outcomes(f.dispatcher.dispatch(hook("/sop/deploy", 1)).await.unwrap()).remove(0);
        let (first, waiting) = (first.run_id.unwrap(), second.run_id.unwrap());
        let run = f.dispatcher.store().get_run(&first).await.unwrap().unwrap();
        let finish = crate::dispatch::RunInput::Finish { to: RunStatus::Completed, reason: None };
        let prepared = f.dispatcher.prepare(run, finish, at(2)).await.unwrap();
        assert_eq!(f.dispatcher.admission.lock().unwrap().deferred_total(), 0, "counted as promoted");
        // The caller stops before committing (a request that timed out).
        drop(prepared);
        assert_eq!(f.dispatcher.admission.lock().unwrap().deferred_total(), 1, "back in the backlog");
        let promoted = f.dispatcher.finish_run(&first, RunStatus::Completed, at(3), None).await.unwrap();
        assert_eq!(promoted.as_deref(), Some(waiting.as_str()), "promoted by the change that was committed");
    }

    #[tokio::test]
    async fn admission_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DispatchSettings::for_tests(10);
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

    #[tokio::test]
    async fn wakeups_from_other_processes_wake_the_waiters_they_name_until_shutdown() {
        use futures_util::FutureExt;
        let f = Arc::new(fixture(Vec::new(), 10).await);
        let (sender, wakeups) = broadcast::channel(4);
        let shutdown = CancellationToken::new();
        let following = {
            let (f, shutdown) = (Arc::clone(&f), shutdown.clone());
            tokio::spawn(async move { f.dispatcher.follow(wakeups, shutdown).await })
        };
        let d = &f.dispatcher;
        let (step, outbox) = (d.step_ready.notified(), d.outbox_ready.notified());
        tokio::pin!(step, outbox);
        step.as_mut().enable();
        outbox.as_mut().enable();
        sender.send(Wakeup::Outbox).unwrap();
        outbox.as_mut().await;
        // Step waiters would have been woken first: an outbox wake-up woke none.
        assert!(step.as_mut().now_or_never().is_none(), "an outbox wake-up leaves the agent loop waiting");
        sender.send(Wakeup::Step).unwrap();
        step.as_mut().await;

        let (step, outbox) = (d.step_ready.notified(), d.outbox_ready.notified());
        tokio::pin!(step, outbox);
        step.as_mut().enable();
        outbox.as_mut().enable();
        sender.send(Wakeup::All).unwrap();
        step.await;
        outbox.await;
        shutdown.cancel();
        following.await.unwrap();
    }
}
