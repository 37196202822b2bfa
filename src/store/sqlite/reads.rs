//! Reads: a small pool of read-only connections used from blocking tasks.
//!
//! WAL lets these read a committed snapshot while the writer thread (or
//! another process's writer) commits, so reads never queue behind writes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::ToSql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::codec::{
    audit_from_row, due_from_row, is_undecodable, json_at, lossy_text_at, opt_time_at, outbox_from_row, run_from_row,
    step_from_row, store_error, time_at, token_from_row, AUDIT_COLUMNS, DUE_COLUMNS, DUE_RUN_COLUMNS, OUTBOX_COLUMNS,
    RUN_COLUMNS, STEP_COLUMNS, TOKEN_COLUMNS,
};
use super::schema::open_reader;
use super::shm::ShmGuard;
use crate::store::codec::micros;
use crate::store::{
    AuditQuery, AuditRecord, Cursor, DueEntry, FileState, OutboxRecord, OutboxStatus, PairingLookup, RunQuery,
    RunRecord, SopLoad, StepRecord, StoreError, Tallies, TokenRecord,
};
use fanin_core::runs::RunStatus;

/// Idle connections kept for reuse; more may be open while busy.
const MAX_IDLE_READERS: usize = 4;

pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// Checked before every read: a read may write its mark into the -shm.
    guard: Option<Arc<ShmGuard>>,
}

impl Readers {
    pub fn new(path: PathBuf, busy_timeout: Duration, guard: Option<Arc<ShmGuard>>) -> Readers {
        Readers { path, busy_timeout, idle: Mutex::new(Vec::new()), guard }
    }

    /// Runs `read` on a pooled connection in a blocking task.
    pub async fn run<T, F>(self: &Arc<Self>, doing: &'static str, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || readers.run_blocking(doing, read));
        task.await.map_err(|e| {
            StoreError::Unavailable(format!("store {}: {doing}: read task failed: {e}", self.path.display()))
        })?
    }

    /// Runs a lookup of one row by its primary key on the calling thread
    /// when an idle connection is at hand, else as [`Readers::run`]. Such a
    /// lookup on a warm page cache takes a few microseconds, less than the
    /// hand-over to a blocking thread and back that `run` pays; WAL readers
    /// never wait for the writer. For the hot path only (the bearer check of
    /// every authenticated request).
    pub async fn run_point<T, F>(self: &Arc<Self>, doing: &'static str, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pooled = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        match pooled {
            Some(conn) => self.read_with(conn, doing, read),
            None => self.run(doing, read).await,
        }
    }

    fn run_blocking<T>(
        &self,
        doing: &str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.read_with(self.take()?, doing, read)
    }

    fn read_with<T>(
        &self,
        conn: Connection,
        doing: &str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if let Some(guard) = &self.guard {
            if let Err(e) = guard.check_for_read() {
                self.give_back(conn);
                return Err(e);
            }
        }
        let result = read(&conn);
        // A connection that hit a database error is not trusted again.
        if !matches!(result, Err(rusqlite::Error::SqliteFailure(..))) {
            self.give_back(conn);
        }
        result.map_err(|e| store_error(&self.path, doing, e))
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => open_reader(&self.path, self.busy_timeout),
        }
    }

    pub fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

pub(super) fn idempotency_response(
    conn: &Connection,
    scope: &str,
    key: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Value>> {
    conn.prepare_cached("SELECT response FROM idempotency WHERE scope = ?1 AND key = ?2 AND expires_at > ?3")?
        .query_row(params![scope, key, micros(now)], |row| json_at(row, 0))
        .optional()
}

pub(super) fn get_run(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<RunRecord>> {
    conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))?
        .query_row([run_id], run_from_row)
        .optional()
}

/// A row of a list its decoder could not read, named by `key`.
struct Skipped {
    key: String,
    error: rusqlite::Error,
}

