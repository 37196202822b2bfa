//! The outbox worker: delivers queued envelopes to the Executor and the
//! Agent, at least once, in order per run (docs/operations.md#the-outbox).
//!
//! Envelopes are written to the outbox in the same commit as the transition
//! that produced them, so nothing queued is lost by a crash; this task only
//! moves them on. Each attempt POSTs the envelope as stored with
//! `Content-Type: application/json`, `Idempotency-Key: <envelope id>` (the
//! same on every attempt, so a destination can drop repeats) and the
//! destination's bearer token. A 2xx completes the run; anything else is
//! retried with capped exponential backoff (`[delivery]`), and after
//! `max_attempts` the envelope becomes a dead letter — kept, listed by
//! `fanin outbox list`, retried by `fanin outbox retry` — and its run fails.
//! Every outcome is audited, each failed attempt too (with its error and
//! when the next comes, so a run's record shows every attempt); a failed
//! attempt stores its full cause chain as the entry's last error.
//!
//! A dead letter retried with `fanin outbox retry` is sent again even though
//! its run has failed; if it arrives, that is audited and the run keeps its
//! failed record. Envelopes of a cancelled run are never sent.
//!
//! Cost per envelope is what keeps up with intake: each configured
//! destination has its own loop, which works in rounds. A round reads up to
//! [`ROUND`] due entries with their runs in one query (an index walk that
//! reads only what it returns), POSTs them all at once over a pool of as
//! many kept-alive connections, and records every outcome in one commit.
//! A full round is followed by the next at once; otherwise the loop sleeps
//! until the earliest due entry or until the dispatcher says something was
//! queued: it does not poll. A destination that is not configured has no
//! loop: its envelopes wait untouched (attempts are not spent), are
//! reported once in the log and counted in `/ready`; configuring it and
//! restarting delivers them. An entry that can never be sent (its stored
//! row cannot be read, or its envelope nests deeper than a receiver's JSON
//! parser reads) is dead-lettered at once with the reason, and its running
//! run fails as after its last attempt; the rest go on.
//!
//! Nothing is logged per envelope: a destination that fails is logged when
//! it starts failing (with the cause), reminded with a count while it
//! stays so, and logged when it delivers again ([`notices`]). When the
//! store refuses the worker, the outcomes it holds are kept (the attempts
//! are not repeated) and recorded again after a growing wait.

mod notices;
mod status;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, DutyState};
use crate::config::{Config, DeliveryConfig, DestinationConfig};
use crate::dispatch::{DispatchError, Dispatcher, Prepared, RunInput};
use crate::runs::RunStatus;
use crate::store::{AuditKind, DueEntry, NewAudit, Store, StoreError, Tallies, Write};
use notices::{DestinationLog, DestinationNotice, RoundCounts, StoreNotice, StoreTrouble};

pub use notices::Failing;
pub use status::{DeliveryStatus, DestinationStatus};

/// The destinations of `[destinations.*]`, as outbox entries name them.
const DESTINATIONS: [&str; 2] = ["agent", "executor"];

/// How many due entries one round takes. They belong to different runs
/// (only the head of each run is due), so sending them at once keeps the
/// order per run.
const ROUND: usize = 128;

/// Where envelopes go, from `[destinations.*]`.
struct Target {
    url: String,
    bearer_token: String,
}

/// Starts one loop per configured destination, and reports the envelopes
/// waiting for one that is not. `pending` is what the store held at start.
pub fn start(
    config: &Config,
    dispatcher: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    pending: &Tallies,
    status: Arc<DeliveryStatus>,
    cluster: Option<Arc<Cluster>>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let config = Arc::new(config.clone());
    for name in DESTINATIONS {
        let configured = match name {
            "agent" => config.destinations.agent.clone(),
            _ => config.destinations.executor.clone(),
        };
        let pending_at_start = pending.outbox_pending.get(name).copied().unwrap_or(0);
        let entry = DestinationStatus { configured: configured.is_some(), pending_at_start, ..Default::default() };
        status.set(name, entry);
        let Some(destination) = configured else {
            let waiting =
                report_unconfigured(name, pending_at_start, dispatcher.clone(), store.clone(), shutdown.clone());
            tasks.push(tokio::spawn(waiting));
            continue;
        };
        let report_to = status.clone();
        let (config, dispatcher, store, status) = (config.clone(), dispatcher.clone(), store.clone(), status.clone());
        let lane = move |token| {
            Lane::new(name, &destination, &config, dispatcher.clone(), store.clone(), status.clone()).run(token)
        };
        let Some(cluster) = cluster.clone() else {
            tasks.push(tokio::spawn(lane(shutdown.clone())));
            continue;
        };
        // One replica at a time delivers to a destination: each entry goes
        // out once, in order per run, as from a daemon alone.
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let report = |state: &DutyState| report_to.set_duty(name, state.clone());
            cluster.run_duty(&format!("outbox:{name}"), &shutdown, report, lane).await
        }));
    }
    tasks
}

