//! Commands that read or write the store: `fire`, `runs`, `audit`, `pair`,
//! `tokens`. They open the store named in the config directly (SQLite's WAL
//! lets them run beside a daemon), except `fire`, which goes through the
//! running daemon so its admission bookkeeping stays the only one. Those
//! that only read open it read-only: they never wait for a write lock, so
//! they answer even while a daemon is stuck in the middle of a commit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use super::{load_config, output, Failure, RunsCommand, TokensCommand};
use crate::config::Config;
use crate::dispatch::DispatchReport;
use crate::event::{Event, Payload, Source};
use crate::gateway::approvals::Decision;
use crate::gateway::auth;
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
    call_daemon(config, &format!("/admin/sops/{sop}/run"), body, sop).await
}

/// POSTs to the running daemon's admin API on its configured address.
/// `Ok(None)` when no daemon listens there; a refusal is a `Failure` whose
/// message starts with `subject`.
pub(super) async fn call_daemon(
    config: &Config,
    path: &str,
    body: String,
    subject: &str,
) -> Result<Option<Value>, Failure> {
    let Some((status, reply)) = post_to_daemon(config, path, body).await? else {
        return Ok(None);
    };
    if !status.is_success() {
        let reason = reply["detail"].as_str().or(reply["error"].as_str()).unwrap_or("request failed");
        return Err(Failure::new(format!("{subject}: {reason} (HTTP {})", status.as_u16())));
    }
    Ok(Some(reply))
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
    let (catalog, _) = crate::daemon::load_catalog(config).map_err(|errors| Failure {
        message: format!("{} SOP error(s); run `fanin validate`", errors.len()),
        details: errors,
    })?;
    let dispatcher = crate::daemon::open_dispatcher(config, catalog).await?;
    let mut event = Event::new(crate::ids::fresh(), Source::Manual, sop, Payload::Json(payload), Utc::now());
    event.client = Some("cli".into());
    match dispatcher.dispatch(event).await? {
        DispatchReport::Accepted { outcomes, .. } if outcomes.is_empty() => {
            Err(Failure::new(match dispatcher.catalog().get(sop) {
                Some(_) => format!("SOP {sop} has no manual trigger"),
                None => format!("no SOP named {sop}"),
            }))
        }
        DispatchReport::Accepted { event_id, outcomes } => {
            let mut reply = crate::dispatch::dispatcher::summary(&outcomes);
            reply["status"] = json!("accepted");
            reply["source"] = json!("manual");
            reply["event_id"] = json!(event_id);
            Ok(reply)
        }
        DispatchReport::Duplicate { response } => Ok(response),
    }
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
    let key = auth::PairingKey::for_store(&db)?;
    let code = auth::issue_pairing_code(store.as_ref(), &key, Utc::now()).await?;
    if json {
        output::json(&json!({"pairing_code": code, "expires_in_secs": auth::PAIRING_CODE_TTL.as_secs()}));
    } else {
        println!("Pairing code: {code}");
    }
    Ok(())
}

pub async fn tokens(config_path: &Path, json: bool, command: TokensCommand) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    match command {
        TokensCommand::List => {
            let tokens = open_store_to_read(&config)?.list_tokens().await?;
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
            if prefix.len() < 4 {
                return Err(Failure::new(
                    "a prefix needs at least 4 characters, so one typo cannot revoke every token",
                ));
            }
            let n = open_store(&config)?.revoke_tokens(&prefix, Utc::now()).await?;
            if n == 0 {
                return Err(Failure::new(format!("no active token starts with {prefix}")));
            }
            if json {
                output::json(&json!({ "revoked": n }));
            } else {
                println!("revoked {n} token(s)");
            }
        }
    }
    Ok(())
}
