//! Reads: a few pooled connections, each used by one read at a time, so a
//! read that needs one snapshot for two queries (SOP loads, tallies) can
//! hold a transaction on it. Reads never wait for the writer: PostgreSQL
//! serves them from the last committed state.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::connect::Connector;
use super::rows::{
    audit_from_row, due_from_row, file_state_from_row, json_at, outbox_from_row, run_from_row, step_from_row, text_at,
    time_of, token_from_row, Decoded, AUDIT_COLUMNS, DUE_COLUMNS, DUE_RUN_COLUMNS, OUTBOX_COLUMNS, RUN_COLUMNS,
    STEP_COLUMNS, TOKEN_COLUMNS,
};
use super::{pg_error, Conn};
use crate::store::codec::micros;
use crate::store::{
    AuditQuery, AuditRecord, Cursor, DueEntry, FileState, OutboxRecord, OutboxStatus, PairingLookup, RunQuery,
    RunRecord, SopLoad, StepRecord, StoreError, Tallies, TokenRecord,
};
use fanin_core::runs::RunStatus;

/// Connections reading at once; more reads wait for one.
const MAX_READERS: usize = 8;

/// Why a read failed: the database, or a record it holds.
pub(super) enum ReadError {
    Db(tokio_postgres::Error),
    Undecodable(String),
}

impl From<tokio_postgres::Error> for ReadError {
    fn from(e: tokio_postgres::Error) -> ReadError {
        ReadError::Db(e)
    }
}

pub(super) type Read<T> = Result<T, ReadError>;

pub(super) struct Readers {
    connector: Connector,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl Readers {
    pub fn new(connector: Connector) -> Readers {
        Readers { connector, idle: Mutex::new(Vec::new()), permits: Semaphore::new(MAX_READERS) }
    }

    pub fn give_back(&self, conn: Conn) {
        if !conn.client.is_closed() {
            self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(conn);
        }
    }

    /// A pooled connection (one made if none is idle), for one read.
    pub async fn take(&self) -> Result<Lease<'_>, StoreError> {
        let name = &self.connector.name;
        let permit =
            self.permits.acquire().await.map_err(|_| StoreError::Unavailable(format!("store {name}: closed")))?;
        let pooled = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => Conn::new(self.connector.connect().await.map_err(|e| pg_error(name, "connect to read", e))?),
        };
        Ok(Lease { conn: Some(conn), _permit: permit })
    }

    /// What a read on `lease` came to. The connection is kept only after a
    /// read the database answered: one that failed may be mid-transaction
    /// or broken.
    pub fn finish<T>(&self, mut lease: Lease<'_>, doing: &str, result: Read<T>) -> Result<T, StoreError> {
        let name = &self.connector.name;
        let conn = lease.conn.take().expect("a lease holds its connection until finished");
        match result {
            Ok(value) => {
                self.give_back(conn);
                Ok(value)
            }
            Err(ReadError::Db(e)) => Err(pg_error(name, doing, e)),
            Err(ReadError::Undecodable(reason)) => {
                self.give_back(conn);
                Err(StoreError::Invalid(format!("store {name}: {doing}: {reason}")))
            }
        }
    }
}

/// A connection lent to one read, and its place among [`MAX_READERS`].
pub(super) struct Lease<'a> {
    conn: Option<Conn>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("a lease holds its connection until finished")
    }
}

fn one<T>(row: Option<Row>, decode: fn(&Row) -> Decoded<T>) -> Read<Option<T>> {
    row.map(|row| decode(&row)).transpose().map_err(ReadError::Undecodable)
}

/// The readable rows of a list; each one left out is logged, named by its
/// column `key`.
fn readable<T>(rows: Vec<Row>, decode: fn(&Row) -> Decoded<T>, key: usize, table: &'static str) -> Vec<T> {
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        match decode(row) {
            Ok(record) => records.push(record),
            Err(error) => {
                tracing::warn!(table, row = %text_at(row, key), %error, "store: left out a row that cannot be read")
            }
        }
    }
    records
}

/// PostgreSQL reads `LIMIT NULL` as no limit; a zero limit means none too.
fn sql_limit(limit: usize) -> Option<i64> {
    (limit > 0).then(|| i64::try_from(limit).unwrap_or(i64::MAX))
}

/// Builds `WHERE a = $1 AND b = $2` from the filters that are set.
#[derive(Default)]
struct Filters {
    clauses: Vec<String>,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filters {
    fn add(&mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) {
        self.values.push(Box::new(value));
        self.clauses.push(format!("{condition} ${}", self.values.len()));
    }

    fn where_clause(&self) -> String {
        match self.clauses.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", self.clauses.join(" AND ")),
        }
    }