/// Decodes each row of a list on its own: `decode` failing on what a row
/// holds (as opposed to the database failing) yields a [`Skipped`] naming
/// the row by its column `key`, and the list goes on.
fn per_row<T>(
    decode: fn(&Row<'_>) -> rusqlite::Result<T>,
    key: usize,
) -> impl FnMut(&Row<'_>) -> rusqlite::Result<Result<T, Skipped>> {
    move |row| match decode(row) {
        Ok(record) => Ok(Ok(record)),
        Err(error) if is_undecodable(&error) => Ok(Err(Skipped { key: lossy_text_at(row, key), error })),
        Err(error) => Err(error),
    }
}

/// The readable rows of a list. Each one left out is logged: a JSON value
/// that cannot be read never gets here (it reads as a stand-in), so these
/// are rows with a column fanin never writes that way.
fn readable<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, Skipped>>>,
    table: &'static str,
) -> rusqlite::Result<Vec<T>> {
    let mut records = Vec::new();
    for row in rows {
        match row? {
            Ok(record) => records.push(record),
            Err(Skipped { key, error }) => {
                tracing::warn!(table, row = %key, %error, "store: left out a row that cannot be read")
            }
        }
    }
    Ok(records)
}

/// SQLite reads a negative LIMIT as "no limit"; a zero limit (the
/// `Default` of a query) means no limit too.
fn sql_limit(limit: usize) -> i64 {
    if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    }
}

/// Builds `WHERE a = ?1 AND b = ?2` from the filters that are set.
struct Filters {
    clauses: Vec<String>,
    values: Vec<Box<dyn ToSql>>,
}

impl Filters {
    fn new() -> Filters {
        Filters { clauses: Vec::new(), values: Vec::new() }
    }

    fn add(&mut self, condition: &str, value: impl ToSql + 'static) {
        self.values.push(Box::new(value));
        self.clauses.push(format!("{condition} ?{}", self.values.len()));
    }

    fn where_clause(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// Appends the limit as the last parameter and returns its placeholder.
    fn limit(&mut self, limit: usize) -> String {
        self.values.push(Box::new(sql_limit(limit)));
        format!("LIMIT ?{}", self.values.len())
    }

    /// Appends the limit and the offset (SQLite takes an offset only after
    /// a limit) and returns their clause.
    fn limit_offset(&mut self, limit: usize, offset: usize) -> String {
        let limit = self.limit(limit);
        self.values.push(Box::new(i64::try_from(offset).unwrap_or(i64::MAX)));
        format!("{limit} OFFSET ?{}", self.values.len())
    }
}

/// A stored count as a count (`COUNT(*)` is never negative).
fn count_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    Ok(row.get::<_, i64>(idx)?.max(0) as u64)
}

/// The filters of a run query; times compare as the integer microseconds
/// they are stored as.
fn run_filters(query: &RunQuery) -> Filters {
    let mut filters = Filters::new();
    if let Some(sop) = &query.sop {
        filters.add("sop =", sop.clone());
    }
    if let Some(status) = query.status {
        filters.add("status =", status.as_str());
    }
    if let Some(source) = query.source {
        filters.add("source =", source.as_str());
    }
    if let Some(since) = query.since {
        filters.add("started_at >=", micros(since));
    }
    if let Some(until) = query.until {
        filters.add("started_at <", micros(until));
    }
    filters
}

/// Newest first; runs accepted in the same microsecond, latest inserted first.
pub(super) fn list_runs(conn: &Connection, query: &RunQuery) -> rusqlite::Result<Vec<RunRecord>> {
    let mut filters = run_filters(query);
    let page = filters.limit_offset(query.limit, query.offset);
    let sql =
        format!("SELECT {RUN_COLUMNS} FROM runs {} ORDER BY started_at DESC, seq DESC {page}", filters.where_clause());
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(filters.values.iter()), per_row(run_from_row, 0))?;
    readable(rows, "runs")
}

pub(super) fn count_runs(conn: &Connection, query: &RunQuery) -> rusqlite::Result<u64> {
    let filters = run_filters(query);
    let sql = format!("SELECT COUNT(*) FROM runs {}", filters.where_clause());
    conn.prepare_cached(&sql)?.query_row(params_from_iter(filters.values.iter()), |row| count_at(row, 0))
}

