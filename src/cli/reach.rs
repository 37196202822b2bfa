//! How a command reaches fanin: the running daemon's admin API on its
//! configured address when one listens, else the store (and, for commands
//! that move runs, a dispatcher over it and the SOPs) in-process. Either way
//! the same operation runs, and a refusal prints the same line.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Failure;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::operations::{ConflictKind, OpError, Thing};
use crate::store::Store;

/// The store, for a command that writes it.
pub(super) async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    crate::store::open(&config.store.url, &config.base_dir)
        .await
        .map_err(|e| Failure::new(format!("{}: store.url: {e}", config.file.display())))
}

/// The store, for a command that only reads it.
pub(super) async fn open_store_to_read(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    crate::store::open_read_only(&config.store.url, &config.base_dir)
        .await
        .map_err(|e| Failure::new(format!("{}: store.url: {e}", config.file.display())))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
