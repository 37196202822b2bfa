//! `fanin runs pending | approve ID | deny ID [--reason R]`.
//!
//! `pending` reads the store (and the SOP set, for step counts, when it
//! loads). `approve` and `deny` go through the running daemon's admin API,
//! because the daemon owns admission: a decision frees or takes a slot and
//! may promote a deferred run. Only when no daemon listens at the configured
//! address do they move the run in-process (recorded as decided by `cli`).

use serde_json::{json, Value};

use super::inspect::post_to_daemon;
use super::{output, Failure};
use crate::config::Config;
use crate::gateway::approvals::{self, Decision, DecisionError, DecisionRequest};
use crate::runs::RunStatus;
use crate::store::Store;

pub async fn pending(config: &Config, store: &dyn Store, json: bool) -> Result<(), Failure> {
    let catalog = crate::daemon::load_catalog(config).ok().map(|(catalog, _)| catalog);
    let pending = approvals::pending_runs(store, catalog.as_ref()).await?;
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
    let reply = match post_to_daemon(config, path, body).await? {
        Some((status, reply)) if status.is_success() => reply,
        Some((status, reply)) => return Err(Failure::new(refusal(status.as_u16(), &run_id, &reply))),
        None => in_process(config, decision, DecisionRequest { run_id, reason }).await?,
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

/// The one line a refused decision prints.
fn refusal(http: u16, run_id: &str, reply: &Value) -> String {
    let error = match http {
        404 => DecisionError::NotFound { run_id: run_id.into() },
        409 => DecisionError::NotPending {
            run_id: run_id.into(),
            status: reply["status"].as_str().and_then(RunStatus::parse),
            detail: reply["detail"].as_str().unwrap_or("conflict").into(),
        },
        _ => {
            let reason = reply["detail"].as_str().or(reply["error"].as_str()).unwrap_or("request failed");
            return format!("{run_id}: {reason} (HTTP {http})");
        }
    };
    error.reason()
}

async fn in_process(config: &Config, decision: Decision, request: DecisionRequest) -> Result<Value, Failure> {
    let (catalog, _) = crate::daemon::load_catalog(config).map_err(|errors| Failure {
        message: format!("{} SOP error(s); run `fanin validate`", errors.len()),
        details: errors,
    })?;
    let dispatcher = crate::daemon::open_dispatcher(config, catalog).await?;
    approvals::decide(&dispatcher, decision, request, "cli".into()).await.map_err(|e| Failure::new(e.reason()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_one_line_that_say_why() {
        assert_eq!(refusal(404, "r1", &json!({"error": "run_not_found"})), "no run r1");
        let not_pending = refusal(409, "r1", &json!({"error": "not_pending", "status": "cancelled", "detail": "x"}));
        assert_eq!(not_pending, "run r1 is not waiting for approval (it is cancelled)");
        assert_eq!(
            refusal(403, "r1", &json!({"error": "forbidden", "detail": "loopback only"})),
            "r1: loopback only (HTTP 403)"
        );
    }
}
