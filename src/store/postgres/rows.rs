//! Rows of the PostgreSQL store as fanin's records. The columns are read in
//! the orders the `*_COLUMNS` lists give, and the values decoded as every
//! store decodes them ([`crate::store::codec`]). A row holding what fanin
//! never writes there (a status it does not know, a number out of range)
//! is an `Err` saying why, for the reader to leave out of a list or name.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::event::Source;
use crate::store::codec::{json_or_unreadable, named, parse_step_status, request_from_json, time_from_micros};
use crate::store::{
    AuditKind, AuditRecord, DueEntry, FileState, OutboxRecord, OutboxStatus, RunRecord, StepRecord, TokenRecord,
};
use fanin_core::runs::RunStatus;

/// Why a row cannot be read as its record.
pub(super) type Decoded<T> = Result<T, String>;

fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Decoded<T> {
    row.try_get(idx).map_err(|e| format!("column {}: {e}", column_name(row, idx)))
}

fn column_name(row: &Row, idx: usize) -> &str {
    row.columns().get(idx).map_or("?", |c| c.name())
}

fn count_at(row: &Row, idx: usize) -> Decoded<u32> {
    let n: i64 = get(row, idx)?;
    u32::try_from(n).map_err(|_| format!("column {}: {n} out of range", column_name(row, idx)))
}

fn time_at(row: &Row, idx: usize) -> Decoded<DateTime<Utc>> {
    time_from_micros(get(row, idx)?).map_err(|e| format!("column {}: {e}", column_name(row, idx)))
}

fn opt_time_at(row: &Row, idx: usize) -> Decoded<Option<DateTime<Utc>>> {
    match get::<Option<i64>>(row, idx)? {
        None => Ok(None),
        Some(_) => time_at(row, idx).map(Some),
    }
}

/// A JSON column: never an error (see [`json_or_unreadable`]).
pub(super) fn json_at(row: &Row, idx: usize) -> Decoded<Value> {
    let text: &str = get(row, idx)?;
    Ok(json_or_unreadable(text.as_bytes()))
}

fn opt_json_at(row: &Row, idx: usize) -> Decoded<Option<Value>> {
    let text: Option<&str> = get(row, idx)?;
    Ok(text.map(|t| json_or_unreadable(t.as_bytes())))
}

fn named_at<T>(row: &Row, idx: usize, what: &str, parse: fn(&str) -> Option<T>) -> Decoded<T> {
    named(get(row, idx)?, what, parse)
}

/// A text column for naming a row that cannot be read.
pub(super) fn text_at(row: &Row, idx: usize) -> String {
    match row.try_get::<_, Option<&str>>(idx) {
        Ok(text) => text.unwrap_or_default().to_owned(),
        Err(_) => row.try_get::<_, Option<i64>>(idx).ok().flatten().map(|n| n.to_string()).unwrap_or_default(),
    }
}

/// The columns [`run_from_row`] reads, in its order.
pub(super) const RUN_COLUMNS: &str = "run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic, \
     event_id, payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced, step, request, session";

pub(super) fn run_from_row(row: &Row) -> Decoded<RunRecord> {
    run_from_row_at(row, 0)
}

fn run_from_row_at(row: &Row, at: usize) -> Decoded<RunRecord> {
    Ok(RunRecord {
        run_id: get(row, at)?,
        sop: get(row, at + 1)?,
        sop_version: get(row, at + 2)?,
        status: named_at(row, at + 3, "run status", RunStatus::parse)?,
        trigger_index: count_at(row, at + 4)?,
        trigger: get(row, at + 5)?,
        source: named_at(row, at + 6, "source", Source::parse)?,
        topic: get(row, at + 7)?,
        event_id: get(row, at + 8)?,
        payload: json_at(row, at + 9)?,
        client: get(row, at + 10)?,
        idempotency_key: get(row, at + 11)?,
        started_at: time_at(row, at + 12)?,
        updated_at: time_at(row, at + 13)?,
        finished_at: opt_time_at(row, at + 14)?,
        coalesced: count_at(row, at + 15)?,
        step: count_at(row, at + 16)?,
        request: opt_json_at(row, at + 17)?.map(request_from_json),
        session: opt_json_at(row, at + 18)?,
    })
}

/// The columns [`step_from_row`] reads, in its order.
pub(super) const STEP_COLUMNS: &str =
    "run_id, step_index, status, lease_id, leased_until, attempts, output, created_at, updated_at";

pub(super) fn step_from_row(row: &Row) -> Decoded<StepRecord> {
    Ok(StepRecord {
        run_id: get(row, 0)?,
        index: count_at(row, 1)?,
        status: named_at(row, 2, "step status", parse_step_status)?,
        lease_id: get(row, 3)?,
        leased_until: opt_time_at(row, 4)?,
        attempts: count_at(row, 5)?,
        output: opt_json_at(row, 6)?,
        created_at: time_at(row, 7)?,
        updated_at: time_at(row, 8)?,
    })
}

