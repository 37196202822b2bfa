//! Admission held across replicas: a transaction holding one advisory lock
//! per SOP, in which the SOPs' loads are read; it stays open while the
//! replica decides and commits, and its end lets the next replica in.
//!
//! Why a lock and a fresh read rather than counters in the store: admission
//! stays the core's pure bookkeeping, the same on one daemon and on many;
//! the store only makes sure that, for one SOP, one replica at a time
//! decides, from what is committed. The locks are transaction-scoped, so a
//! replica that dies mid-decision leaves nothing held: the server ends its
//! session. Each hold has a connection of its own, outside the read pool, so
//! holds queued behind a busy SOP never starve the reads.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::connect::Connector;
use super::reads::ReadError;
use super::{pg_error, Conn};
use crate::store::{AdmissionHold, HoldRelease, SopLoad, StoreError};
use fanin_core::runs::RunStatus;

/// The advisory lock namespace of admission holds (the other key is the
/// schema and the SOP), apart from the daemon locks'.
const ADMISSION_LOCK: i32 = 0x6661_6e6b;

/// Holds at once; more wait for one to end.
const MAX_HOLDS: usize = 4;

pub(super) struct Holds {
    connector: Connector,
    idle: Arc<Mutex<Vec<Conn>>>,
    permits: Arc<Semaphore>,
}

impl Holds {
    pub fn new(connector: Connector) -> Holds {
        Holds { connector, idle: Arc::new(Mutex::new(Vec::new())), permits: Arc::new(Semaphore::new(MAX_HOLDS)) }
    }

    pub async fn hold(&self, sops: &[String]) -> Result<AdmissionHold, StoreError> {
        let name = &self.connector.name;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable(format!("store {name}: closed")))?;
        let pooled = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                Conn::new(self.connector.connect().await.map_err(|e| pg_error(name, "connect to hold admission", e))?)
            }
        };
        // A connection whose hold failed is dropped, which ends its
        // transaction and whatever it locked.
        match lock_and_read(&conn, sops).await {
            Ok((loads, deferred_total)) => {
                let held = Held { conn, idle: Arc::clone(&self.idle), _permit: permit };
                Ok(AdmissionHold::new(loads, deferred_total, Box::new(held)))
            }
            Err(ReadError::Db(e)) => Err(pg_error(name, "hold admission", e)),
            Err(ReadError::Undecodable(reason)) => {
                Err(StoreError::Invalid(format!("store {name}: hold admission: {reason}")))
            }
        }
    }
}

struct Held {
    conn: Conn,
    idle: Arc<Mutex<Vec<Conn>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[async_trait]
impl HoldRelease for Held {
    async fn release(self: Box<Self>) {
        let Held { conn, idle, _permit } = *self;
        match conn.batch("COMMIT").await {
            Ok(()) => idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(conn),
            Err(error) => tracing::debug!(%error, "store: ending an admission hold failed; its connection is closed"),
        }
    }
}

/// Takes the SOPs' locks in name order (two replicas asking for the same
/// two SOPs cannot each hold one), then reads under them: three statements
/// sent at once, which the server runs in turn, so a hold costs one round
/// trip (and the `COMMIT` that ends it).
async fn lock_and_read(conn: &Conn, sops: &[String]) -> Result<(Vec<SopLoad>, usize), ReadError> {
    let mut names: Vec<&str> = sops.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    // Volatile functions of a select list run after its ORDER BY.
    let lock = "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '/' || s))
                FROM unnest($2::text[]) WITH ORDINALITY AS u(s, n) ORDER BY n";
    let active = [RunStatus::PendingApproval.as_str(), RunStatus::Running.as_str()];
    debug_assert!(RunStatus::PendingApproval.is_active() && RunStatus::Running.is_active());
    // Each SOP's slots, last finish and backlog, and the backlog over every SOP.
    let read = "SELECT s,
                       (SELECT count(*) FROM runs WHERE sop = s AND status = ANY($2)),
                       (SELECT max(finished_at) FROM runs WHERE sop = s),
                       ARRAY(SELECT run_id FROM runs WHERE sop = s AND status = $3 ORDER BY started_at, seq),
                       (SELECT count(*) FROM runs WHERE status = $3)
                FROM unnest($1::text[]) AS s";
    let deferred = RunStatus::Deferred.as_str();
    // Prepared first (once per connection), so each request below is sent
    // when first polled, and `join3` polls in order: the server gets them
    // in this order.
    conn.statement(lock).await?;
    conn.statement(read).await?;
    let (begun, locked, rows) = futures_util::future::join3(
        conn.batch("BEGIN"),
        conn.query(lock, &[&ADMISSION_LOCK, &names]),
        conn.query(read, &[&names, &active.as_slice(), &deferred]),
    )
    .await;
    begun?;
    locked?;
    let rows = rows?;
    let mut loads = Vec::with_capacity(rows.len());
    let mut total = 0;
    for row in &rows {
        let finished = row.try_get::<_, Option<i64>>(2)?.map(crate::store::codec::time_from_micros).transpose();
        loads.push(SopLoad {
            sop: row.try_get(0)?,
            active: u32::try_from(row.try_get::<_, i64>(1)?).unwrap_or(u32::MAX),
            last_finished_at: finished.map_err(ReadError::Undecodable)?,
            deferred: row.try_get(3)?,
        });
        total = row.try_get::<_, i64>(4)?;
    }
    Ok((loads, usize::try_from(total).unwrap_or(usize::MAX)))
}
