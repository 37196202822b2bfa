//! The runs pages: the list (by status, SOP, source and start time,
//! newest first, a page at a time, with how many match) and one run's page (its trigger payload, audit
//! timeline with who decided, steps, envelopes with their attempts), with
//! the cancel form and, at a gate, the approve and deny forms.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::super::admin::status_param;
use super::super::extract::Query;
use super::csrf::Session;
use super::{after_post, csrf_field, filled, given, page, posted, pretty, status_class, time};
use super::{ApiError, AppState, ConsoleAccess, Nav, Path, Refusal};
use crate::event::Source;
use crate::operations::runs::CancelRequest;
use crate::operations::{self, Actor, Interface, OpError, Thing};
use crate::runs::RunStatus;
use crate::store::{AuditKind, AuditQuery, OutboxRecord, RunQuery, RunRecord, Store};

const PER_PAGE: usize = 50;

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    sop: Option<String>,
    source: Option<String>,
    /// Runs started at or after this (UTC).
    since: Option<String>,
    /// Runs started before this (UTC).
    until: Option<String>,
    page: Option<usize>,
}

/// How a time filter is written: as a `datetime-local` field sends it
/// (`2026-12-04T09:30`, seconds optional), read as UTC, or RFC 3339.
const TIME_PARAM: &str = "%Y-%m-%dT%H:%M";

/// `at` as the time filters write it.
pub(super) fn time_param(at: DateTime<Utc>) -> String {
    at.format(TIME_PARAM).to_string()
}

/// A time filter's value; `400 invalid_time` names the parameter.
fn parse_time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(text) = value else { return Ok(None) };
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for format in [TIME_PARAM, "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(at.and_utc()));
        }
    }
    Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_time")
        .with("parameter", name)
        .with("value", text)
        .with("detail", "expected YYYY-MM-DDTHH:MM (UTC) or an RFC 3339 time"))
}

pub async fn list(
    State(state): State<AppState>,
    access: ConsoleAccess,
    Query(params): Query<ListParams>,
) -> Result<Response, Refusal> {
    let session = access.session;
    let status = status_param(given(&params.status), RunStatus::parse)?;
    let source = given(&params.source)
        .map(|s| {
            Source::parse(s).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_source").with("source", s))
        })
        .transpose()?;
    let since = parse_time("since", given(&params.since))?;
    let until = parse_time("until", given(&params.until))?;
    let sop = given(&params.sop).map(str::to_string);
    let number = params.page.unwrap_or(1).max(1);
    let query = RunQuery {
        sop: sop.clone(),
        status,
        source,
        since,
        until,
        limit: PER_PAGE,
        offset: (number - 1).saturating_mul(PER_PAGE),
    };
    let store = state.store.as_ref();
    let runs = store.list_runs(&query).await.map_err(OpError::store)?;
    let total = store.count_runs(&query).await.map_err(OpError::store)?;
    let pages = total.div_ceil(PER_PAGE as u64).max(1);
    let shown: Vec<&RunRecord> = runs.iter().collect();
    let link = |n: u64| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let filters = [
            ("status", &params.status),
            ("sop", &params.sop),
            ("source", &params.source),
            ("since", &params.since),
            ("until", &params.until),
        ];
        for (key, value) in filters {
            if let Some(v) = given(value) {
                query.append_pair(key, v);
            }
        }
        query.append_pair("page", &n.to_string());
        format!("/ui/runs?{}", query.finish())
    };
    let number = number as u64;
    let body = html! {
        (filters(status, sop.as_deref(), source, since, until))
        div id="live" {
            p.muted { (total) @if total == 1 { " run matches" } @else { " runs match" } }
            (run_table(&shown))
            p {
                @if number > 1 { a href=(link(number - 1)) { "← newer" } " " }
                "page " (number) " of " (pages)
                @if number < pages { " " a href=(link(number + 1)) { "older →" } }
            }
        }
    };
    Ok(page(&session, Nav::Runs, "Runs", body))
}