/// The columns [`outbox_from_row`] reads, in its order.
pub(super) const OUTBOX_COLUMNS: &str = "id, seq, run_id, destination, envelope, status, attempts, next_attempt_at, \
     last_error, created_at, delivered_at";

pub(super) fn outbox_from_row(row: &Row) -> Decoded<OutboxRecord> {
    Ok(OutboxRecord {
        id: get(row, 0)?,
        seq: get(row, 1)?,
        run_id: get(row, 2)?,
        destination: get(row, 3)?,
        envelope: json_at(row, 4)?,
        status: named_at(row, 5, "outbox status", OutboxStatus::parse)?,
        attempts: count_at(row, 6)?,
        next_attempt_at: time_at(row, 7)?,
        last_error: get(row, 8)?,
        created_at: time_at(row, 9)?,
        delivered_at: opt_time_at(row, 10)?,
    })
}

/// The outbox columns [`due_from_row`] reads (from `outbox AS o`), then
/// [`DUE_RUN_COLUMNS`].
pub(super) const DUE_COLUMNS: &str = "o.id, o.seq, o.run_id, o.destination, o.envelope, o.attempts, o.last_error";

/// [`RUN_COLUMNS`] of `runs AS r` with the payload left out (`'null'`).
pub(super) const DUE_RUN_COLUMNS: &str = "r.run_id, r.sop, r.sop_version, r.status, r.trigger_index, r.trigger_desc, \
     r.source, r.topic, r.event_id, 'null'::TEXT, r.client, r.idempotency_key, r.started_at, r.updated_at, \
     r.finished_at, r.coalesced, r.step, r.request, r.session";

/// A due entry and its run (all run columns NULL when there is no such
/// run). One that cannot be decoded comes back without its run and saying
/// why, so the worker dead-letters it rather than meeting it every round.
pub(super) fn due_from_row(row: &Row) -> DueEntry {
    decoded_due_from_row(row).unwrap_or_else(|e| DueEntry {
        id: text_at(row, 0),
        seq: row.try_get(1).unwrap_or(0),
        run_id: text_at(row, 2),
        destination: text_at(row, 3),
        envelope: text_at(row, 4),
        attempts: row.try_get::<_, i64>(5).ok().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        last_error: None,
        run: None,
        unreadable: Some(format!("the stored entry cannot be read: {e}")),
    })
}

fn decoded_due_from_row(row: &Row) -> Decoded<DueEntry> {
    let run = match get::<Option<&str>>(row, 7)? {
        None => None,
        Some(_) => Some(run_from_row_at(row, 7)?),
    };
    Ok(DueEntry {
        id: get(row, 0)?,
        seq: get(row, 1)?,
        run_id: get(row, 2)?,
        destination: get(row, 3)?,
        envelope: get(row, 4)?,
        attempts: count_at(row, 5)?,
        last_error: get(row, 6)?,
        run,
        unreadable: None,
    })
}

/// The columns [`audit_from_row`] reads, in its order.
pub(super) const AUDIT_COLUMNS: &str = "seq, at, kind, run_id, sop, detail";

pub(super) fn audit_from_row(row: &Row) -> Decoded<AuditRecord> {
    Ok(AuditRecord {
        seq: get(row, 0)?,
        at: time_at(row, 1)?,
        kind: named_at(row, 2, "audit kind", AuditKind::parse)?,
        run_id: get(row, 3)?,
        sop: get(row, 4)?,
        detail: json_at(row, 5)?,
    })
}

/// The columns [`token_from_row`] reads, in its order.
pub(super) const TOKEN_COLUMNS: &str = "prefix, hash, subject, created_at, revoked_at";

pub(super) fn token_from_row(row: &Row) -> Decoded<TokenRecord> {
    Ok(TokenRecord {
        prefix: get(row, 0)?,
        hash: get(row, 1)?,
        subject: get(row, 2)?,
        created_at: time_at(row, 3)?,
        revoked_at: opt_time_at(row, 4)?,
    })
}

/// A file state (`path, size, mtime, sha256`) and its path.
pub(super) fn file_state_from_row(row: &Row) -> Decoded<(String, FileState)> {
    let size: i64 = get(row, 1)?;
    let size = u64::try_from(size).map_err(|_| format!("column size: {size} out of range"))?;
    Ok((get(row, 0)?, FileState { size, mtime: time_at(row, 2)?, sha256: get(row, 3)? }))
}

/// A time read by a query of its own (a cursor, a cron check).
pub(super) fn time_of(row: &Row, idx: usize) -> Decoded<DateTime<Utc>> {
    time_at(row, idx)
}
