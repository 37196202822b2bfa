//! The explain page: a source, a topic or path and a payload typed in, and
//! which triggers the loaded SOPs would fire and, for each near miss, why
//! not: the dispatcher's own matching walk, as `fanin explain` tells it.
//! Nothing is dispatched, so the form is a GET.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use super::super::extract::Query;
use super::{given, page, ApiError, AppState, ConsoleAccess, Nav, Refusal};
use crate::dispatch::matching::Explanation;
use crate::event::{Event, Payload, Source};

#[derive(Deserialize)]
pub struct Params {
    source: Option<String>,
    topic: Option<String>,
    payload: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    access: ConsoleAccess,
    Query(params): Query<Params>,
) -> Result<Response, Refusal> {
    let session = access.session;
    let source = match given(&params.source) {
        None => Source::Webhook,
        Some(s) => Source::parse(s)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_source").with("source", s))?,
    };
    let topic = given(&params.topic);
    let payload_text = params.payload.clone().unwrap_or_default();
    let outcome = topic.map(|topic| explain(&state, source, topic, &payload_text));
    let body = html! {
        form.explain method="get" action="/ui/explain" {
            label { "source" select name="source" {
                @for s in Source::ALL { option value=(s.as_str()) selected[s == source] { (s.as_str()) } }
            } }
            label { "topic or path" input name="topic" required value=(topic.unwrap_or_default()); }
            label { "payload (JSON, or text)" textarea name="payload" { (payload_text) } }
            button type="submit" { "Explain" }
        }
        @match outcome {
            Some(Ok(explanation)) => (results(&explanation)),
            Some(Err(why)) => p.notice { (why) },
            None => {}
        }
    };
    Ok(page(&session, Nav::Explain, "Explain", body))
}

fn explain(state: &AppState, source: Source, topic: &str, payload: &str) -> Result<Explanation, String> {
    let payload = match payload.trim() {
        "" => Payload::Json(serde_json::Value::Null),
        text => crate::event::parse_payload(text.as_bytes(), state.config.max_payload_depth)
            .map_err(|e| format!("payload: {e}"))?,
    };
    let event = Event::new(crate::ids::fresh(), source, topic, payload, Utc::now());
    Ok(state.dispatcher.explain(&event))
}

fn results(explanation: &Explanation) -> Markup {
    html! {
        h2 { "Matches" }
        @if explanation.matches.is_empty() { p.muted { "no trigger matches" } }
        table {
            @for m in &explanation.matches {
                tr { td { b { (m.sop) } } td { "triggers[" (m.trigger_index) "]" } td { code { (m.trigger) } } }
            }
        }
        h2 { "Near misses" }
        @if explanation.near_misses.is_empty() { p.muted { "no near misses" } }
        table {
            @for n in &explanation.near_misses {
                tr {
                    td { b { (n.sop) } }
                    td { "triggers[" (n.trigger_index) "]" }
                    td { code { (n.trigger) } }
                    td { (n.reason) }
                }
            }
        }
    }
}
