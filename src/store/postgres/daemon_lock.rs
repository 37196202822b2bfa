//! Who may run on a PostgreSQL store: one daemon alone, or replicas
//! (`[cluster]`), each under its own node id — never a lone daemon beside
//! replicas, which would run its scheduler and outbox as if it were alone.
//!
//! Session advisory locks on a connection of the holder's own, released by
//! the server when the connection ends, however the process ends: a lone
//! daemon takes the store's key exclusively, a replica takes it shared and
//! its node's key exclusively. The keys carry the schema's name, so stores
//! in different schemas of one database are locked apart.

use std::path::Path;

use tokio_postgres::Client;

use super::connect::Connector;
use super::pg_error;
use crate::store::StoreError;

/// The advisory lock key a daemon holds on its store (with the schema's
/// name as the second half).
const DAEMON_LOCK: i32 = 0x6661_6e69;

/// The key a replica holds under its node id (with the schema and node id
/// hashed as the second half).
const NODE_LOCK: i32 = 0x6661_6e6a;

/// The backends holding `$1`'s key on this schema, for the refusal.
const HOLDERS: &str = "(SELECT string_agg(DISTINCT COALESCE(a.client_addr::TEXT, 'local') || ' pid ' || a.pid, ', ')
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.classid::BIGINT = ($1::BIGINT & 4294967295)
       AND l.objid::BIGINT = (hashtext(current_schema())::BIGINT & 4294967295)
       AND l.granted)";

/// Held for as long as the daemon runs.
pub struct DaemonLock {
    _client: Client,
}

impl DaemonLock {
    /// Takes the store's lock at `url`: alone (`node: None`), or as the
    /// replica `node`. Says who is in the way when it cannot.
    pub async fn acquire(url: &str, base_dir: &Path, node: Option<&str>) -> Result<DaemonLock, StoreError> {
        let connector = Connector::new(url, base_dir)?;
        let name = &connector.name;
        let client = connector.connect().await.map_err(|e| pg_error(name, "connect for the daemon lock", e))?;
        let take = match node {
            None => "pg_try_advisory_lock($1, hashtext(current_schema()))",
            Some(_) => "pg_try_advisory_lock_shared($1, hashtext(current_schema()))",
        };
        let sql = format!("SELECT {take}, current_schema(), {HOLDERS}");
        let row =
            client.query_one(&sql, &[&DAEMON_LOCK]).await.map_err(|e| pg_error(name, "take the daemon lock", e))?;
        let (taken, schema, holder): (bool, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2));
        let schema = schema.unwrap_or_default();
        let holder =
            holder.map_or("its connection is not visible to this user".to_owned(), |h| format!("server backend {h}"));
        let Some(node) = node else {
            if taken {
                return Ok(DaemonLock { _client: client });
            }
            return Err(StoreError::Invalid(format!(
                "store {name} (schema {schema}): another fanin daemon is running on it ({holder}); stop it first, \
                 give this one its own store.url, or run them all as replicas with [cluster]"
            )));
        };
        if !taken {
            return Err(StoreError::Invalid(format!(
                "store {name} (schema {schema}): a fanin daemon without [cluster] is running on it ({holder}); \
                 replicas cannot join it: stop it, or give it [cluster] too"
            )));
        }
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1, hashtext(current_schema() || '/' || $2))", &[&NODE_LOCK, &node])
            .await
            .map_err(|e| pg_error(name, "take the node lock", e))?;
        if !row.get::<_, bool>(0) {
            return Err(StoreError::Invalid(format!(
                "store {name} (schema {schema}): a replica with node_id {node:?} is running on it already; give each \
                 replica its own cluster.node_id"
            )));
        }
        Ok(DaemonLock { _client: client })
    }
}
