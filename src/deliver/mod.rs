//! The outbox worker: delivers queued envelopes to the Executor and the
//! Agent, at least once, in order per run (DESIGN §7).
//!
//! Envelopes are written to the outbox in the same commit as the transition
//! that produced them, so nothing queued is lost by a crash; this task only
//! moves them on. Each attempt POSTs the envelope with `Content-Type:
//! application/json`, `Idempotency-Key: <envelope id>` (the same on every
//! attempt, so a destination can drop repeats) and the destination's bearer
//! token. A 2xx completes the run; anything else is retried with capped
//! exponential backoff (`[delivery]`), and after `max_attempts` the envelope
//! becomes a dead letter — kept, listed by `fanin outbox list`, retried by
//! `fanin outbox retry` — and its run fails. Every outcome is audited.
//!
//! A dead letter retried with `fanin outbox retry` is sent again even though
//! its run has failed; if it arrives, that is audited and the run keeps its
//! failed record. Envelopes of a cancelled run are never sent.
//!
//! An entry that cannot be sent at all, because its stored envelope (or
//! its run) cannot be read back, is dead-lettered at once with the reason,
//! and the rest go on.
//!
//! An envelope for a destination that is not configured waits (attempts
//! are not spent) and is retried at the backoff cap: configuring the
//! destination and restarting delivers it.
//!
//! The task sleeps until the earliest due entry or until the dispatcher
//! says something was queued; it does not poll.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Config, DeliveryConfig, DestinationConfig};
use crate::dispatch::{DispatchError, Dispatcher, RunInput};
use crate::runs::RunStatus;
use crate::store::{unreadable_reason, AuditKind, Batch, NewAudit, OutboxRecord, StoreError, Write};
use serde_json::json;

/// How many entries one round sends at once (different runs, so order per
/// run is unaffected).
const ROUND: usize = 32;

/// Where envelopes go, from `[destinations.*]`.
struct Target {
    url: String,
    bearer_token: String,
}

pub struct Worker {
    dispatcher: Arc<Dispatcher>,
    agent: Option<Target>,
    executor: Option<Target>,
    policy: DeliveryConfig,
    http: reqwest::Client,
}

/// Starts the worker.
pub fn start(config: &Config, dispatcher: Arc<Dispatcher>, shutdown: CancellationToken) -> JoinHandle<()> {
    let target = |d: &Option<DestinationConfig>| {
        d.as_ref().map(|d| Target { url: d.url.clone(), bearer_token: d.bearer_token.clone() })
    };
    let worker = Worker {
        dispatcher,
        agent: target(&config.destinations.agent),
        executor: target(&config.destinations.executor),
        policy: config.delivery.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(config.gateway.request_timeout_secs))
            .build()
            .expect("HTTP client with default TLS roots"),
    };
    tokio::spawn(worker.run(shutdown))
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Failed(String),
    /// No such destination is configured: wait without spending attempts.
    NoDestination(&'static str),
}

impl Worker {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            // Armed before looking, so a queueing in between is not missed.
            let queued = self.dispatcher.outbox_ready.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();