fn filters(
    status: Option<RunStatus>,
    sop: Option<&str>,
    source: Option<Source>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Markup {
    html! {
        form.filters method="get" action="/ui/runs" {
            label { "status" select name="status" {
                option value="" { "any" }
                @for s in RunStatus::ALL { option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) } }
            } }
            label { "SOP" input name="sop" value=(sop.unwrap_or_default()); }
            label { "source" select name="source" {
                option value="" { "any" }
                @for s in Source::ALL { option value=(s.as_str()) selected[source == Some(s)] { (s.as_str()) } }
            } }
            label { "started from (UTC)" input type="datetime-local" name="since" value=(since.map(time_param).unwrap_or_default()); }
            label { "until (UTC)" input type="datetime-local" name="until" value=(until.map(time_param).unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
    }
}

fn run_table(runs: &[&RunRecord]) -> Markup {
    html! {
        table {
            thead { tr { th { "run" } th { "SOP" } th { "status" } th { "source" } th { "topic" } th { "started" } } }
            tbody {
                @for r in runs {
                    tr {
                        td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                        td { (r.sop) }
                        td class=(status_class(r.status.as_str())) { (r.status.as_str()) }
                        td { (r.source.as_str()) }
                        td { code { (r.topic) } }
                        td { (time(r.started_at)) }
                    }
                }
                @if runs.is_empty() { tr { td colspan="6" .muted { "no runs" } } }
            }
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    access: ConsoleAccess,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let session = access.session;
    let store = state.store.as_ref();
    let run = store.get_run(&id).await.map_err(OpError::store)?.ok_or_else(|| OpError::not_found(Thing::Run, &id))?;
    let audit = store
        .audit(&AuditQuery { run_id: Some(id.clone()), after_seq: None, limit: 10_000 })
        .await
        .map_err(OpError::store)?;
    let steps = store.steps(&id).await.map_err(OpError::store)?;
    let envelopes = envelopes_of(store, &audit).await?;
    let catalog = state.dispatcher.catalog();
    let titles: Vec<String> =
        catalog.get(&run.sop).map(|s| s.steps.iter().map(|s| s.title.clone()).collect()).unwrap_or_default();
    let body = html! {
        table {
            tr { th { "SOP" } td { a href={ "/ui/sops#" (run.sop) } { (run.sop) } " " span.muted { (run.sop_version) } } }
            tr { th { "status" } td class=(status_class(run.status.as_str())) { (run.status.as_str()) } }
            tr { th { "trigger" } td { code { (run.trigger) } } }
            tr { th { "event" } td { (run.source.as_str()) " " code { (run.topic) } } }
            tr { th { "client" } td { (run.client.clone().unwrap_or_default()) } }
            tr { th { "started" } td { (time(run.started_at)) } }
            tr { th { "updated" } td { (time(run.updated_at)) } }
            tr { th { "finished" } td { (run.finished_at.map(time).unwrap_or_default()) } }
        }
        (actions(&session, &run))
        h2 { "Trigger payload" }
        pre { (pretty(&run.payload)) }
        h2 { "Steps" }
        table {
            thead { tr { th { "#" } th { "title" } th { "status" } th { "attempts" } th { "updated" } } }
            tbody {
                @for s in &steps {
                    @let status = super::named(&s.status);
                    tr {
                        td { (s.index + 1) }
                        td { (titles.get(s.index as usize).cloned().unwrap_or_default()) }
                        td class=(status_class(&status)) { (status) }
                        td { (s.attempts) }
                        td { (time(s.updated_at)) }
                    }
                }
                @if steps.is_empty() { tr { td colspan="5" .muted { "no steps taken yet" } } }
            }
        }
        @if let Some(request) = &run.request {
            h2 { "Request" }
            pre { (pretty(&serde_json::json!(request))) }
        }
        h2 { "Envelopes" }
        (super::outbox::table(&session, &envelopes))
        @for e in &envelopes {
            details { summary { "envelope " code { (e.id) } " as sent" } pre { (pretty(&e.envelope)) } }
        }
        h2 { "Audit timeline" }
        table {
            thead { tr { th { "at" } th { "what" } th { "by" } th { "detail" } } }
            tbody {
                @for r in &audit {
                    tr {
                        td { (time(r.at)) }
                        td { (r.kind.as_str()) }
                        td { (r.detail.get("by").and_then(Value::as_str).unwrap_or_default()) }
                        td { code { (r.detail.to_string()) } }
                    }
                }
            }
        }
    };
    Ok(page(&session, Nav::Runs, &format!("Run {}", run.run_id), body))
}

/// The outbox entries a run's audit says were written for it.
async fn envelopes_of(store: &dyn Store, audit: &[crate::store::AuditRecord]) -> Result<Vec<OutboxRecord>, OpError> {
    let mut envelopes = Vec::new();
    for record in audit.iter().filter(|r| r.kind == AuditKind::EnvelopeQueued) {
        if let Some(id) = record.detail.get("envelope_id").and_then(Value::as_str) {
            envelopes.extend(store.outbox_get(id).await.map_err(OpError::store)?);
        }
    }
    Ok(envelopes)
}

/// The forms a run's state allows: approve or deny at a gate, cancel
/// before it ends.
fn actions(session: &Session, run: &RunRecord) -> Markup {
    html! {
        @if run.status == RunStatus::PendingApproval {
            (super::approvals::forms(session, &run.run_id))
        }
        @if !run.status.is_terminal() {
            form.inline method="post" action={ "/ui/runs/" (run.run_id) "/cancel" } {
                (csrf_field(session))
                input name="reason" placeholder="reason (optional)";
                button.danger type="submit" { "Cancel run" }
            }
        }
    }
}

/// `POST /ui/runs/{id}/cancel`: [`operations::runs::cancel`] as the caller,
/// then back to the run.
pub async fn cancel(
    State(state): State<AppState>,
    ConsoleAccess { by, .. }: ConsoleAccess,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Body,
) -> Result<Response, Refusal> {
    let fields = posted(&state, &headers, body).await?;
    let actor = Actor { by, interface: Interface::Console };
    let request = CancelRequest { run_id: run_id.clone(), reason: filled(&fields, "reason").map(str::to_string) };
    operations::runs::cancel(&state.dispatcher, request, &actor, Utc::now()).await?;
    Ok(after_post(&format!("/ui/runs/{}", encode(&run_id))))
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A path segment, percent-encoded.
pub(super) fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}
