//! The overview page: each source's state as `/ready` knows it, the store,
//! runs per minute and by status, the outbox depth and what waits for an
//! operator or an agent, each with a link to the page that lists it. Its
//! counts are the store's, so every replica shows the same.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, DurationRound, Utc};
use maud::html;

use super::{page, status_class, time, AppState, ConsoleAccess, Nav, Refusal};
use crate::event::Source;
use crate::operations::OpError;
use crate::runs::RunStatus;
use crate::store::{OutboxStatus, WriteState};

/// The runs-per-minute chart covers this many minutes up to now.
const MINUTES: i64 = 60;

pub async fn show(State(state): State<AppState>, access: ConsoleAccess) -> Result<Response, Refusal> {
    let session = access.session;
    let store = state.store.as_ref();
    let by_status = store.run_counts().await.map_err(OpError::store)?;
    let now = Utc::now();
    let this_minute = now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now);
    let first = this_minute - chrono::Duration::minutes(MINUTES - 1);
    let mut per_minute = store.runs_per_minute(first).await.map_err(OpError::store)?;
    if per_minute.last().is_none_or(|(minute, _)| *minute < this_minute) {
        per_minute.push((this_minute, 0));
    }
    let peak = per_minute.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let pending_approvals = by_status.iter().find(|(s, _)| *s == RunStatus::PendingApproval).map_or(0, |(_, n)| *n);
    let agent_steps = store.agent_steps(0).await.map_err(OpError::store)?.len();
    let outbox_pending = store.count_outbox(Some(OutboxStatus::Pending)).await.map_err(OpError::store)?;
    let dead = store.count_outbox(Some(OutboxStatus::Dead)).await.map_err(OpError::store)?;
    let watch = state.store.watch();
    let store_state = match watch.write_state() {
        WriteState::Ok => "ok".to_string(),
        WriteState::Failing { reason, .. } => format!("failing: {reason}"),
    };
    let body = html! {
        div id="live" {
            div.cards {
                a.card href="/ui/approvals" { b { (pending_approvals) } "pending approvals" }
                a.card href="/ui/agent" { b { (agent_steps) } "agent steps waiting or leased" }
                a.card href="/ui/outbox?status=pending" { b { (outbox_pending) } "envelopes in the outbox" }
                a.card href="/ui/outbox?status=dead" { b { (dead) } "dead letters" }
            }
            h2 { "Sources" }
            table {
                thead { tr { th { "source" } th { "status" } th { "detail" } th { "reconnects" } th { "last event" } } }
                tbody {
                    @for (name, source) in state.health.snapshot() {
                        @let status = super::named(&source.status);
                        tr {
                            td {
                                @match Source::parse(name.split(':').next().unwrap_or(&name)) {
                                    Some(kind) => a href={ "/ui/runs?source=" (kind.as_str()) } { (name) },
                                    None => (name),
                                }
                                // The webhook listener also serves `/sop/*`, whose runs are `sop_webhook`'s.
                                @if name == Source::Webhook.as_str() {
                                    " · " a href={ "/ui/runs?source=" (Source::SopWebhook.as_str()) } { "/sop/*" }
                                }
                            }
                            td class=(status_class(&status)) { (status) }
                            td { (source.detail.unwrap_or_default()) }
                            td { (source.reconnects) }
                            td { (source.last_event_at.map(time).unwrap_or_else(|| "never".into())) }
                        }
                    }
                }
            }
            p {
                "Store (" (state.store.kind()) "): "
                span class=(status_class(if store_state == "ok" { "up" } else { "down" })) { (store_state) }
            }
            h2 { "Runs per minute" }
            p.muted { "The minutes of the last " (MINUTES) " (UTC) in which runs started, and this one; each links to its runs." }
            table.minutes {
                thead { tr { th { "minute" } th { "runs" } th {} } }
                tbody {
                    @for (minute, n) in &per_minute {
                        tr {
                            td { a href=(minute_link(*minute)) { (minute.format("%H:%M")) } }
                            td { (n) }
                            td { meter min="0" max=(peak) value=(n) {} }
                        }
                    }
                }
            }
            h2 { "Runs by status" }
            table {
                thead { tr { th { "status" } th { "runs" } } }
                tbody {
                    @for (status, n) in &by_status {
                        tr {
                            td class=(status_class(status.as_str())) {
                                a href={ "/ui/runs?status=" (status.as_str()) } { (status.as_str()) }
                            }
                            td { (n) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&session, Nav::Overview, "Overview", body))
}

/// The runs list of the minute starting at `minute`.
fn minute_link(minute: DateTime<Utc>) -> String {
    let end = minute + chrono::Duration::minutes(1);
    format!("/ui/runs?since={}&until={}", super::runs::time_param(minute), super::runs::time_param(end))
}
