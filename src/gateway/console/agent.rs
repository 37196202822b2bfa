//! The agent steps page: the steps of runs handed to an agent step by step
//! (the agent loop, docs/operations.md "Agent loop") that an agent holds or may take,
//! oldest first, each with its lease, so an operator sees what waits for
//! an agent and what one is working on, and reaches the run to cancel it.

use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::{page, status_class, time, AppState, ConsoleAccess, Nav, Refusal};
use crate::operations::OpError;
use crate::store::StepStatus;

/// Steps one page lists at most, oldest first; the page says how many
/// more wait.
const LISTED: usize = 200;

pub async fn list(State(state): State<AppState>, access: ConsoleAccess) -> Result<Response, Refusal> {
    let store = state.store.as_ref();
    let steps = store.agent_steps(LISTED + 1).await.map_err(OpError::store)?;
    let more = steps.len() > LISTED;
    let catalog = state.dispatcher.catalog();
    let now = Utc::now();
    let mut rows = Vec::new();
    for step in steps.into_iter().take(LISTED) {
        let run = store.get_run(&step.run_id).await.map_err(OpError::store)?;
        let sop = run.map(|r| r.sop).unwrap_or_default();
        let title = catalog
            .get(&sop)
            .and_then(|s| s.steps.get(step.index as usize))
            .map(|s| s.title.clone())
            .unwrap_or_default();
        // A lease that ended leaves the step to be taken again.
        let held = step.status == StepStatus::Leased && step.leased_until.is_some_and(|until| until > now);
        rows.push((step, sop, title, held));
    }
    let body = html! {
        p.muted { "Steps of runs waiting for an agent: pending ones any agent may lease, leased ones an agent is working on." }
        table {
            thead { tr {
                th { "run" } th { "SOP" } th { "step" } th { "state" } th { "lease until" } th { "leases" } th { "updated" }
            } }
            tbody {
                @for (step, sop, title, held) in &rows {
                    @let state = if *held { "leased" } else { "pending" };
                    tr {
                        td { a href={ "/ui/runs/" (super::runs::encode(&step.run_id)) } { code { (step.run_id) } } }
                        td { (sop) }
                        td { (step.index + 1) @if !title.is_empty() { ": " (title) } }
                        td class=(status_class(state)) { (state) }
                        td { @if *held { (step.leased_until.map(time).unwrap_or_default()) } }
                        td { (step.attempts) }
                        td { (time(step.updated_at)) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" .muted { "no step waits for an agent" } } }
            }
        }
        @if more { p.muted { "The oldest " (LISTED) " are listed." } }
    };
    Ok(page(&access.session, Nav::Agent, "Agent steps", body))
}
