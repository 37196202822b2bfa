//! `fanin outbox list|retry`: the durable outbox of envelopes on their way
//! to the Executor and the Agent.

use std::path::Path;

use chrono::Utc;
use serde_json::json;

use super::inspect::{call_daemon, open_store, open_store_to_read};
use super::{load_config, output, Failure, OutboxCommand};
use crate::store::{Batch, OutboxStatus, StoreError, Write};

pub async fn outbox(config_path: &Path, json: bool, command: OutboxCommand) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    match command {
        OutboxCommand::List { status, limit } => {
            let status = match status {
                None => None,
                Some(s) => Some(
                    OutboxStatus::parse(&s)
                        .ok_or_else(|| Failure::new(format!("--status {s:?}: expected pending, delivered or dead")))?,
                ),
            };
            let entries = open_store_to_read(&config)?.outbox_list(status, limit).await?;
            if json {
                output::json(&json!({ "outbox": entries }));
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            e.run_id.clone(),
                            e.destination.clone(),
                            e.status.as_str().to_string(),
                            e.attempts.to_string(),
                            e.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(&["ENVELOPE", "RUN", "DESTINATION", "STATUS", "ATTEMPTS", "LAST ERROR"], &rows);
            }
        }
        OutboxCommand::Retry { id } => {
            let path = format!("/admin/outbox/{id}/retry");
            if call_daemon(&config, &path, String::new(), &id).await?.is_none() {
                // No daemon: revive it in the store; the next daemon sends it.
                let store = open_store(&config)?;
                if store.outbox_get(&id).await?.is_none() {
                    return Err(Failure::new(format!("no envelope {id}")));
                }
                let revive =
                    Batch { idempotency: None, writes: vec![Write::Revive { id: id.clone(), at: Utc::now() }] };
                match store.commit(revive).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict(reason)) => return Err(Failure::new(format!("{id}: {reason}"))),
                    Err(e) => return Err(e.into()),
                }
            }
            if json {
                output::json(&json!({"id": id, "status": "pending"}));
            } else {
                println!("{id}: queued for delivery again");
            }
        }
    }
    Ok(())
}
