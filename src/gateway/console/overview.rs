//! The overview page: each source's state as `/ready` knows it, the store,
//! runs by status, the outbox depth and what waits for an operator or an
//! agent, each with a link to the page that lists it.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{page, status_class, time, AppState, ConsoleAccess, Nav, Refusal};
use crate::event::Source;
use crate::operations::OpError;
use crate::runs::RunStatus;
use crate::store::{RunQuery, WriteState};

/// Runs counted per status at most; past it the page says "N+".
const COUNTED: usize = 1000;

pub async fn show(State(state): State<AppState>, access: ConsoleAccess) -> Result<Response, Refusal> {
    let session = access.session;
    let mut by_status = Vec::new();
    for status in RunStatus::ALL {
        let query = RunQuery { sop: None, status: Some(status), limit: COUNTED + 1, ..Default::default() };
        let n = state.store.list_runs(&query).await.map_err(OpError::store)?.len();
        by_status.push((status, if n > COUNTED { format!("{COUNTED}+") } else { n.to_string() }));
    }
    let count = |wanted: RunStatus| by_status.iter().find(|(s, _)| *s == wanted).map(|(_, n)| n.clone());
    let watch = state.store.watch();
    let store_state = match watch.write_state() {
        WriteState::Ok => "ok".to_string(),
        WriteState::Failing { reason, .. } => format!("failing: {reason}"),
    };
    let body = html! {
        div id="live" {
            div.cards {
                a.card href="/ui/approvals" { b { (watch.pending_approvals()) } "pending approvals" }
                a.card href="/ui/runs?status=waiting_agent" {
                    b { (count(RunStatus::WaitingAgent).unwrap_or_default()) } "runs waiting for the agent"
                }
                a.card href="/ui/outbox?status=pending" { b { (watch.outbox_pending()) } "envelopes in the outbox" }
                a.card href="/ui/outbox?status=dead" { b { "→" } "dead letters" }
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
