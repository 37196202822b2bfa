//! The outbox page: envelopes by status (dead letters first shown), each
//! with its attempts, next attempt and last error, and a retry form on a
//! dead letter ([`operations::outbox::retry`], as `fanin outbox retry`).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use super::super::admin::status_param;
use super::super::extract::Query;
use super::csrf::Session;
use super::runs::encode;
use super::{after_post, csrf_field, given, page, posted, status_class, time};
use super::{AppState, ConsoleAccess, Nav, Path, Refusal};
use crate::operations::{self, OpError};
use crate::store::{OutboxRecord, OutboxStatus};

/// Entries one page lists, oldest first.
const LISTED: usize = 500;

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    access: ConsoleAccess,
    Query(params): Query<ListParams>,
) -> Result<Response, Refusal> {
    let session = access.session;
    // Dead letters are what an operator comes here for; `all` lists every status.
    let wanted = match params.status.as_deref() {
        None => Some("dead"),
        Some("all") => None,
        Some(_) => given(&params.status),
    };
    let status = status_param(wanted, OutboxStatus::parse)?;
    let entries = state.store.outbox_list(status, LISTED).await.map_err(OpError::store)?;
    let shown = status.map(OutboxStatus::as_str).unwrap_or("all");
    let body = html! {
        p {
            @for s in ["dead", "pending", "delivered", "withdrawn", "all"] {
                @if s == shown { b { (s) } } @else { a href={ "/ui/outbox?status=" (s) } { (s) } }
                " "
            }
        }
        (table(&session, &entries))
    };
    Ok(page(&session, Nav::Outbox, "Outbox", body))
}

/// Envelopes as a table, with a retry form on each dead letter.
pub(super) fn table(session: &Session, entries: &[OutboxRecord]) -> Markup {
    html! {
        table {
            thead { tr {
                th { "envelope" } th { "run" } th { "destination" } th { "status" } th { "attempts" }
                th { "next attempt" } th { "last error" } th {}
            } }
            tbody {
                @for e in entries {
                    tr {
                        td { code { (e.id) } }
                        td { a href={ "/ui/runs/" (e.run_id) } { code { (e.run_id) } } }
                        td { (e.destination) }
                        td class=(status_class(e.status.as_str())) { (e.status.as_str()) }
                        td { (e.attempts) }
                        td { @if e.status == OutboxStatus::Pending { (time(e.next_attempt_at)) } }
                        td { (e.last_error.clone().unwrap_or_default()) }
                        td {
                            @if e.status == OutboxStatus::Dead {
                                form.inline method="post" action={ "/ui/outbox/" (encode(&e.id)) "/retry" } {
                                    (csrf_field(session))
                                    button type="submit" { "Retry" }
                                }
                            }
                        }
                    }
                }
                @if entries.is_empty() { tr { td colspan="8" .muted { "no envelopes" } } }
            }
        }
    }
}

/// `POST /ui/outbox/{id}/retry`: the dead letter is pending again and the
/// worker is woken, as through the admin API.
pub async fn retry(
    State(state): State<AppState>,
    _: ConsoleAccess,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, Refusal> {
    posted(&state, &headers, body).await?;
    operations::outbox::retry(state.store.as_ref(), &id, Utc::now()).await?;
    state.dispatcher.outbox_ready.notify_waiters();
    Ok(after_post("/ui/outbox"))
}