/// Says once that envelopes wait for a destination that is not configured:
/// at start if some already do, else when the first one is queued.
async fn report_unconfigured(
    name: &'static str,
    pending_at_start: u64,
    dispatcher: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    let say = |waiting: u64| {
        tracing::warn!(
            destination = name,
            waiting,
            "outbox: envelopes wait for [destinations.{name}], which is not configured; configure it and restart \
             to deliver them (/ready counts them)"
        )
    };
    if pending_at_start > 0 {
        return say(pending_at_start);
    }
    loop {
        let queued = dispatcher.outbox_ready.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let enqueued = store.watch().enqueued(name);
        if enqueued > 0 {
            return say(enqueued);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = &mut queued => {}
        }
    }
}

/// What one entry of a round came to.
enum Attempt {
    Delivered,
    /// The attempt failed: the cause, with its cause chain.
    Failed(String),
    /// Not attempted: its run was cancelled (or is gone), so it must not go
    /// out any more.
    Retire(String),
    /// Not attempted: the stored entry cannot be read, or holds JSON nested
    /// deeper than a receiver's parser reads, so every attempt would fail
    /// the same way. It is the last one.
    Unsendable(String),
}

/// The deepest nesting an envelope may have and still go out: serde_json
/// (and parsers like it) refuse more than 128 levels. Sources refuse such
/// payloads at the door; this catches what was stored some other way.
const MAX_ENVELOPE_DEPTH: usize = 127;

struct Outcome {
    entry: DueEntry,
    attempt: Attempt,
}

/// One configured destination's loop.
struct Lane {
    name: &'static str,
    target: Target,
    dispatcher: Arc<Dispatcher>,
    /// Where the lane reads what is due; outcomes go through the
    /// dispatcher, which moves their runs.
    store: Arc<dyn Store>,
    policy: DeliveryConfig,
    http: reqwest::Client,
    /// What `/ready` says of this destination.
    status: Arc<DeliveryStatus>,
    log: DestinationLog,
    trouble: StoreTrouble,
    /// Outcomes the store refused to record: recorded again before anything
    /// else is read, so their attempts are not repeated.
    unrecorded: Vec<Outcome>,
}