    fn limit(&mut self, limit: usize) -> String {
        self.values.push(Box::new(sql_limit(limit)));
        format!("LIMIT ${}", self.values.len())
    }

    fn limit_offset(&mut self, limit: usize, offset: usize) -> String {
        let limit = self.limit(limit);
        self.values.push(Box::new(i64::try_from(offset).unwrap_or(i64::MAX)));
        format!("{limit} OFFSET ${}", self.values.len())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

pub(super) async fn idempotency_response(
    conn: &Conn,
    scope: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Read<Option<Value>> {
    let row = conn
        .query_opt(
            "SELECT response FROM idempotency WHERE scope = $1 AND key = $2 AND expires_at > $3",
            &[&scope, &key, &micros(now)],
        )
        .await?;
    one(row, |row| json_at(row, 0))
}

pub(super) async fn get_run(conn: &Conn, run_id: &str) -> Read<Option<RunRecord>> {
    let row = conn.query_opt(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"), &[&run_id]).await?;
    one(row, run_from_row)
}

/// A count as a count (`COUNT(*)` is never negative).
fn count_at(row: &Row, idx: usize) -> Read<u64> {
    Ok(row.try_get::<_, i64>(idx)?.max(0) as u64)
}

/// The filters of a run query; times compare as the integer microseconds
/// they are stored as.
fn run_filters(query: &RunQuery) -> Filters {
    let mut filters = Filters::default();
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
pub(super) async fn list_runs(conn: &Conn, query: &RunQuery) -> Read<Vec<RunRecord>> {
    let mut filters = run_filters(query);
    let page = filters.limit_offset(query.limit, query.offset);
    let sql =
        format!("SELECT {RUN_COLUMNS} FROM runs {} ORDER BY started_at DESC, seq DESC {page}", filters.where_clause());
    let rows = conn.query(&sql, &filters.params()).await?;
    Ok(readable(rows, run_from_row, 0, "runs"))
}

pub(super) async fn count_runs(conn: &Conn, query: &RunQuery) -> Read<u64> {
    let filters = run_filters(query);
    let sql = format!("SELECT COUNT(*) FROM runs {}", filters.where_clause());
    count_at(&conn.query_one(&sql, &filters.params()).await?, 0)
}

/// One count per stored status, laid out in [`RunStatus::ALL`]'s order.
pub(super) async fn run_counts(conn: &Conn) -> Read<Vec<(RunStatus, u64)>> {
    let rows = conn.query("SELECT status, COUNT(*) FROM runs GROUP BY status", &[]).await?;
    let mut counts: Vec<(RunStatus, u64)> = RunStatus::ALL.iter().map(|&status| (status, 0)).collect();
    for row in &rows {
        let status: String = row.try_get(0)?;
        if let Some(slot) = counts.iter_mut().find(|(known, _)| known.as_str() == status) {
            slot.1 = count_at(row, 1)?;
        }
    }
    Ok(counts)
}

/// A minute's first microsecond, rounding down for times before 1970 too
/// (PostgreSQL's `%` keeps the dividend's sign).
const MINUTE_OF_START: &str = "started_at - ((started_at % 60000000) + 60000000) % 60000000";

/// The range on `started_at` is served by `runs_by_start`.
pub(super) async fn runs_per_minute(conn: &Conn, since: DateTime<Utc>) -> Read<Vec<(DateTime<Utc>, u64)>> {
    let sql = format!(
        "SELECT {MINUTE_OF_START} AS minute, COUNT(*) FROM runs WHERE started_at >= $1 GROUP BY minute ORDER BY minute"
    );
    let rows = conn.query(&sql, &[&micros(since)]).await?;
    rows.iter().map(|row| Ok((time_of(row, 0).map_err(ReadError::Undecodable)?, count_at(row, 1)?))).collect()
}

/// Oldest first, by the sequence number the store assigned.
pub(super) async fn audit(conn: &Conn, query: &AuditQuery) -> Read<Vec<AuditRecord>> {
    let mut filters = Filters::default();
    if let Some(run_id) = &query.run_id {
        filters.add("run_id =", run_id.clone());
    }
    if let Some(after) = query.after_seq {
        filters.add("seq >", after);
    }
    let limit = filters.limit(query.limit);
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit {} ORDER BY seq {limit}", filters.where_clause());
    let rows = conn.query(&sql, &filters.params()).await?;
    Ok(readable(rows, audit_from_row, 0, "audit"))
}

/// Counts per SOP and status, folded by [`RunStatus::is_active`], and the
/// backlog, in one snapshot.
pub(super) async fn sop_loads(conn: &Conn) -> Read<Vec<SopLoad>> {
    conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let counts = conn
        .query("SELECT sop, status, COUNT(*), MAX(finished_at) FROM runs GROUP BY sop, status ORDER BY sop", &[])
        .await?;
    let deferred = conn
        .query(
            "SELECT sop, run_id FROM runs WHERE status = $1 ORDER BY sop, started_at, seq",
            &[&RunStatus::Deferred.as_str()],
        )
        .await?;
    conn.batch("COMMIT").await?;
    let mut loads: Vec<SopLoad> = Vec::new();
    for row in &counts {
        let sop: String = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        let count: i64 = row.try_get(2)?;
        let finished = row.try_get::<_, Option<i64>>(3)?.map(crate::store::codec::time_from_micros).transpose();
        let finished = finished.map_err(ReadError::Undecodable)?;
        if loads.last().is_none_or(|load| load.sop != sop) {
            loads.push(SopLoad { sop, ..SopLoad::default() });
        }
        let load = loads.last_mut().expect("pushed above");
        if RunStatus::parse(&status).is_some_and(RunStatus::is_active) {
            load.active += u32::try_from(count).unwrap_or(u32::MAX);
        }
        load.last_finished_at = load.last_finished_at.max(finished);
    }
    for row in &deferred {
        let sop: String = row.try_get(0)?;
        if let Ok(i) = loads.binary_search_by(|load| load.sop.as_str().cmp(&sop)) {
            loads[i].deferred.push(row.try_get(1)?);
        }
    }
    Ok(loads)
}

pub(super) async fn find_token(conn: &Conn, prefix: &str) -> Read<Option<TokenRecord>> {
    let row = conn.query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE prefix = $1"), &[&prefix]).await?;
    one(row, token_from_row)
}

pub(super) async fn list_tokens(conn: &Conn) -> Read<Vec<TokenRecord>> {
    let rows = conn.query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, prefix"), &[]).await?;
    Ok(readable(rows, token_from_row, 0, "tokens"))
}

pub(super) async fn cron_last_check(conn: &Conn, key: &str) -> Read<Option<DateTime<Utc>>> {
    let row = conn.query_opt("SELECT last_check FROM cron_state WHERE key = $1", &[&key]).await?;
    one(row, |row| time_of(row, 0))
}

pub(super) async fn cursor(conn: &Conn, source: &str) -> Read<Option<Cursor>> {
    let row = conn.query_opt("SELECT value, updated_at FROM source_cursors WHERE source = $1", &[&source]).await?;
    one(row, |row| Ok(Cursor { value: row.try_get(0).map_err(|e| e.to_string())?, updated_at: time_of(row, 1)? }))
}

pub(super) async fn file_states(conn: &Conn, source: &str) -> Read<Vec<(String, FileState)>> {
    let sql = "SELECT path, size, mtime, sha256 FROM file_states WHERE source = $1 ORDER BY path";
    let rows = conn.query(sql, &[&source]).await?;
    rows.iter().map(|row| file_state_from_row(row).map_err(ReadError::Undecodable)).collect()
}

/// Live: unused, unexpired and not retired at `now`.
pub(super) async fn pairing_lookup(conn: &Conn, mac: &str, now: DateTime<Utc>) -> Read<PairingLookup> {
    let row = conn
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE hash = $1), COUNT(*) FILTER (WHERE created_at <= $2) FROM pairing_codes
             WHERE used_at IS NULL AND retired_at IS NULL AND expires_at > $2",
            &[&mac, &micros(now)],
        )
        .await?;
    let matches: i64 = row.try_get(0)?;
    let live: i64 = row.try_get(1)?;
    Ok(PairingLookup { matches: matches > 0, live: u32::try_from(live).unwrap_or(u32::MAX) })
}

/// Touches the schema, not just the connection.
pub(super) async fn ping(conn: &Conn) -> Read<()> {
    conn.query("SELECT version FROM fanin_schema LIMIT 1", &[]).await?;
    Ok(())
}

pub(super) async fn steps(conn: &Conn, run_id: &str) -> Read<Vec<StepRecord>> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM run_steps WHERE run_id = $1 ORDER BY step_index");
    let rows = conn.query(&sql, &[&run_id]).await?;
    Ok(readable(rows, step_from_row, 1, "run_steps"))
}

/// The statuses are literals so the partial index of open steps serves it;
/// ties go to the older run (UUIDv7 ids), then the lower step.
pub(super) async fn next_leasable_step(conn: &Conn, now: DateTime<Utc>) -> Read<Option<StepRecord>> {
    let row = conn
        .query_opt(
            &format!(
                "SELECT {STEP_COLUMNS} FROM run_steps
                 WHERE status IN ('pending', 'leased') AND (status = 'pending' OR leased_until <= $1)
                   AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = run_steps.run_id
                               AND runs.status = 'waiting_agent' AND runs.step = run_steps.step_index)
                 ORDER BY created_at, run_id, step_index LIMIT 1"
            ),
            &[&micros(now)],
        )
        .await?;
    one(row, step_from_row)
}

/// [`next_leasable_step`]'s steps and order, a lease held or not; the
/// statuses are literals so the partial index of open steps serves it.
pub(super) async fn agent_steps(conn: &Conn, limit: usize) -> Read<Vec<StepRecord>> {
    let sql = format!(
        "SELECT {STEP_COLUMNS} FROM run_steps
         WHERE status IN ('pending', 'leased')
           AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = run_steps.run_id
                       AND runs.status = 'waiting_agent' AND runs.step = run_steps.step_index)
         ORDER BY created_at, run_id, step_index LIMIT $1"
    );
    let rows = conn.query(&sql, &[&sql_limit(limit)]).await?;
    Ok(readable(rows, step_from_row, 1, "run_steps"))
}