/// One count per stored status, laid out in [`RunStatus::ALL`]'s order.
pub(super) fn run_counts(conn: &Connection) -> rusqlite::Result<Vec<(RunStatus, u64)>> {
    let mut counts: Vec<(RunStatus, u64)> = RunStatus::ALL.iter().map(|&status| (status, 0)).collect();
    let mut statement = conn.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let status: String = row.get(0)?;
        if let Some(slot) = counts.iter_mut().find(|(known, _)| known.as_str() == status) {
            slot.1 = count_at(row, 1)?;
        }
    }
    Ok(counts)
}

/// A minute's first microsecond, rounding down for times before 1970 too
/// (SQLite's `%` keeps the dividend's sign).
const MINUTE_OF_START: &str = "started_at - ((started_at % 60000000) + 60000000) % 60000000";

/// The range on `started_at` is served by `runs_by_start`.
pub(super) fn runs_per_minute(conn: &Connection, since: DateTime<Utc>) -> rusqlite::Result<Vec<(DateTime<Utc>, u64)>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {MINUTE_OF_START} AS minute, COUNT(*) FROM runs WHERE started_at >= ?1 GROUP BY minute ORDER BY minute"
    ))?;
    let rows = statement.query_map([micros(since)], |row| Ok((time_at(row, 0)?, count_at(row, 1)?)))?;
    rows.collect()
}

/// Oldest first, by the sequence number the store assigned.
pub(super) fn audit(conn: &Connection, query: &AuditQuery) -> rusqlite::Result<Vec<AuditRecord>> {
    let mut filters = Filters::new();
    if let Some(run_id) = &query.run_id {
        filters.add("run_id =", run_id.clone());
    }
    if let Some(after) = query.after_seq {
        filters.add("seq >", after);
    }
    let limit = filters.limit(query.limit);
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit {} ORDER BY seq {limit}", filters.where_clause());
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(filters.values.iter()), per_row(audit_from_row, 0))?;
    readable(rows, "audit")
}

/// Counts per SOP and status in SQL, then folds the statuses that hold a
/// slot, so the notion of "active" stays in [`RunStatus::is_active`]. Both
/// queries read one snapshot.
pub(super) fn sop_loads(conn: &Connection) -> rusqlite::Result<Vec<SopLoad>> {
    let snapshot = conn.unchecked_transaction()?;
    let mut loads: Vec<SopLoad> = Vec::new();
    {
        let mut statement = snapshot.prepare_cached(
            "SELECT sop, status, COUNT(*), MAX(finished_at) FROM runs GROUP BY sop, status ORDER BY sop",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let sop: String = row.get(0)?;
            let status: String = row.get(1)?;
            let count: u32 = row.get(2)?;
            let finished = opt_time_at(row, 3)?;
            if loads.last().is_none_or(|load| load.sop != sop) {
                loads.push(SopLoad { sop, ..SopLoad::default() });
            }
            let load = loads.last_mut().expect("pushed above");
            if RunStatus::parse(&status).is_some_and(RunStatus::is_active) {
                load.active += count;
            }
            load.last_finished_at = load.last_finished_at.max(finished);
        }
    }
    {
        let mut statement =
            snapshot.prepare_cached("SELECT sop, run_id FROM runs WHERE status = ?1 ORDER BY sop, started_at, seq")?;
        let mut rows = statement.query([RunStatus::Deferred.as_str()])?;
        while let Some(row) = rows.next()? {
            let sop: String = row.get(0)?;
            let run_id: String = row.get(1)?;
            if let Ok(i) = loads.binary_search_by(|load| load.sop.as_str().cmp(&sop)) {
                loads[i].deferred.push(run_id);
            }
        }
    }
    snapshot.commit()?;
    Ok(loads)
}

pub(super) fn find_token(conn: &Connection, prefix: &str) -> rusqlite::Result<Option<TokenRecord>> {
    conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE prefix = ?1"))?
        .query_row([prefix], token_from_row)
        .optional()
}

