//! The one shape of a source that reads a feed from a service it connects
//! out to (a mailbox, Telegram's `getUpdates`, Drive's changes): read the
//! stored cursor, receive, dispatch what arrived with the cursor moved past
//! it in the same commit, and on any failure show the source down with the
//! reason and try again after the shared backoff.
//!
//! The cursor is what makes a restart neither repeat nor skip: it moves only
//! in the commit that starts what was read past it (compare-and-set, so a
//! second writer of the same instance fails instead of skipping ahead), and
//! a session that fails before that commit reads the same items again next
//! time. A source's own dedupe key (`IdempotencyKey::of_source`) covers what
//! the cursor cannot: a service that hands the same item out twice.
//!
//! A source writes only its session: `run` owns the loop, the backoff, the
//! health and the log lines, so each source stays small.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use super::link::{self, LinkLog, Say};
use super::SourceContext;
use crate::backoff::Backoff;
use crate::dispatch::{DispatchError, DispatchReport, Refusal};
use crate::event::{Event, Payload, Source};
use crate::sources::health::Status;
use crate::store::{AuditKind, Batch, Cursor, NewAudit, StoreError, Write};

/// One instance of a source (`email:ops`): its name in `/ready`, in
/// metrics and as its cursor's key.
pub struct Feed {
    ctx: SourceContext,
    name: String,
    log: Mutex<LinkLog>,
}

/// Why a session ended. `retry_after` is the service's own word on when to
/// come back (a 429's `Retry-After`), which the backoff gives way to.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceError {
    pub reason: String,
    pub retry_after: Option<Duration>,
}

impl SourceError {
    pub fn new(reason: impl Into<String>) -> SourceError {
        SourceError { reason: reason.into(), retry_after: None }
    }

    pub fn retry_after(mut self, wait: Duration) -> SourceError {
        self.retry_after = Some(wait);
        self
    }
}

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> SourceError {
        SourceError::new(format!("store: {e}"))
    }
}

impl From<DispatchError> for SourceError {
    fn from(e: DispatchError) -> SourceError {
        SourceError::new(format!("dispatch: {e}"))
    }
}

