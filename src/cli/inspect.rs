//! Commands that read or write the store: `fire`, `runs`, `audit`, `pair`,
//! `tokens`. They open the store named in the config directly (SQLite's WAL
//! lets them run beside a daemon), except those that move runs (`fire`,
//! `runs approve|deny|cancel`), which go through the running daemon so its
//! admission bookkeeping stays the only one, and act in-process only when
//! no daemon listens. Either way the same operation ([`crate::operations`])
//! does the work. Those that only read open the store read-only: they never
//! wait for a write lock, so they answer even while a daemon is stuck in
//! the middle of a commit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use super::{load_config, output, Failure, RunsCommand, TokensCommand};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::event::Payload;
use crate::operations::approvals::Decision;
use crate::operations::{self, pairing, tokens, ConflictKind, OpError, Thing};
use crate::runs::RunStatus;
use crate::store::{AuditQuery, AuditRecord, RunQuery, Store};

/// The store, for a command that writes it.
pub(super) fn open_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    crate::store::open(&config.store.url, &config.base_dir)
        .map_err(|e| Failure::new(format!("{}: store.url: {e}", config.file.display())))
}

/// The store, for a command that only reads it.
pub(super) fn open_store_to_read(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    crate::store::open_read_only(&config.store.url, &config.base_dir)
        .map_err(|e| Failure::new(format!("{}: store.url: {e}", config.file.display())))
}

pub async fn fire(config_path: &Path, json: bool, sop: &str, payload: Option<&str>) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    let body = payload.unwrap_or("").to_string();
    let value = match payload {
        Some(payload) => crate::event::parse_json(payload.as_bytes(), config.gateway.max_payload_depth)
            .map_err(|e| Failure::new(format!("--payload is not JSON fanin takes: {e}")))?,
        None => Value::Null,
    };
    let reply = match fire_through_daemon(&config, sop, body).await? {
        Some(reply) => reply,
        None => fire_in_process(&config, sop, value).await?,
    };
    if json {
        output::json(&reply);
    } else {
        for run in reply["runs"].as_array().into_iter().flatten() {
            println!(
                "{}  {}  {}",
                run["sop"].as_str().unwrap_or(""),
                run["outcome"].as_str().unwrap_or(""),
                run["run_id"].as_str().or(run["reason"].as_str()).unwrap_or("")
            );
        }
    }
    Ok(())
}

/// `Ok(None)` when no daemon listens at the configured address.
async fn fire_through_daemon(config: &Config, sop: &str, body: String) -> Result<Option<Value>, Failure> {
    call_daemon(config, &format!("/admin/sops/{sop}/run"), body, Thing::Sop, sop).await
}

/// POSTs to the running daemon's admin API on its configured address, an
/// operation on `what` named `id`. `Ok(None)` when no daemon listens there;
/// a refusal is a `Failure` with the line [`refusal`] gives.
pub(super) async fn call_daemon(
    config: &Config,
    path: &str,
    body: String,
    what: Thing,
    id: &str,
) -> Result<Option<Value>, Failure> {
    let Some((status, reply)) = post_to_daemon(config, path, body).await? else {
        return Ok(None);
    };
    if !status.is_success() {
        return Err(Failure::new(refusal(what, id, status.as_u16(), &reply)));
    }
    Ok(Some(reply))
}

/// The line a refusal from the daemon prints: the operation's error read
/// back from the reply, so it is the line the same refusal prints when no
/// daemon runs; any other answer (403, 503) as `<id>: <reason> (HTTP n)`.
pub(super) fn refusal(what: Thing, id: &str, http: u16, reply: &Value) -> String {
    let text = |key: &str| reply[key].as_str().map(str::to_string);
    let error = match http {
        404 => OpError::NotFound { what, id: id.into(), detail: text("detail") },
        409 => OpError::Conflict {
            what,
            id: id.into(),
            kind: reply["error"].as_str().and_then(ConflictKind::from_code).unwrap_or(ConflictKind::CannotMove),
            status: text("status"),
            reason: text("detail").unwrap_or_else(|| "conflict".into()),
        },
        _ => {
            let reason = text("detail").or(text("error")).unwrap_or_else(|| "request failed".into());
            return format!("{id}: {reason} (HTTP {http})");
        }
    };
    error.to_string()
}