pub(super) fn list_tokens(conn: &Connection) -> rusqlite::Result<Vec<TokenRecord>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, prefix"))?;
    let rows = statement.query_map([], per_row(token_from_row, 0))?;
    readable(rows, "tokens")
}

pub(super) fn cron_last_check(conn: &Connection, key: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    conn.prepare_cached("SELECT last_check FROM cron_state WHERE key = ?1")?
        .query_row([key], |row| time_at(row, 0))
        .optional()
}

pub(super) fn cursor(conn: &Connection, source: &str) -> rusqlite::Result<Option<Cursor>> {
    conn.prepare_cached("SELECT value, updated_at FROM source_cursors WHERE source = ?1")?
        .query_row([source], |row| Ok(Cursor { value: row.get(0)?, updated_at: time_at(row, 1)? }))
        .optional()
}

pub(super) fn file_states(conn: &Connection, source: &str) -> rusqlite::Result<Vec<(String, FileState)>> {
    let mut statement =
        conn.prepare_cached("SELECT path, size, mtime, sha256 FROM file_states WHERE source = ?1 ORDER BY path")?;
    let rows = statement.query_map([source], |row| {
        let state =
            FileState { size: row.get::<_, i64>(1)?.max(0) as u64, mtime: time_at(row, 2)?, sha256: row.get(3)? };
        Ok((row.get(0)?, state))
    })?;
    rows.collect()
}

/// Touches the file's schema, not just the connection.
/// Live: unused, unexpired and not retired at `?2`.
pub(super) fn pairing_lookup(conn: &Connection, mac: &str, now: DateTime<Utc>) -> rusqlite::Result<PairingLookup> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(hash = ?1), 0), COALESCE(SUM(created_at <= ?2), 0) FROM pairing_codes
         WHERE used_at IS NULL AND retired_at IS NULL AND expires_at > ?2",
    )?
    .query_row(params![mac, micros(now)], |row| {
        Ok(PairingLookup { matches: row.get::<_, i64>(0)? > 0, live: row.get::<_, u32>(1)? })
    })
}

pub(super) fn ping(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("SELECT COUNT(*) FROM sqlite_master")?.query_row([], |row| row.get::<_, i64>(0))?;
    Ok(())
}

pub(super) fn steps(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<StepRecord>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {STEP_COLUMNS} FROM run_steps WHERE run_id = ?1 ORDER BY step_index"))?;
    let rows = statement.query_map([run_id], per_row(step_from_row, 1))?;
    readable(rows, "run_steps")
}

/// The statuses are literals, not parameters, so SQLite can use the partial
/// index that holds only open steps; ties on `created_at` go to the older
/// run (run ids are UUIDv7, in creation order), then the lower step.
pub(super) fn next_leasable_step(conn: &Connection, now: DateTime<Utc>) -> rusqlite::Result<Option<StepRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM run_steps
         WHERE status IN ('pending', 'leased') AND (status = 'pending' OR leased_until <= ?1)
           AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = run_steps.run_id
                       AND runs.status = 'waiting_agent' AND runs.step = run_steps.step_index)
         ORDER BY created_at, run_id, step_index LIMIT 1"
    ))?
    .query_row([micros(now)], step_from_row)
    .optional()
}

/// [`next_leasable_step`]'s steps and order, a lease held or not; the
/// statuses are literals so the partial index of open steps serves it.
pub(super) fn agent_steps(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<StepRecord>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM run_steps
         WHERE status IN ('pending', 'leased')
           AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = run_steps.run_id
                       AND runs.status = 'waiting_agent' AND runs.step = run_steps.step_index)
         ORDER BY created_at, run_id, step_index LIMIT ?1"
    ))?;
    let rows = statement.query_map([sql_limit(limit)], per_row(step_from_row, 1))?;
    readable(rows, "run_steps")
}