impl Lane {
    fn new(
        name: &'static str,
        destination: &DestinationConfig,
        config: &Config,
        dispatcher: Arc<Dispatcher>,
        store: Arc<dyn Store>,
        status: Arc<DeliveryStatus>,
    ) -> Lane {
        Lane {
            name,
            store,
            status,
            target: Target { url: destination.url.clone(), bearer_token: destination.bearer_token.clone() },
            dispatcher,
            policy: config.delivery.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(config.gateway.request_timeout_secs))
                .pool_max_idle_per_host(ROUND)
                .build()
                .expect("HTTP client with default TLS roots"),
            log: DestinationLog::default(),
            trouble: StoreTrouble::default(),
            unrecorded: Vec::new(),
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let dispatcher = self.dispatcher.clone();
        loop {
            // Armed before looking, so a queueing in between is not missed.
            let queued = dispatcher.outbox_ready.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();

            if !self.unrecorded.is_empty() {
                let held = std::mem::take(&mut self.unrecorded);
                if let Some(wait) = self.record(held).await {
                    if !pause(wait, &shutdown).await {
                        return;
                    }
                }
                continue;
            }
            let due = match self.store.outbox_due(self.name, Utc::now(), ROUND).await {
                Ok(due) => {
                    self.store_answered();
                    due
                }
                Err(e) => {
                    let wait = self.store_refused(&e);
                    if !pause(wait, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let full = due.len() == ROUND;
            if !due.is_empty() {
                let outcomes = futures_util::future::join_all(due.into_iter().map(|e| self.attempt(e))).await;
                let wait = self.record(outcomes).await;
                if shutdown.is_cancelled() {
                    return;
                }
                if let Some(wait) = wait {
                    if !pause(wait, &shutdown).await {
                        return;
                    }
                    continue;
                }
                if full {
                    continue;
                }
            }
            // Queued while this round ran: look again without asking when
            // the next entry is due.
            if queued.as_mut().now_or_never().is_some() {
                continue;
            }
            let wait = match self.store.outbox_next_due(self.name).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => Duration::MAX,
                Err(e) => self.store_refused(&e),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut queued => {}
                _ = sleep_or_forever(wait) => {}
            }
        }
    }

    /// One attempt at one entry. The envelope is sent as stored.
    async fn attempt(&self, mut entry: DueEntry) -> Outcome {
        if let Some(why) = entry.unreadable.take() {
            return Outcome { entry, attempt: Attempt::Unsendable(why) };
        }
        if crate::event::nests_deeper_than(entry.envelope.as_bytes(), MAX_ENVELOPE_DEPTH) {
            let why = format!("the stored envelope cannot be read: it nests deeper than {MAX_ENVELOPE_DEPTH} levels");
            return Outcome { entry, attempt: Attempt::Unsendable(why) };
        }
        let run_status = entry.run.as_ref().map(|r| r.status);
        if matches!(run_status, None | Some(RunStatus::Cancelled)) {
            let why = run_status.map_or("its run is gone".to_string(), |s| format!("its run is {s}"));
            return Outcome { entry, attempt: Attempt::Retire(why) };
        }
        let body = std::mem::take(&mut entry.envelope);
        let mut request = self
            .http
            .post(&self.target.url)
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &entry.id)
            .body(body);
        if !self.target.bearer_token.is_empty() {
            request = request.bearer_auth(&self.target.bearer_token);
        }
        let attempt = match request.send().await {
            Ok(response) => {
                let status = response.status();
                // Read to the end, so the connection goes back to the pool.
                let _ = response.bytes().await;
                match status.is_success() {
                    true => Attempt::Delivered,
                    false => Attempt::Failed(format!("HTTP {status}")),
                }
            }
            Err(e) => Attempt::Failed(crate::causes::error_chain(&e.without_url())),
        };
        match &attempt {
            Attempt::Delivered => metrics::counter!("fanin_outbox_delivered_total", "destination" => self.name),
            _ => metrics::counter!("fanin_outbox_failed_attempts_total", "destination" => self.name),
        }
        .increment(1);
        Outcome { entry, attempt }
    }

    /// Records a round's outcomes in one commit (entries whose outcome no
    /// longer holds, because an operator moved the entry or its run
    /// meanwhile, are left to be read again). Outcomes the store refused are
    /// kept for the next try; the wait before it is returned.
    async fn record(&mut self, outcomes: Vec<Outcome>) -> Option<Duration> {
        let now = Utc::now();
        let mut plans = Vec::with_capacity(outcomes.len());
        let mut planned = Vec::with_capacity(outcomes.len());
        let mut refusal: Option<StoreError> = None;
        let mut answers = Vec::new();
        // A replica's change that frees a slot holds its SOP until it is
        // committed, so it cannot wait for the rest of the round.
        let one_at_a_time = self.dispatcher.shares_admission();
        for outcome in outcomes {
            match self.plan(&outcome, now).await {
                Ok(plan) if one_at_a_time => {
                    let answer = self.dispatcher.commit_all(vec![plan]).await.pop().expect("one answer per change");
                    answers.push((outcome, answer));
                }
                Ok(plan) => {
                    plans.push(plan);
                    planned.push(outcome);
                }
                Err(e) => self.not_recorded(outcome, e, &mut refusal),
            }
        }
        answers.extend(planned.into_iter().zip(self.dispatcher.commit_all(plans).await));
        let mut counts = RoundCounts::default();
        let mut cause = None;
        for (outcome, answer) in answers {
            if let Err(e) = answer {
                self.not_recorded(outcome, e, &mut refusal);
                continue;
            }
            match &outcome.attempt {
                Attempt::Delivered => counts.delivered += 1,
                Attempt::Failed(error) => {
                    counts.failed += 1;
                    if self.gives_up(&outcome.entry) {
                        counts.dead_letters += 1;
                        metrics::counter!("fanin_outbox_dead_letters_total", "destination" => self.name).increment(1);
                        tracing::debug!(envelope = %outcome.entry.id, run_id = %outcome.entry.run_id, %error,
                            "outbox: dead letter");
                    }
                    cause = Some(error.clone());
                }
                Attempt::Unsendable(error) => {
                    counts.dead_letters += 1;
                    metrics::counter!("fanin_outbox_dead_letters_total", "destination" => self.name).increment(1);
                    tracing::warn!(envelope = %outcome.entry.id, run_id = %outcome.entry.run_id, %error,
                        "outbox: dead letter, the entry cannot be sent");
                }
                Attempt::Retire(_) => {}
            }
        }
        self.tell(counts, cause.as_deref(), now);
        match refusal {
            None => {
                self.store_answered();
                None
            }
            Some(e) => Some(self.store_refused(&e)),
        }
    }

    /// An outcome that was not recorded: kept when the store refused, else
    /// (the entry or its run moved meanwhile) left to the next read.
    fn not_recorded(&mut self, outcome: Outcome, e: DispatchError, refusal: &mut Option<StoreError>) {
        match e {
            DispatchError::Store(e @ StoreError::Unavailable(_)) => {
                refusal.get_or_insert(e);
                self.unrecorded.push(outcome);
            }
            other => tracing::debug!(envelope = %outcome.entry.id, error = %other,
                "outbox: outcome not recorded (the entry or its run moved meanwhile); it is read again"),
        }
    }

    /// The writes an outcome needs: through the dispatcher for a running
    /// run (it completes or fails, and may free a slot), plain outbox writes
    /// otherwise.
    async fn plan(&self, outcome: &Outcome, now: DateTime<Utc>) -> Result<Prepared, DispatchError> {
        let entry = &outcome.entry;
        let running = entry.run.as_ref().filter(|r| r.status == RunStatus::Running);
        let attempts = entry.attempts + 1;
        let id = entry.id.clone();
        let writes = match (&outcome.attempt, running) {
            (Attempt::Retire(why), _) => {
                vec![Write::DeadLetter { id, attempts: entry.attempts, error: why.clone(), at: now }]
            }
            (Attempt::Delivered, Some(run)) => {
                let input = RunInput::Delivered { envelope_id: id, attempts };
                return self.dispatcher.prepare(run.clone(), input, now).await;
            }
            // A dead letter retried after its run failed: it arrives, and
            // the run's record keeps saying how it ended.
            (Attempt::Delivered, None) => vec![
                Write::Delivered { id: id.clone(), attempts, at: now },
                Write::Audit(NewAudit {
                    at: now,
                    kind: AuditKind::EnvelopeDelivered,
                    run_id: Some(entry.run_id.clone()),
                    sop: None,
                    detail: json!({"envelope_id": id, "attempts": attempts, "after_dead_letter": true}),
                }),
            ],
            (Attempt::Unsendable(error), Some(run)) => {
                let input =
                    RunInput::DeliveryFailed { envelope_id: id, attempts: entry.attempts, error: error.clone() };
                return self.dispatcher.prepare(run.clone(), input, now).await;
            }
            (Attempt::Unsendable(error), None) => {
                vec![Write::DeadLetter { id, attempts: entry.attempts, error: error.clone(), at: now }]
            }
            (Attempt::Failed(error), Some(run)) if self.gives_up(entry) => {
                let input = RunInput::DeliveryFailed { envelope_id: id, attempts, error: error.clone() };
                return self.dispatcher.prepare(run.clone(), input, now).await;
            }
            (Attempt::Failed(error), None) if self.gives_up(entry) => {
                vec![Write::DeadLetter { id, attempts, error: error.clone(), at: now }]
            }
            (Attempt::Failed(error), _) => {
                let next_attempt_at = now + self.backoff(entry.attempts);
                let detail = json!({"envelope_id": id, "attempts": attempts, "error": error, "next_attempt_at": next_attempt_at});
                vec![
                    Write::Reschedule { id, attempts, next_attempt_at, error: error.clone() },
                    Write::Audit(NewAudit {
                        at: now,
                        kind: AuditKind::EnvelopeAttemptFailed,
                        run_id: Some(entry.run_id.clone()),
                        sop: None,
                        detail,
                    }),
                ]
            }
        };
        Ok(Prepared::writes(writes))
    }

    /// Whether a failed attempt at `entry` was its last.
    fn gives_up(&self, entry: &DueEntry) -> bool {
        entry.attempts + 1 >= self.policy.max_attempts
    }

    /// The wait after `failures` failed attempts.
    fn backoff(&self, failures: u32) -> chrono::Duration {
        let initial = Duration::from_millis(self.policy.backoff_initial_ms);
        let cap = Duration::from_secs(self.policy.backoff_cap_secs);
        let wait = Backoff::nth(initial, cap, failures, rand::random::<f64>());
        chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
    }

    /// Logs what a round changed for this destination, and publishes it.
    fn tell(&mut self, counts: RoundCounts, cause: Option<&str>, now: DateTime<Utc>) {
        let Some(notice) = self.log.round(counts, cause, now) else { return };
        let name = self.name;
        match notice {
            DestinationNotice::Failing { cause, failed_attempts, dead_letters } => {
                tracing::warn!(
                    destination = name,
                    failed_attempts,
                    dead_letters,
                    "outbox: deliveries to \
                    [destinations.{name}] are failing: {cause}"
                )
            }
            DestinationNotice::StillFailing { cause, failed_attempts, dead_letters, since } => {
                tracing::warn!(destination = name, failed_attempts, dead_letters, %since, "outbox: deliveries to \
                    [destinations.{name}] are still failing ({failed_attempts} more failed attempts): {cause}")
            }
            DestinationNotice::Recovered { since, failed_attempts } => {
                tracing::info!(destination = name, failed_attempts, %since, "outbox: deliveries to \
                    [destinations.{name}] succeed again")
            }
        }
        self.status.set_failing(name, self.log.failing());
    }

    fn store_answered(&mut self) {
        if let Some(StoreNotice::Recovered { since, failures }) = self.trouble.succeeded() {
            tracing::info!(destination = self.name, failures, %since, "outbox: the store answers again");
        }
    }

    /// The wait before trying the store again.
    fn store_refused(&mut self, e: &StoreError) -> Duration {
        let (wait, notice) = self.trouble.failed(&e.to_string(), Utc::now(), rand::random::<f64>());
        if let Some(StoreNotice::Failing { reason }) = notice {
            tracing::warn!(
                destination = self.name,
                "outbox: the store refuses the worker ({reason}); trying again \
                with growing waits, up to {:?}",
                notices::STORE_RETRY_CAP
            );
        }
        wait
    }
}

/// Sleeps `wait`; false if shutdown came first.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

async fn sleep_or_forever(wait: Duration) {
    match tokio::time::Instant::now().checked_add(wait) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::dispatch::{Catalog, DispatchReport, DispatchSettings};
    use crate::event::{Event, Payload, Source};
    use crate::sop::test_support::sop_with;
    use crate::sop::TriggerSpec;
    use crate::store::faults::FaultyStore;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Store, WriteState};
    use crate::test_support::eventually;

