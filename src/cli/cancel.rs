//! `fanin runs cancel ID [--reason R]`: ends a run that has not ended.
//!
//! Through the running daemon's admin API (`POST /admin/runs/{id}/cancel`),
//! which owns admission: the slot the run held goes to the next deferred
//! run. Only when no daemon listens does the CLI cancel in-process, recorded
//! as by `cli` through the `cli` interface. Both paths are
//! [`crate::operations::runs::cancel`], so they refuse alike (a run that
//! has ended, an unknown run) with the same line.

use chrono::Utc;
use serde_json::{json, Value};

use super::reach::{call_daemon, in_process_dispatcher};
use super::{output, Failure};
use crate::config::Config;
use crate::operations::runs::{self, CancelRequest};
use crate::operations::{Actor, Thing};

pub async fn cancel(config: &Config, json: bool, run_id: String, reason: Option<String>) -> Result<(), Failure> {
    let path = format!("/admin/runs/{run_id}/cancel");
    let body = json!({ "reason": reason }).to_string();
    let reply = match call_daemon(config, &path, body, Thing::Run, &run_id).await? {
        Some(reply) => reply,
        None => {
            let dispatcher = in_process_dispatcher(config).await?;
            let request = CancelRequest { run_id, reason };
            json!(runs::cancel(&dispatcher, request, &Actor::cli(), Utc::now()).await?)
        }
    };
    if json {
        output::json(&reply);
    } else {
        println!("{}", summary(&reply));
    }
    Ok(())
}

/// One line for people: the run, where it was, and what the cancel changed
/// around it.
fn summary(reply: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let count = |v: &Value| v.as_array().map_or(0, Vec::len);
    let mut line = format!("cancelled {} (it was {})", text(&reply["run_id"]), text(&reply["from"]));
    let (envelopes, steps) = (count(&reply["withdrawn"]["envelopes"]), count(&reply["withdrawn"]["steps"]));
    if envelopes + steps > 0 {
        line.push_str(&format!("; withdrew {envelopes} envelope(s) and {steps} step(s)"));
    }
    let promoted: Vec<String> = reply["promoted"].as_array().into_iter().flatten().map(text).collect();
    if !promoted.is_empty() {
        line.push_str(&format!("; started {}", promoted.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_changed_and_only_that() {
        let plain =
            json!({"run_id": "r1", "from": "deferred", "withdrawn": {"envelopes": [], "steps": []}, "promoted": []});
        assert_eq!(summary(&plain), "cancelled r1 (it was deferred)");
        let busy = json!({"run_id": "r1", "from": "running", "withdrawn": {"envelopes": ["e1"], "steps": []},
            "promoted": ["r2"]});
        assert_eq!(summary(&busy), "cancelled r1 (it was running); withdrew 1 envelope(s) and 0 step(s); started r2");
    }
}