/// `o` is the head of its run: no entry of the run written before it is
/// still undelivered (pending or dead). The statuses are literals so the
/// partial index of undelivered entries serves the probe.
const OUTBOX_RUN_HEAD: &str = "NOT EXISTS (SELECT 1 FROM outbox AS earlier
    WHERE earlier.run_id = o.run_id AND earlier.status IN ('pending', 'dead') AND earlier.seq < o.seq)";

/// The due entries of one destination with their runs, in one snapshot, on
/// one connection (the outbox worker's read of a round). The order matches
/// the `outbox_due` index, so the walk stops after `limit` entries.
pub(super) fn outbox_due(
    conn: &Connection,
    destination: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<Vec<DueEntry>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {DUE_COLUMNS}, {DUE_RUN_COLUMNS} FROM outbox AS o LEFT JOIN runs AS r ON r.run_id = o.run_id
         WHERE o.status = 'pending' AND o.destination = ?1 AND o.next_attempt_at <= ?2 AND {OUTBOX_RUN_HEAD}
         ORDER BY o.next_attempt_at, o.seq LIMIT ?3"
    ))?;
    let rows = statement.query_map(params![destination, micros(now), sql_limit(limit)], due_from_row)?;
    rows.collect()
}

pub(super) fn outbox_next_due(conn: &Connection, destination: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    conn.prepare_cached(&format!(
        "SELECT o.next_attempt_at FROM outbox AS o
         WHERE o.status = 'pending' AND o.destination = ?1 AND {OUTBOX_RUN_HEAD}
         ORDER BY o.next_attempt_at LIMIT 1"
    ))?
    .query_row([destination], |row| time_at(row, 0))
    .optional()
}

/// Pending entries per destination (from the `outbox_due` index alone) and
/// runs waiting for approval, in one snapshot.
pub(super) fn tallies(conn: &Connection) -> rusqlite::Result<Tallies> {
    let snapshot = conn.unchecked_transaction()?;
    let mut tallies = Tallies::default();
    {
        let mut statement = snapshot
            .prepare_cached("SELECT destination, COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY destination")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let count: i64 = row.get(1)?;
            tallies.outbox_pending.insert(row.get(0)?, count.max(0) as u64);
        }
    }
    let approvals: i64 = snapshot
        .prepare_cached("SELECT COUNT(*) FROM runs WHERE status = ?1")?
        .query_row([RunStatus::PendingApproval.as_str()], |row| row.get(0))?;
    tallies.pending_approvals = approvals.max(0) as u64;
    Ok(tallies)
}

pub(super) fn outbox_list(
    conn: &Connection,
    status: Option<OutboxStatus>,
    limit: usize,
) -> rusqlite::Result<Vec<OutboxRecord>> {
    let mut filters = Filters::new();
    if let Some(status) = status {
        filters.add("status =", status.as_str());
    }
    let limit = filters.limit(limit);
    let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox {} ORDER BY seq {limit}", filters.where_clause());
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(filters.values.iter()), per_row(outbox_from_row, 1))?;
    readable(rows, "outbox")
}

/// Served by `outbox_by_status` when a status is given.
pub(super) fn count_outbox(conn: &Connection, status: Option<OutboxStatus>) -> rusqlite::Result<u64> {
    let mut filters = Filters::new();
    if let Some(status) = status {
        filters.add("status =", status.as_str());
    }
    let sql = format!("SELECT COUNT(*) FROM outbox {}", filters.where_clause());
    conn.prepare_cached(&sql)?.query_row(params_from_iter(filters.values.iter()), |row| count_at(row, 0))
}

/// The statuses are literals, so the partial index of undelivered entries
/// by run serves it (it holds `dead` ones too, filtered out here).
pub(super) fn outbox_pending_of_run(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, destination FROM outbox
         WHERE run_id = ?1 AND status IN ('pending', 'dead') AND status = 'pending' ORDER BY seq",
    )?;
    let rows = statement.query_map([run_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

pub(super) fn outbox_get(conn: &Connection, id: &str) -> rusqlite::Result<Option<OutboxRecord>> {
    conn.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"))?
        .query_row([id], outbox_from_row)
        .optional()
}