            let now = Utc::now();
            let due = match self.dispatcher.store().outbox_due(now, ROUND).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: cannot read the store; retrying");
                    Vec::new()
                }
            };
            if !due.is_empty() {
                futures_util::future::join_all(due.into_iter().map(|entry| self.deliver(entry))).await;
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            let wait = match self.dispatcher.store().outbox_next_due().await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => Duration::MAX,
                Err(_) => Duration::from_secs(1),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut queued => {}
                _ = sleep_or_forever(wait) => {}
            }
        }
    }

    /// One attempt at one entry, and its bookkeeping.
    async fn deliver(&self, entry: OutboxRecord) {
        let run = match self.dispatcher.store().get_run(&entry.run_id).await {
            Ok(run) => run,
            Err(StoreError::Invalid(e)) => return self.retire(&entry, format!("its run cannot be read: {e}")).await,
            Err(e) => return tracing::warn!(envelope = %entry.id, error = %e, "outbox: cannot read its run"),
        };
        let run_status = run.as_ref().map(|r| r.status);
        if matches!(run_status, None | Some(RunStatus::Cancelled)) {
            // The run was cancelled by an operator: its envelope must not go
            // out any more.
            let why = run.map_or("its run is gone".to_string(), |r| format!("its run is {}", r.status));
            return self.retire(&entry, why).await;
        }
        if let Some(reason) = unreadable_reason(&entry.envelope) {
            // Every attempt would fail the same way: it is the last one now.
            let error = format!("the stored envelope cannot be read ({reason})");
            tracing::warn!(envelope = %entry.id, run_id = %entry.run_id, %error, "outbox: dead letter");
            metrics::counter!("fanin_outbox_dead_total", "destination" => entry.destination.clone()).increment(1);
            if run_status != Some(RunStatus::Running) {
                return self.retire(&entry, error).await;
            }
            let input = RunInput::DeliveryFailed { envelope_id: entry.id.clone(), attempts: entry.attempts, error };
            if let Err(e) = self.dispatcher.advance(&entry.run_id, input, Utc::now()).await {
                tracing::warn!(envelope = %entry.id, error = %e, "outbox: cannot retire an envelope");
            }
            return;
        }
        let attempt = self.attempt(&entry).await;
        let now = Utc::now();
        let attempts = entry.attempts + 1;
        let result = match attempt {
            Attempt::Delivered => {
                metrics::counter!("fanin_outbox_delivered_total", "destination" => entry.destination.clone())
                    .increment(1);
                if run_status == Some(RunStatus::Running) {
                    let input = RunInput::Delivered { envelope_id: entry.id.clone(), attempts };
                    self.dispatcher.advance(&entry.run_id, input, now).await.map(|_| ())
                } else {
                    // A dead letter retried after its run failed: it arrives,
                    // and the run's record keeps saying how it ended.
                    self.record_late_delivery(&entry, attempts, now).await
                }
            }
            Attempt::Failed(error)
                if attempts >= self.policy.max_attempts && run_status != Some(RunStatus::Running) =>
            {
                let write = Write::DeadLetter { id: entry.id.clone(), attempts, error, at: now };
                self.dispatcher
                    .store()
                    .commit(Batch { idempotency: None, writes: vec![write] })
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
            Attempt::Failed(error) if attempts >= self.policy.max_attempts => {
                tracing::warn!(envelope = %entry.id, run_id = %entry.run_id, %error, attempts, "outbox: dead letter");
                metrics::counter!("fanin_outbox_dead_total", "destination" => entry.destination.clone()).increment(1);
                let input = RunInput::DeliveryFailed { envelope_id: entry.id.clone(), attempts, error };
                self.dispatcher.advance(&entry.run_id, input, now).await.map(|_| ())
            }
            Attempt::Failed(error) => {
                tracing::debug!(envelope = %entry.id, %error, attempts, "outbox: attempt failed");
                let next = now + self.backoff(entry.attempts);
                self.reschedule(&entry, attempts, next, error).await
            }
            Attempt::NoDestination(name) => {
                if entry.attempts == 0 && entry.last_error.is_none() {
                    tracing::warn!(envelope = %entry.id, "outbox: no [destinations.{name}] configured; the envelope waits");
                }
                let next = now + chrono::Duration::seconds(self.policy.backoff_cap_secs as i64);
                let error = format!("no [destinations.{name}] configured");
                self.reschedule(&entry, entry.attempts, next, error).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(envelope = %entry.id, error = %e, "outbox: outcome not recorded; the attempt will repeat");
        }
    }

    /// Dead-letters an entry that must not or cannot be sent, its run left
    /// as it is.
    async fn retire(&self, entry: &OutboxRecord, why: String) {
        let write = Write::DeadLetter { id: entry.id.clone(), attempts: entry.attempts, error: why, at: Utc::now() };
        if let Err(e) = self.dispatcher.store().commit(Batch { idempotency: None, writes: vec![write] }).await {
            tracing::warn!(envelope = %entry.id, error = %e, "outbox: cannot retire an envelope");
        }
    }

    async fn attempt(&self, entry: &OutboxRecord) -> Attempt {
        let (target, name) = match entry.destination.as_str() {
            "executor" => (&self.executor, "executor"),
            _ => (&self.agent, "agent"),
        };
        let Some(target) = target else { return Attempt::NoDestination(name) };
        let mut request = self.http.post(&target.url).header("Idempotency-Key", &entry.id).json(&entry.envelope);
        if !target.bearer_token.is_empty() {
            request = request.bearer_auth(&target.bearer_token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => Attempt::Failed(format!("HTTP {}", response.status().as_u16())),
            Err(e) => Attempt::Failed(e.without_url().to_string()),
        }
    }

    async fn record_late_delivery(
        &self,
        entry: &OutboxRecord,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<(), DispatchError> {
        let writes = vec![
            Write::Delivered { id: entry.id.clone(), attempts, at: now },
            Write::Audit(NewAudit {
                at: now,
                kind: AuditKind::EnvelopeDelivered,
                run_id: Some(entry.run_id.clone()),
                sop: None,
                detail: json!({"envelope_id": entry.id, "attempts": attempts, "after_dead_letter": true}),
            }),
        ];
        self.dispatcher.store().commit(Batch { idempotency: None, writes }).await?;
        Ok(())
    }

    async fn reschedule(
        &self,
        entry: &OutboxRecord,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: String,
    ) -> Result<(), DispatchError> {
        let write = Write::Reschedule { id: entry.id.clone(), attempts, next_attempt_at, error };
        self.dispatcher.store().commit(Batch { idempotency: None, writes: vec![write] }).await?;
        Ok(())
    }

    /// The wait after `failures` failed attempts.
    fn backoff(&self, failures: u32) -> chrono::Duration {
        let initial = Duration::from_millis(self.policy.backoff_initial_ms);
        let cap = Duration::from_secs(self.policy.backoff_cap_secs);
        let wait = Backoff::nth(initial, cap, failures, rand::random::<f64>());
        chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
    }
}

async fn sleep_or_forever(wait: Duration) {
    match tokio::time::Instant::now().checked_add(wait) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