impl Feed {
    pub fn new(ctx: &SourceContext, name: impl Into<String>) -> Feed {
        let name = name.into();
        ctx.health.set_status(&name, Status::Connecting, None);
        Feed { ctx: ctx.clone(), name, log: Mutex::new(LinkLog::default()) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ctx(&self) -> &SourceContext {
        &self.ctx
    }

    pub async fn cursor(&self) -> Result<Option<Cursor>, SourceError> {
        Ok(self.ctx.store.cursor(&self.name).await?)
    }

    /// A fresh event of this instance, received now, its client the
    /// instance's name.
    pub fn event(&self, source: Source, topic: impl Into<String>, payload: Payload) -> Event {
        let mut event = Event::new(crate::ids::fresh(), source, topic, payload, Utc::now());
        event.client = Some(self.name.clone());
        event
    }

    /// Dispatches `event` and moves the cursor from `from` to `to` in the
    /// same commit, whether the event starts runs, matches nothing or is a
    /// duplicate. Returns once both are durable.
    pub async fn deliver(&self, event: Event, from: Option<&str>, to: &str) -> Result<DispatchReport, SourceError> {
        self.deliver_with(event, vec![self.set_cursor(from, to)]).await
    }

    /// Dispatches `event` with `marks`, the source's own bookkeeping of
    /// where it is (a cursor, a file's state), in the same commit.
    pub async fn deliver_with(&self, event: Event, marks: Vec<Write>) -> Result<DispatchReport, SourceError> {
        let at = event.received_at;
        let report = self.ctx.dispatcher.dispatch_with(event, marks).await?;
        self.ctx.health.event_seen(&self.name, at);
        metrics::counter!("fanin_source_events_total", "source" => self.name.clone()).increment(1);
        Ok(report)
    }

    /// Audits an event the source will not dispatch (too large, a sender
    /// not allowed) and moves the cursor past it in the same commit.
    pub async fn refuse(&self, refusal: Refusal, from: Option<&str>, to: &str) -> Result<(), SourceError> {
        self.refuse_with(refusal, vec![self.set_cursor(from, to)]).await
    }

    /// Audits a refused event with `marks` in the same commit.
    pub async fn refuse_with(&self, refusal: Refusal, marks: Vec<Write>) -> Result<(), SourceError> {
        let at = refusal.received_at;
        self.ctx.dispatcher.refuse_with(refusal, marks).await?;
        self.ctx.health.event_seen(&self.name, at);
        Ok(())
    }

    /// Moves the cursor alone: nothing was read that starts anything (the
    /// first start, at the feed's current end; a page of changes no one
    /// listens for).
    pub async fn advance(&self, from: Option<&str>, to: &str) -> Result<(), SourceError> {
        let batch = Batch { idempotency: None, writes: vec![self.set_cursor(from, to)] };
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// An audit record about the instance itself (`source_reset`); the
    /// detail gains `source`, the instance's name.
    pub async fn audit(&self, kind: AuditKind, mut detail: Value) -> Result<(), SourceError> {
        if let Value::Object(fields) = &mut detail {
            fields.insert("source".into(), Value::String(self.name.clone()));
        }
        let record = NewAudit { at: Utc::now(), kind, run_id: None, sop: None, detail };
        self.ctx.store.commit(Batch { idempotency: None, writes: vec![Write::Audit(record)] }).await?;
        Ok(())
    }

    fn set_cursor(&self, from: Option<&str>, to: &str) -> Write {
        Write::SetCursor {
            source: self.name.clone(),
            from: from.map(str::to_string),
            to: to.to_string(),
            at: Utc::now(),
        }
    }

    /// Trying to reach the service (`why`: what it is doing, if worth saying).
    pub fn connecting(&self, why: Option<&str>) {
        self.ctx.health.set_status(&self.name, Status::Connecting, why.map(str::to_string));
    }

    /// The service answered: the source hears.
    pub fn up(&self) {
        self.ctx.health.set_status(&self.name, Status::Up, None);
        if self.log.lock().expect("link log").connected() == Say::Loud {
            tracing::info!(source = %self.name, "connected");
        }
    }

    /// A poll (or an IDLE round) was answered, whether or not it brought
    /// anything.
    pub fn polled(&self) {
        self.ctx.health.update(&self.name, |s| s.last_poll_at = Some(Utc::now()));
    }

    fn down(&self, reason: &str) {
        self.ctx.health.update(&self.name, |s| {
            s.status = Status::Down;
            s.detail = Some(reason.to_string());
            s.reconnects += 1;
        });
        if self.log.lock().expect("link log").lost(reason) == Say::Loud {
            tracing::warn!(source = %self.name, "cannot hear: {reason}; retrying with backoff");
        }
    }
}

/// Runs `session` until shutdown. A source starts it under
/// [`super::singleton`], with a fresh [`Feed`] each time this replica takes
/// the duty on, so only one replica reads a feed at a time. A session returns only when it fails (or
/// at shutdown, which is also watched here); a failure shows the instance
/// down with the reason, waits the backoff (or the service's
/// `retry_after`, whichever is longer) and starts a new session.
pub async fn run(feed: Feed, mut session: impl AsyncFnMut(&Feed) -> Result<(), SourceError>) {
    let shutdown = feed.ctx.shutdown.clone();
    let mut backoff = Backoff::new(link::INITIAL, link::CAP);
    loop {
        let started = Instant::now();
        let ended = tokio::select! {
            ended = session(&feed) => ended,
            () = shutdown.cancelled() => return,
        };
        let Err(error) = ended else { return };
        if started.elapsed() >= link::STABLE_AFTER {
            backoff.reset();
        }
        feed.down(&error.reason);
        let wait = backoff.next_delay(rand::random::<f64>()).max(error.retry_after.unwrap_or_default());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        // Still down, with its reason, until the next session says `up`.
    }
}
