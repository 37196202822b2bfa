//! The agent loop API (docs/operations.md#agent-loop): agents lease ExecuteSteps and report
//! them. fanin never executes a step; it only hands steps out, one at a
//! time, and moves the run on when the agent reports.
//!
//! Both routes are authenticated as `/sop/*` is: rate limit, bearer token
//! (when `require_pairing`), `X-Webhook-Secret` (when set); with neither
//! layer configured they answer 401, since a step report moves a run on.
//!
//! - `GET /v1/agent/next?wait=S&lease_secs=L` leases the oldest pending
//!   step (or one whose lease expired). `wait` (default 0) long-polls: the
//!   request waits until a step becomes pending or `wait` seconds pass, then
//!   answers 204. It is capped at 60 s and below `request_timeout_secs`; a
//!   larger value is clamped, not refused. `lease_secs` (default 300, 1 to
//!   3600) is how long the agent has to report before the step is leasable
//!   again. 200 carries the run, the step, `lease_id`, `lease_expires_at`,
//!   `attempt` and the trigger event framed as untrusted text
//!   (see [`super::untrusted`]).
//! - `POST /v1/runs/{run_id}/steps/{n}` (`n` 1-based) with
//!   `{"status": "completed"|"failed", "output": any, "lease_id": "…"}`:
//!   `lease_id` is required, in the body, so a report is one self-contained
//!   JSON document an agent can log and replay. A report under a lease that
//!   expired is still taken as long as nobody leased the step since. 200
//!   `{"run_id","status","step","next_step"}`: `step` is `n`, `next_step` the
//!   number of the step the run waits at now (null once it is finished).
//!   409 `not_leased` when the step is not leased under that id, 409
//!   `conflict` when the run is not waiting for that step, 404
//!   `run_not_found`, 400 for a bad step number or body.
//!
//! A waiting poll wakes on the dispatcher's `step_ready` (a step became
//! pending, here or in another process on a shared store), at the expiry
//! of a lease this process granted, and at least every [`RECHECK`] (leases
//! granted by other replicas sharing the store).
//! A lease committed while its poller hung up is simply not answered: the
//! step is leasable again when the lease ends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::extract::{Path, Query};
use super::{untrusted, ApiError, AppState};
use crate::dispatch::{DispatchError, Lease, RunInput};
use crate::http::body::read_json;
use crate::runs::RunStatus;
use crate::sop::Sop;
use crate::store::StoreError;

pub const DEFAULT_LEASE_SECS: u64 = 300;
pub const MAX_LEASE_SECS: u64 = 3600;
pub const MAX_WAIT_SECS: u64 = 60;
/// A waiting poll looks at the store at least this often.
pub const RECHECK: Duration = Duration::from_secs(5);

/// The expiries of leases this process granted, soonest first, so waiting
/// polls wake when a step becomes leasable again.
#[derive(Default)]
pub struct LeaseClock {
    expiries: Mutex<BinaryHeap<Reverse<DateTime<Utc>>>>,
}

impl LeaseClock {
    pub fn granted(&self, until: DateTime<Utc>) {
        self.expiries.lock().expect("lease clock").push(Reverse(until));
    }

    /// The soonest expiry after `now`; forgets those already past.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut expiries = self.expiries.lock().expect("lease clock");
        while let Some(Reverse(at)) = expiries.peek().copied() {
            if at > now {
                return Some(at);
            }
            expiries.pop();
        }
        None
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NextParams {
    wait: Option<String>,
    lease_secs: Option<String>,
}

/// How long a poll waits and how long its lease lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollLimits {
    pub wait: Duration,
    pub lease: Duration,
}

/// Reads `wait` and `lease_secs`. The wait is clamped to leave a second of
/// the request timeout for the answer.
pub fn poll_limits(
    wait: Option<&str>,
    lease_secs: Option<&str>,
    request_timeout_secs: u64,
) -> Result<PollLimits, String> {
    let number = |name: &str, text: &str| {
        text.trim().parse::<u64>().map_err(|_| format!("{name} must be a whole number of seconds, got {text:?}"))
    };
    let wait = match wait {
        None => 0,
        Some(text) => number("wait", text)?,
    };
    let wait = wait.min(MAX_WAIT_SECS).min(request_timeout_secs.saturating_sub(1));
    let lease = match lease_secs {
        None => DEFAULT_LEASE_SECS,
        Some(text) => number("lease_secs", text)?,
    };
    if !(1..=MAX_LEASE_SECS).contains(&lease) {
        return Err(format!("lease_secs must be between 1 and {MAX_LEASE_SECS}, got {lease}"));
    }
    Ok(PollLimits { wait: Duration::from_secs(wait), lease: Duration::from_secs(lease) })
}