/// A dispatcher over the store and the SOPs, for a command that moves runs
/// with no daemon running.
pub(super) async fn in_process_dispatcher(config: &Config) -> Result<Arc<Dispatcher>, Failure> {
    let (catalog, _) = crate::daemon::load_catalog(config).map_err(|errors| Failure {
        message: format!("{} SOP error(s); run `fanin validate`", errors.len()),
        details: errors,
    })?;
    Ok(crate::daemon::open_dispatcher(config, catalog).await?)
}

/// POSTs `body` (JSON) to `path` of the daemon at the configured address and
/// returns its status and reply; `Ok(None)` when no daemon listens there.
pub(super) async fn post_to_daemon(
    config: &Config,
    path: &str,
    body: String,
) -> Result<Option<(reqwest::StatusCode, Value)>, Failure> {
    let host = match config.gateway.host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        h => h,
    };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    let url = format!("http://{host}:{}{path}", config.gateway.port);
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(config.gateway.request_timeout_secs)).build()?;
    let response = match client.post(&url).header("content-type", "application/json").body(body).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(Failure::new(format!("daemon at {url}: {e}"))),
    };
    let status = response.status();
    let reply: Value = response.json().await.unwrap_or(Value::Null);
    Ok(Some((status, reply)))
}

async fn fire_in_process(config: &Config, sop: &str, payload: Value) -> Result<Value, Failure> {
    let dispatcher = in_process_dispatcher(config).await?;
    Ok(operations::runs::fire(&dispatcher, sop, Payload::Json(payload), "cli".into(), Utc::now()).await?)
}

pub async fn runs(config_path: &Path, json: bool, command: RunsCommand) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    let store = || open_store_to_read(&config);
    match command {
        RunsCommand::List { sop, status, limit } => {
            let status = match status {
                None => None,
                Some(s) => {
                    Some(RunStatus::parse(&s).ok_or_else(|| Failure::new(format!("--status {s:?}: unknown status")))?)
                }
            };
            let runs = store()?.list_runs(&RunQuery { sop, status, limit }).await?;
            if json {
                let list: Vec<Value> = runs.iter().map(crate::gateway::run_summary).collect();
                output::json(&json!({ "runs": list }));
            } else {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|r| {
                        vec![
                            r.run_id.clone(),
                            r.sop.clone(),
                            r.status.to_string(),
                            r.source.as_str().into(),
                            r.topic.clone(),
                            r.started_at.to_rfc3339(),
                        ]
                    })
                    .collect();
                output::table(&["RUN", "SOP", "STATUS", "SOURCE", "TOPIC", "STARTED"], &rows);
            }
        }
        RunsCommand::Show { id } => {
            let run = store()?.get_run(&id).await?.ok_or_else(|| Failure::new(format!("no run {id}")))?;
            output::json(&json!(run));
        }
        RunsCommand::Pending => super::approvals::pending(&config, store()?.as_ref(), json).await?,
        RunsCommand::Approve { id, reason } => {
            super::approvals::decide(&config, json, Decision::Approve, id, reason).await?
        }
        RunsCommand::Deny { id, reason } => super::approvals::decide(&config, json, Decision::Deny, id, reason).await?,
        RunsCommand::Cancel { id, reason } => super::cancel::cancel(&config, json, id, reason).await?,
    }
    Ok(())
}

