//! `fanin outbox list|retry`: the durable outbox of envelopes on their way
//! to the Executor and the Agent. A retry goes through the running daemon
//! (which wakes its worker), else revives the dead letter in the store;
//! both are [`crate::operations::outbox::retry`].

use std::path::Path;

use chrono::Utc;
use serde_json::json;

use super::reach::{call_daemon, open_store, open_store_to_read};
use super::{load_config, output, Failure, OutboxCommand};
use crate::operations::{self, Thing};
use crate::store::OutboxStatus;

pub async fn outbox(config_path: &Path, json: bool, command: OutboxCommand) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    match command {
        OutboxCommand::List { status, limit } => {
            let status = match status {
                None => None,
                Some(s) => Some(OutboxStatus::parse(&s).ok_or_else(|| {
                    Failure::new(format!("--status {s:?}: expected pending, delivered, dead or withdrawn"))
                })?),
            };
            let entries = open_store_to_read(&config).await?.outbox_list(status, limit).await?;
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
            let reply = match call_daemon(&config, &path, String::new(), Thing::Envelope, &id).await? {
                Some(reply) => reply,
                // No daemon: revive it in the store; the next daemon sends it.
                None => json!(operations::outbox::retry(open_store(&config).await?.as_ref(), &id, Utc::now()).await?),
            };
            if json {
                output::json(&reply);
            } else {
                println!("{id}: queued for delivery again");
            }
        }
    }
    Ok(())
}