/// The agent-facing description of a leased step of `sop`.
pub fn lease_body(lease: &Lease, sop: &Sop, nonce: &str) -> Option<Value> {
    let index = lease.step.index;
    let step = sop.steps.get(index as usize)?;
    let mut step_json = serde_json::to_value(step).expect("a step serialises");
    step_json["number"] = json!(index + 1);
    step_json["index"] = json!(index);
    let trigger = crate::envelope::trigger_from_run(&lease.run);
    Some(json!({
        "run_id": lease.run.run_id,
        "sop": lease.run.sop,
        "sop_version": lease.run.sop_version,
        "step": step_json,
        "total_steps": sop.steps.len(),
        "lease_id": lease.step.lease_id,
        "lease_expires_at": lease.step.leased_until,
        "attempt": lease.step.attempts,
        "trigger": untrusted::frame_event(&trigger, nonce),
    }))
}

/// Rate limit, bearer, secret; and refuses outright when no authentication
/// is configured at all.
async fn admit(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<String, ApiError> {
    let caller = state.callers.admit(peer, headers).await?;
    if !state.callers.auth_configured() {
        return Err(ApiError::unauthorized());
    }
    Ok(caller)
}

fn bad_request(code: &str, detail: impl Into<Value>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code).with("detail", detail)
}

fn store_error(e: DispatchError) -> ApiError {
    tracing::error!(error = %e, "agent loop: store failed");
    ApiError::store_unavailable()
}