pub async fn audit(config_path: &Path, json: bool, follow: bool, run: Option<String>) -> Result<(), Failure> {
    let store = open_store_to_read(&load_config(config_path)?)?;
    let mut after = None;
    loop {
        let records = store.audit(&AuditQuery { run_id: run.clone(), after_seq: after, limit: 10_000 }).await?;
        for r in &records {
            print_audit(r, json);
        }
        after = records.last().map(|r| r.seq).or(after);
        if !follow {
            return Ok(());
        }
        // Another process writes the store; there is nothing to wait on but time.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn print_audit(r: &AuditRecord, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("JSON prints"));
    } else {
        println!(
            "{:>6}  {}  {:<17}  {}  {}  {}",
            r.seq,
            r.at.to_rfc3339(),
            r.kind.as_str(),
            r.sop.as_deref().unwrap_or("-"),
            r.run_id.as_deref().unwrap_or("-"),
            r.detail
        );
    }
}

pub async fn pair(config_path: &Path, json: bool) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    let store = open_store(&config)?;
    let db = crate::store::local_path(&config.store.url, &config.base_dir)?;
    let key = pairing::PairingKey::for_store(&db)?;
    let code = pairing::issue_pairing_code(store.as_ref(), &key, Utc::now()).await?;
    if json {
        output::json(&json!({"pairing_code": code, "expires_in_secs": pairing::PAIRING_CODE_TTL.as_secs()}));
    } else {
        println!("Pairing code: {code}");
    }
    Ok(())
}

pub async fn tokens(config_path: &Path, json: bool, command: TokensCommand) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    match command {
        TokensCommand::List => {
            let tokens = tokens::list(open_store_to_read(&config)?.as_ref()).await?;
            if json {
                let list: Vec<Value> = tokens
                    .iter()
                    .map(|t| json!({"prefix": t.prefix, "subject": t.subject, "created_at": t.created_at, "revoked_at": t.revoked_at}))
                    .collect();
                output::json(&json!({ "tokens": list }));
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        let state =
                            t.revoked_at.map_or("active".to_string(), |at| format!("revoked {}", at.to_rfc3339()));
                        vec![t.prefix.clone(), t.created_at.to_rfc3339(), state]
                    })
                    .collect();
                output::table(&["PREFIX", "CREATED", "STATE"], &rows);
            }
        }
        TokensCommand::Revoke { prefix } => {
            let n = tokens::revoke(open_store(&config)?.as_ref(), &prefix, Utc::now()).await?;
            if json {
                output::json(&json!({ "revoked": n }));
            } else {
                println!("revoked {n} token(s)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_one_line_that_say_why() {
        assert_eq!(refusal(Thing::Run, "r1", 404, &json!({"error": "run_not_found"})), "no run r1");
        let not_pending = json!({"error": "not_pending", "status": "cancelled", "detail": "x"});
        assert_eq!(
            refusal(Thing::Run, "r1", 409, &not_pending),
            "run r1 is not waiting for approval (it is cancelled)"
        );
        assert_eq!(
            refusal(Thing::Run, "r1", 403, &json!({"error": "forbidden", "detail": "loopback only"})),
            "r1: loopback only (HTTP 403)"
        );
    }

    #[test]
    fn a_refusal_reads_the_same_from_the_daemon_as_from_the_operation() {
        let ended = OpError::Conflict {
            what: Thing::Run,
            id: "r1".into(),
            kind: ConflictKind::NotCancellable,
            status: Some("completed".into()),
            reason: "run r1 is completed; it cannot become cancelled".into(),
        };
        // What the admin API answers for it (see the gateway's mapping).
        let reply = json!({"error": "run_not_cancellable", "run_id": "r1", "status": "completed",
            "detail": "run r1 is completed; it cannot become cancelled"});
        assert_eq!(refusal(Thing::Run, "r1", 409, &reply), ended.to_string());
        let sop =
            OpError::NotFound { what: Thing::Sop, id: "s".into(), detail: Some("SOP s has no manual trigger".into()) };
        let reply = json!({"error": "no_matching_sop", "sop": "s", "detail": "SOP s has no manual trigger"});
        assert_eq!(refusal(Thing::Sop, "s", 404, &reply), sop.to_string());
        let dead = json!({"error": "not_dead", "id": "e1", "status": "withdrawn", "detail": "x"});
        assert_eq!(refusal(Thing::Envelope, "e1", 409, &dead), "envelope e1 is not a dead letter (it is withdrawn)");
    }
}
