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
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use super::reach::{call_daemon, in_process_dispatcher, open_store, open_store_to_read};
use super::{load_config, output, Failure, RunsCommand, TokensCommand};
use crate::config::Config;
use crate::event::Payload;
use crate::operations::approvals::Decision;
use crate::operations::{self, pairing, tokens, Thing};
use crate::runs::RunStatus;
use crate::store::{AuditQuery, AuditRecord, RunQuery};

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
            let runs = store().await?.list_runs(&RunQuery { sop, status, limit, ..Default::default() }).await?;
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
            let run = store().await?.get_run(&id).await?.ok_or_else(|| Failure::new(format!("no run {id}")))?;
            output::json(&json!(run));
        }
        RunsCommand::Pending => super::approvals::pending(&config, store().await?.as_ref(), json).await?,
        RunsCommand::Approve { id, reason } => {
            super::approvals::decide(&config, json, Decision::Approve, id, reason).await?
        }
        RunsCommand::Deny { id, reason } => super::approvals::decide(&config, json, Decision::Deny, id, reason).await?,
        RunsCommand::Cancel { id, reason } => super::cancel::cancel(&config, json, id, reason).await?,
    }
    Ok(())
}

pub async fn audit(config_path: &Path, json: bool, follow: bool, run: Option<String>) -> Result<(), Failure> {
    let store = open_store_to_read(&load_config(config_path)?).await?;
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
    let store = open_store(&config).await?;
    let key =
        pairing::PairingKey::load_or_create(&crate::store::pairing_key_path(&config.store.url, &config.base_dir)?)?;
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
            let tokens = tokens::list(open_store_to_read(&config).await?.as_ref()).await?;
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
            let n = tokens::revoke(open_store(&config).await?.as_ref(), &prefix, Utc::now()).await?;
            if json {
                output::json(&json!({ "revoked": n }));
            } else {
                println!("revoked {n} token(s)");
            }
        }
    }
    Ok(())
}