/// `o` is the head of its run: no earlier entry of the run is undelivered.
const OUTBOX_RUN_HEAD: &str = "NOT EXISTS (SELECT 1 FROM outbox AS earlier
    WHERE earlier.run_id = o.run_id AND earlier.status IN ('pending', 'dead') AND earlier.seq < o.seq)";

pub(super) async fn outbox_due(
    conn: &Conn,
    destination: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Read<Vec<DueEntry>> {
    let sql = format!(
        "SELECT {DUE_COLUMNS}, {DUE_RUN_COLUMNS} FROM outbox AS o LEFT JOIN runs AS r ON r.run_id = o.run_id
         WHERE o.status = 'pending' AND o.destination = $1 AND o.next_attempt_at <= $2 AND {OUTBOX_RUN_HEAD}
         ORDER BY o.next_attempt_at, o.seq LIMIT $3"
    );
    let rows = conn.query(&sql, &[&destination, &micros(now), &sql_limit(limit)]).await?;
    Ok(rows.iter().map(due_from_row).collect())
}

pub(super) async fn outbox_next_due(conn: &Conn, destination: &str) -> Read<Option<DateTime<Utc>>> {
    let sql = format!(
        "SELECT o.next_attempt_at FROM outbox AS o
         WHERE o.status = 'pending' AND o.destination = $1 AND {OUTBOX_RUN_HEAD}
         ORDER BY o.next_attempt_at LIMIT 1"
    );
    let row = conn.query_opt(&sql, &[&destination]).await?;
    one(row, |row| time_of(row, 0))
}

/// Pending entries per destination and runs waiting for approval, in one
/// snapshot.
pub(super) async fn tallies(conn: &Conn) -> Read<Tallies> {
    conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let pending = conn
        .query("SELECT destination, COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY destination", &[])
        .await?;
    let approvals =
        conn.query_one("SELECT COUNT(*) FROM runs WHERE status = $1", &[&RunStatus::PendingApproval.as_str()]).await?;
    conn.batch("COMMIT").await?;
    let mut tallies = Tallies::default();
    for row in &pending {
        let count: i64 = row.try_get(1)?;
        tallies.outbox_pending.insert(row.try_get(0)?, count.max(0) as u64);
    }
    tallies.pending_approvals = approvals.try_get::<_, i64>(0)?.max(0) as u64;
    Ok(tallies)
}

pub(super) async fn outbox_list(conn: &Conn, status: Option<OutboxStatus>, limit: usize) -> Read<Vec<OutboxRecord>> {
    let mut filters = Filters::default();
    if let Some(status) = status {
        filters.add("status =", status.as_str());
    }
    let limit = filters.limit(limit);
    let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox {} ORDER BY seq {limit}", filters.where_clause());
    let rows = conn.query(&sql, &filters.params()).await?;
    Ok(readable(rows, outbox_from_row, 1, "outbox"))
}

/// Served by `outbox_by_status` when a status is given.
pub(super) async fn count_outbox(conn: &Conn, status: Option<OutboxStatus>) -> Read<u64> {
    let mut filters = Filters::default();
    if let Some(status) = status {
        filters.add("status =", status.as_str());
    }
    let sql = format!("SELECT COUNT(*) FROM outbox {}", filters.where_clause());
    count_at(&conn.query_one(&sql, &filters.params()).await?, 0)
}

pub(super) async fn outbox_pending_of_run(conn: &Conn, run_id: &str) -> Read<Vec<(String, String)>> {
    let rows = conn
        .query(
            "SELECT id, destination FROM outbox
             WHERE run_id = $1 AND status IN ('pending', 'dead') AND status = 'pending' ORDER BY seq",
            &[&run_id],
        )
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

pub(super) async fn outbox_get(conn: &Conn, id: &str) -> Read<Option<OutboxRecord>> {
    let row = conn.query_opt(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"), &[&id]).await?;
    one(row, outbox_from_row)
}
