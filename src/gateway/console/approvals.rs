//! The approvals page: runs waiting at a gate, oldest first, each with an
//! approve and a deny form. A decision is
//! [`operations::approvals::decide`](crate::operations::approvals::decide),
//! audited under the caller's identity as the admin API audits it.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde_json::Value;

use super::csrf::Session;
use super::runs::encode;
use super::{after_post, csrf_field, filled, page, posted, time, AppState, ConsoleAccess, Nav, Path, Refusal};
use crate::operations::approvals::{self, Decision, DecisionRequest};

pub async fn list(State(state): State<AppState>, access: ConsoleAccess) -> Result<Response, Refusal> {
    let session = access.session;
    let catalog = state.dispatcher.catalog();
    let pending = approvals::pending(state.store.as_ref(), Some(&catalog)).await?;
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let body = html! {
        table {
            thead { tr { th { "run" } th { "SOP" } th { "step" } th { "waiting since" } th { "decide" } } }
            tbody {
                @for p in &pending {
                    @let run_id = p["run_id"].as_str().unwrap_or_default();
                    tr {
                        td { a href={ "/ui/runs/" (run_id) } { code { (run_id) } } }
                        td { (text(&p["sop"])) }
                        td {
                            (text(&p["step"]))
                            @if let Some(total) = p["total_steps"].as_u64().filter(|t| *t > 0) { " of " (total) }
                            @if let Some(title) = p["title"].as_str() { ": " (title) }
                        }
                        td { (when(&p["waiting_since"])) }
                        td { (forms(&session, run_id)) }
                    }
                }
                @if pending.is_empty() { tr { td colspan="5" .muted { "nothing waits for an approval" } } }
            }
        }
    };
    Ok(page(&session, Nav::Approvals, "Approvals", body))
}

/// A time as the operation gives it, as the console shows times.
fn when(value: &Value) -> String {
    match serde_json::from_value::<DateTime<Utc>>(value.clone()) {
        Ok(at) => time(at),
        Err(_) => value.as_str().unwrap_or_default().to_string(),
    }
}

/// The approve and deny forms of one run.
pub(super) fn forms(session: &Session, run_id: &str) -> Markup {
    let action = |what: &str| format!("/ui/approvals/{}/{what}", encode(run_id));
    html! {
        form.inline method="post" action=(action("approve")) {
            (csrf_field(session))
            input name="reason" placeholder="reason (optional)";
            button type="submit" { "Approve" }
        }
        form.inline method="post" action=(action("deny")) {
            (csrf_field(session))
            input name="reason" placeholder="reason";
            button.danger type="submit" { "Deny" }
        }
    }
}

pub async fn approve(
    State(state): State<AppState>,
    access: ConsoleAccess,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Body,
) -> Result<Response, Refusal> {
    decide(&state, access, &headers, run_id, body, Decision::Approve).await
}

pub async fn deny(
    State(state): State<AppState>,
    access: ConsoleAccess,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Body,
) -> Result<Response, Refusal> {
    decide(&state, access, &headers, run_id, body, Decision::Deny).await
}

async fn decide(
    state: &AppState,
    ConsoleAccess { by, .. }: ConsoleAccess,
    headers: &HeaderMap,
    run_id: String,
    body: Body,
    decision: Decision,
) -> Result<Response, Refusal> {
    let fields = posted(state, headers, body).await?;
    let request = DecisionRequest { run_id: run_id.clone(), reason: filled(&fields, "reason").map(str::to_string) };
    approvals::decide(&state.dispatcher, state.store.as_ref(), decision, request, by, Utc::now()).await?;
    Ok(after_post(&format!("/ui/runs/{}", encode(&run_id))))
}
