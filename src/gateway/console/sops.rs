//! The SOPs page: every loaded SOP with its triggers, mode, admission
//! policy, the runs holding its slots and waiting in its backlog, and its
//! latest run.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{named, page, status_class, time, AppState, ConsoleAccess, Nav, Refusal};
use crate::operations::OpError;
use crate::store::RunQuery;

pub async fn list(State(state): State<AppState>, access: ConsoleAccess) -> Result<Response, Refusal> {
    let session = access.session;
    let catalog = state.dispatcher.catalog();
    let loads: HashMap<String, _> =
        state.store.sop_loads().await.map_err(OpError::store)?.into_iter().map(|l| (l.sop.clone(), l)).collect();
    let mut latest = HashMap::new();
    for sop in &catalog.sops {
        let query = RunQuery { sop: Some(sop.name.clone()), status: None, limit: 1, ..Default::default() };
        let run = state.store.list_runs(&query).await.map_err(OpError::store)?.into_iter().next();
        latest.insert(sop.name.clone(), run);
    }
    let body = html! {
        table {
            thead { tr {
                th { "SOP" } th { "triggers" } th { "mode" } th { "policy" } th { "active" } th { "deferred" }
                th { "last run" }
            } }
            tbody {
                @for sop in &catalog.sops {
                    @let load = loads.get(&sop.name);
                    tr id=(sop.name) {
                        td {
                            a href={ "/ui/runs?sop=" (sop.name) } { b { (sop.name) } }
                            " " span.muted { (sop.version) }
                            br; (sop.description)
                        }
                        td { @for t in &sop.triggers { code { (t.describe()) } br; } }
                        td { (named(&sop.execution_mode)) br; span.muted { "priority " (named(&sop.priority)) } }
                        td {
                            (named(&sop.admission_policy)) br;
                            span.muted { "max " (sop.max_concurrent) ", cooldown " (sop.cooldown_secs) " s" }
                        }
                        td { (load.map_or(0, |l| l.active)) " / " (sop.max_concurrent) }
                        td { (load.map_or(0, |l| l.deferred.len())) }
                        td {
                            @if let Some(Some(run)) = latest.get(&sop.name) {
                                a href={ "/ui/runs/" (run.run_id) } class=(status_class(run.status.as_str())) {
                                    (run.status.as_str())
                                }
                                br; span.muted { (time(run.started_at)) }
                            } @else { span.muted { "none" } }
                        }
                    }
                }
                @if catalog.sops.is_empty() { tr { td colspan="7" .muted { "no SOPs are loaded" } } }
            }
        }
    };
    Ok(page(&session, Nav::Sops, "SOPs", body))
}