    /// A destination that accepts everything and counts it.
    async fn destination() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/in", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let app = axum::Router::new().fallback(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        faulty: Arc<FaultyStore>,
        dispatcher: Arc<Dispatcher>,
        delivery: Arc<DeliveryStatus>,
        config: Config,
    }

    impl Fixture {
        /// The outbox worker over the fixture's store, for `config`.
        fn start(&self, config: &Config, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
            start(
                config,
                self.dispatcher.clone(),
                self.faulty.clone(),
                &Tallies::default(),
                self.delivery.clone(),
                None,
                shutdown.clone(),
            )
        }
    }

    /// A stepless agent SOP on `/sop/notify` (one envelope per run), its
    /// store behind a [`FaultyStore`], and `[destinations.agent]` = `url`.
    async fn fixture(url: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("fanin.db")).unwrap());
        let faulty = Arc::new(FaultyStore::new(sqlite));
        let mut notify = sop_with("notify", vec![TriggerSpec::Webhook { path: "/sop/notify".into() }]);
        notify.max_concurrent = 10;
        let settings = DispatchSettings::for_tests(10);
        let store: Arc<dyn Store> = faulty.clone();
        let dispatcher = Arc::new(Dispatcher::new(Catalog::new(vec![notify]), store, settings).await.unwrap());
        let mut config = Config::default();
        config.destinations.agent = Some(DestinationConfig { url: url.into(), bearer_token: String::new() });
        Fixture { _dir: dir, faulty, dispatcher, delivery: Default::default(), config }
    }

    /// Starts a run, whose envelope is queued in the same commit.
    async fn queue_one(dispatcher: &Dispatcher) -> String {
        let event = Event::new(
            crate::ids::fresh(),
            Source::SopWebhook,
            "/sop/notify",
            Payload::Json(json!({"n": 1})),
            Utc::now(),
        );
        match dispatcher.dispatch(event).await.unwrap() {
            DispatchReport::Accepted { outcomes, .. } => outcomes[0].run_id.clone().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    async fn completed(store: &dyn Store, run_id: &str) -> bool {
        store.get_run(run_id).await.unwrap().is_some_and(|r| r.status == RunStatus::Completed)
    }

    /// The least the first `n` waits after refusals add up to: each is at
    /// least half its base, and the base doubles from the first.
    fn least_backoff(n: u32) -> Duration {
        (0..n).map(|i| notices::STORE_RETRY_FIRST * 2u32.pow(i) / 2).sum()
    }

    #[tokio::test]
    async fn refused_bookkeeping_is_retried_with_growing_waits_without_sending_again() {
        let (url, seen) = destination().await;
        let f = fixture(&url).await;
        let run = queue_one(&f.dispatcher).await;
        f.faulty.refuse_next_commits(3);
        let started = Instant::now();
        let shutdown = CancellationToken::new();
        let tasks = f.start(&f.config, &shutdown);

        let inner = f.faulty.inner().clone();
        eventually("the run to complete", || completed(inner.as_ref(), &run)).await;
        assert!(
            started.elapsed() >= least_backoff(3),
            "three refusals took {:?}: no growing wait between tries",
            started.elapsed()
        );
        assert_eq!(f.faulty.refusals_left(), 0);
        assert_eq!(seen.load(Ordering::SeqCst), 1, "the outcome was kept and recorded again, not the attempt repeated");
        assert_eq!(inner.watch().write_state(), WriteState::Ok, "the store's writes succeed again");
        assert_eq!(inner.watch().outbox_pending(), 0);
        shutdown.cancel();
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_read_is_tried_again_with_growing_waits() {
        let (url, seen) = destination().await;
        let f = fixture(&url).await;
        let run = queue_one(&f.dispatcher).await;
        f.faulty.set_down(true);
        let started = Instant::now();
        let shutdown = CancellationToken::new();
        let tasks = f.start(&f.config, &shutdown);

        eventually("four refused reads", || async { f.faulty.refused() >= 4 }).await;
        assert!(started.elapsed() >= least_backoff(3), "four reads in {:?}: a busy loop", started.elapsed());
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        f.faulty.set_down(false);
        let inner = f.faulty.inner().clone();
        eventually("the run to complete", || completed(inner.as_ref(), &run)).await;
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_round_records_every_outcome_and_failures_keep_their_cause() {
        let (url, seen) = destination().await;
        let f = fixture(&url).await;
        let runs = [queue_one(&f.dispatcher).await, queue_one(&f.dispatcher).await, queue_one(&f.dispatcher).await];
        // Nobody listens on this port: connections are refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut config = f.config.clone();
        config.destinations.agent =
            Some(DestinationConfig { url: format!("http://{closed}/in"), bearer_token: String::new() });
        let shutdown = CancellationToken::new();
        let tasks = f.start(&config, &shutdown);
        let store = f.faulty.inner().clone();
        eventually("three failed attempts recorded", || async {
            let entries = store.outbox_list(None, 0).await.unwrap();
            entries.iter().all(|e| e.attempts >= 1)
        })
        .await;
        for entry in store.outbox_list(None, 0).await.unwrap() {
            let error = entry.last_error.unwrap();
            assert!(error.to_lowercase().contains("connection refused"), "the cause chain is kept: {error}");
        }
        let status = f.delivery.snapshot()["agent"].clone();
        let failing = status.failing.expect("the destination is failing");
        assert!(failing.failed_attempts >= 3 && failing.cause.to_lowercase().contains("connection refused"));
        shutdown.cancel();
        for task in tasks {
            task.await.unwrap();
        }

        // The destination comes back: one round delivers all three.
        let shutdown = CancellationToken::new();
        let tasks = f.start(&f.config, &shutdown);
        for run in &runs {
            eventually("the run to complete", || completed(store.as_ref(), run)).await;
        }
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        assert_eq!(f.delivery.snapshot()["agent"].failing, None);
        shutdown.cancel();
        for task in tasks {
            task.await.unwrap();
        }
    }
}