/// `GET /v1/agent/next`.
pub async fn next(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<NextParams>,
) -> Result<Response, ApiError> {
    admit(&state, peer, &headers).await?;
    let limits = poll_limits(params.wait.as_deref(), params.lease_secs.as_deref(), state.config.request_timeout_secs)
        .map_err(|detail| bad_request("invalid_query", detail))?;
    let lease_for = chrono::Duration::from_std(limits.lease).expect("lease fits");
    let deadline = Instant::now() + limits.wait;
    loop {
        // Registered before looking, so a step pended between the look and
        // the wait still wakes this poll.
        let notified = state.dispatcher.step_ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(body) = lease_one(&state, lease_for).await? {
            return Ok(Json(body).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let mut wake = deadline.min(now + RECHECK);
        let wall = Utc::now();
        if let Some(expiry) = state.lease_clock.next_after(wall) {
            wake = wake.min(now + (expiry - wall).to_std().unwrap_or_default());
        }
        let _waiting = Waiting::begin();
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Counts a poll in `fanin_agent_polls_waiting` while it waits between two
/// looks (registered for `step_ready`), until it looks again or its caller
/// hangs up: how many agents are attached and idle.
struct Waiting;

impl Waiting {
    fn begin() -> Waiting {
        metrics::gauge!("fanin_agent_polls_waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("fanin_agent_polls_waiting").decrement(1.0);
    }
}

/// Leases steps until one can be handed out; `None` when none is leasable.
async fn lease_one(state: &AppState, lease_for: chrono::Duration) -> Result<Option<Value>, ApiError> {
    // Bounded: each lease taken here makes that step unleasable for a while.
    for _ in 0..16 {
        let now = Utc::now();
        let Some(lease) = state.dispatcher.lease_next(lease_for, now).await.map_err(store_error)? else {
            return Ok(None);
        };
        if let Some(until) = lease.step.leased_until {
            state.lease_clock.granted(until);
        }
        let (run, index) = (&lease.run, lease.step.index);
        if run.status != RunStatus::WaitingAgent || run.step != index {
            // A step record left behind by a run that moved on (cancelled,
            // failed): nothing to do for it.
            tracing::warn!(run_id = %run.run_id, step = index + 1, status = %run.status,
                "agent loop: leased a step of a run that is not waiting for it; skipped");
            continue;
        }
        let catalog = state.dispatcher.catalog();
        match catalog.get(&run.sop).and_then(|sop| lease_body(&lease, sop, &untrusted::new_nonce())) {
            Some(body) => return Ok(Some(body)),
            None => fail_undescribable(state, &lease, now).await,
        }
    }
    Ok(None)
}

/// A step whose SOP is no longer loaded (or no longer has that step)
/// cannot be described to an agent: the run fails, audited, instead of
/// being handed out blind or leased again forever.
async fn fail_undescribable(state: &AppState, lease: &Lease, now: DateTime<Utc>) {
    let reason =
        format!("SOP {} no longer has step {}; it cannot be handed to an agent", lease.run.sop, lease.step.index + 1);
    tracing::error!(run_id = %lease.run.run_id, "{reason}");
    let input = RunInput::Finish { to: RunStatus::Failed, reason: Some(reason) };
    if let Err(e) = state.dispatcher.advance(&lease.run.run_id, input, now).await {
        tracing::error!(run_id = %lease.run.run_id, error = %e, "could not fail the run");
    }
}

/// The body of a step report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    pub status: ReportedStatus,
    #[serde(default)]
    pub output: Value,
    pub lease_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedStatus {
    Completed,
    Failed,
}

/// A 1-based step number from the path.
pub fn step_number(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("step must be a number from 1, got {text:?}")),
    }
}

pub fn parse_report(value: Value) -> Result<StepReport, String> {
    let report: StepReport = serde_json::from_value(value).map_err(|e| {
        format!("expected {{\"status\": \"completed\"|\"failed\", \"output\": …, \"lease_id\": \"…\"}}: {e}")
    })?;
    if report.lease_id.is_empty() {
        return Err("lease_id is empty".into());
    }
    Ok(report)
}

/// `POST /v1/runs/{run_id}/steps/{n}`.
pub async fn report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((run_id, n)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    admit(&state, peer, &headers).await?;
    let number = step_number(&n).map_err(|detail| bad_request("invalid_step", detail))?;
    let payload = read_json(body, &headers, &state.config).await?;
    let report = parse_report(payload.to_value()).map_err(|detail| bad_request("invalid_body", detail))?;
    let input = RunInput::StepDone {
        index: number - 1,
        lease_id: report.lease_id,
        completed: report.status == ReportedStatus::Completed,
        output: report.output,
    };
    let conflict = |code: &str, detail: String| {
        ApiError::new(StatusCode::CONFLICT, code)
            .with("run_id", run_id.as_str())
            .with("step", number)
            .with("detail", detail)
    };
    match state.dispatcher.advance(&run_id, input, Utc::now()).await {
        Ok(advanced) => {
            let next_step = (advanced.status == RunStatus::WaitingAgent || advanced.status == RunStatus::PendingApproval)
                .then_some(advanced.step + 1);
            Ok(Json(json!({"run_id": run_id, "status": advanced.status, "step": number, "next_step": next_step})))
        }
        Err(DispatchError::NoSuchRun(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "run_not_found").with("run_id", run_id.as_str()))
        }
        Err(DispatchError::Store(StoreError::Conflict(detail))) => Err(conflict(
            "not_leased",
            format!("step {number} is not leased under this lease_id (expired and taken again, or already reported): {detail}"),
        )),
        Err(e @ (DispatchError::Conflict(_) | DispatchError::InvalidTransition { .. })) => {
            Err(conflict("conflict", e.to_string()))
        }
        Err(e) => Err(store_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn poll_limits_default_clamp_and_refuse() {
        let secs = Duration::from_secs;
        let ok = |w, l, t| poll_limits(w, l, t).unwrap();
        assert_eq!(ok(None, None, 30), PollLimits { wait: secs(0), lease: secs(DEFAULT_LEASE_SECS) });
        assert_eq!(ok(Some("10"), Some("1"), 30), PollLimits { wait: secs(10), lease: secs(1) });
        assert_eq!(ok(Some("600"), None, 30).wait, secs(29), "below the request timeout");
        assert_eq!(ok(Some("600"), None, 300).wait, secs(MAX_WAIT_SECS));
        assert_eq!(ok(Some("5"), None, 1).wait, secs(0));
        for (w, l) in [(Some("-1"), None), (Some("soon"), None), (None, Some("0")), (None, Some("3601"))] {
            assert!(poll_limits(w, l, 30).is_err(), "{w:?} {l:?}");
        }
    }

    #[test]
    fn the_lease_clock_gives_the_soonest_future_expiry() {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let clock = LeaseClock::default();
        assert_eq!(clock.next_after(at(0)), None);
        for s in [30, 10, 20] {
            clock.granted(at(s));
        }
        assert_eq!(clock.next_after(at(0)), Some(at(10)));
        assert_eq!(clock.next_after(at(10)), Some(at(20)), "an expiry that passed is forgotten");
        assert_eq!(clock.next_after(at(31)), None);
    }

    fn lease_of(run_step: u32) -> Lease {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let run = crate::store::RunRecord {
            run_id: "run-1".into(),
            sop: "s".into(),
            sop_version: "1.2.0".into(),
            status: RunStatus::WaitingAgent,
            trigger_index: 0,
            trigger: "manual".into(),
            source: crate::event::Source::Manual,
            topic: "s".into(),
            event_id: "e1".into(),
            payload: json!({"note": "bell\u{7}"}),
            request: None,
            session: None,
            client: None,
            idempotency_key: None,
            started_at: at,
            updated_at: at,
            finished_at: None,
            coalesced: 0,
            step: run_step,
        };
        let step = crate::store::StepRecord {
            run_id: "run-1".into(),
            index: run_step,
            status: crate::store::StepStatus::Leased,
            lease_id: Some("lease-1".into()),
            leased_until: Some(at + chrono::Duration::seconds(300)),
            attempts: 2,
            output: None,
            created_at: at,
            updated_at: at,
        };
        Lease { run, step }
    }

    #[test]
    fn a_lease_describes_the_step_the_run_and_the_framed_trigger() {
        use crate::sop::{Step, StepKind, TriggerSpec};
        let mut sop = crate::sop::test_support::sop_with("s", vec![TriggerSpec::Manual]);
        sop.steps = (1..=2)
            .map(|n| Step {
                number: n,
                title: format!("Step {n}"),
                body: "do it".into(),
                tools: vec!["shell".into()],
                requires_confirmation: false,
                kind: (n == 2).then_some(StepKind::Tool),
                reference: (n == 2).then(|| "restart".to_string()),
                params: Default::default(),
                id: None,
            })
            .collect();
        let body = lease_body(&lease_of(1), &sop, "n0nce").unwrap();
        assert_eq!(body["run_id"], json!("run-1"));
        assert_eq!(body["sop_version"], json!("1.2.0"));
        assert_eq!(body["total_steps"], json!(2));
        assert_eq!((body["lease_id"].clone(), body["attempt"].clone()), (json!("lease-1"), json!(2)));
        let step = &body["step"];
        assert_eq!((step["number"].clone(), step["index"].clone()), (json!(2), json!(1)));
        assert_eq!((step["title"].clone(), step["tools"].clone()), (json!("Step 2"), json!(["shell"])));
        assert_eq!((step["type"].clone(), step["ref"].clone()), (json!("tool"), json!("restart")));
        let trigger = body["trigger"].as_str().unwrap();
        assert!(trigger.starts_with("<<<UNTRUSTED-EVENT n0nce>>>\n"), "{trigger}");
        assert!(trigger.ends_with("\n<<<END-UNTRUSTED-EVENT n0nce>>>"), "{trigger}");
        assert!(trigger.contains("bell") && !trigger.contains('\u{7}'), "{trigger}");
        assert_eq!(lease_body(&lease_of(2), &sop, "n"), None, "a step the SOP no longer has");
    }

    #[test]
    fn step_numbers_start_at_one() {
        assert_eq!(step_number("1"), Ok(1));
        assert_eq!(step_number("12"), Ok(12));
        for bad in ["0", "-1", "one", "", "4294967296"] {
            assert!(step_number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn step_reports_are_checked() {
        let ok = parse_report(json!({"status": "completed", "output": {"ok": true}, "lease_id": "l1"})).unwrap();
        assert_eq!(
            (ok.status, ok.output, ok.lease_id.as_str()),
            (ReportedStatus::Completed, json!({"ok": true}), "l1")
        );
        assert_eq!(parse_report(json!({"status": "failed", "lease_id": "l"})).unwrap().output, Value::Null);
        for bad in [
            json!({"status": "done", "lease_id": "l"}),
            json!({"status": "completed"}),
            json!({"status": "completed", "lease_id": ""}),
            json!({"status": "completed", "lease_id": "l", "leaseid": "x"}),
            json!(null),
        ] {
            assert!(parse_report(bad.clone()).is_err(), "{bad}");
        }
    }
}
