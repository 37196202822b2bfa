//! `fanin runs pending | approve ID | deny ID [--reason R]`.
//!
//! `pending` reads the store (and the SOP set, for step counts, when it
//! loads). `approve` and `deny` go through the running daemon's admin API,
//! because the daemon owns admission: a decision frees or takes a slot and
//! may promote a deferred run. Only when no daemon listens at the configured
//! address do they move the run in-process (recorded as decided by `cli`).
//! Both paths are [`crate::operations::approvals`].

use chrono::Utc;
use serde_json::{json, Value};

use super::reach::{call_daemon, in_process_dispatcher};
use super::{output, Failure};
use crate::config::Config;
use crate::operations::approvals::{self, Decision, DecisionRequest};
use crate::operations::Thing;
use crate::store::Store;

pub async fn pending(config: &Config, store: &dyn Store, json: bool) -> Result<(), Failure> {
    let catalog = crate::daemon::load_catalog(config).ok().map(|(catalog, _)| catalog);
    let pending = approvals::pending(store, catalog.as_ref()).await?;
    if json {
        output::json(&json!({ "pending": pending }));
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = pending
        .iter()
        .map(|p| {
            vec![
                text(&p["run_id"]),
                text(&p["sop"]),
                format!("{} of {}", text(&p["step"]), text(&p["total_steps"])),
                text(&p["waiting_since"]),
            ]
        })
        .collect();
    output::table(&["RUN", "SOP", "STEP", "WAITING SINCE"], &rows);
    Ok(())
}

pub async fn decide(
    config: &Config,
    json: bool,
    decision: Decision,
    run_id: String,
    reason: Option<String>,
) -> Result<(), Failure> {
    let path = match decision {
        Decision::Approve => "/admin/sop/approve",
        Decision::Deny => "/admin/sop/deny",
    };
    let body = json!({"run_id": run_id, "reason": reason}).to_string();
    let reply = match call_daemon(config, path, body, Thing::Run, &run_id).await? {
        Some(reply) => reply,
        None => {
            let dispatcher = in_process_dispatcher(config).await?;
            let request = DecisionRequest { run_id, reason };
            let store = dispatcher.store().clone();
            json!(approvals::decide(&dispatcher, store.as_ref(), decision, request, "cli".into(), Utc::now()).await?)
        }
    };
    if json {
        output::json(&reply);
    } else {
        println!(
            "{} {}: the run is now {}",
            decision.outcome(),
            reply["run_id"].as_str().unwrap_or(""),
            reply["status"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
