//! Conversions between fanin's records and SQLite rows, and between SQLite
//! errors and [`StoreError`]. The values themselves are encoded as every
//! store encodes them ([`crate::store::codec`]): times as integer
//! microseconds, JSON as text.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::types::{Type, ValueRef};
use rusqlite::{ErrorCode, Row};
use serde_json::Value;

use crate::event::{Request, Source};
use crate::store::codec::{json_or_unreadable, named, parse_step_status, request_from_json, time_from_micros};
use crate::store::{
    AuditKind, AuditRecord, DueEntry, OutboxRecord, OutboxStatus, RunRecord, StepRecord, StoreError, TokenRecord,
};
use fanin_core::runs::RunStatus;

fn unreadable(idx: usize, reason: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, reason.into())
}

pub(super) fn time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    time_from_micros(row.get(idx)?).map_err(|reason| unreadable(idx, reason))
}

pub(super) fn opt_time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => time_at(row, idx).map(Some),
    }
}

/// A JSON column. Never an error: what cannot be read back (nested deeper
/// than serde_json reads, not JSON, not text) comes back as the
/// [`store::unreadable`](crate::store::unreadable) stand-in saying why, so
/// the row it is part of still reads.
pub(super) fn json_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Value> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => json_or_unreadable(bytes),
        other => crate::store::unreadable(format!("stored as {}, not JSON text", other.data_type()), 0),
    })
}

pub(super) fn opt_json_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Value>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        _ => json_at(row, idx).map(Some),
    }
}

/// A text column as text, whatever it holds (for naming a bad row).
pub(super) fn lossy_text_at(row: &Row<'_>, idx: usize) -> String {
    match row.get_ref(idx) {
        Ok(ValueRef::Text(bytes) | ValueRef::Blob(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Ok(ValueRef::Integer(n)) => n.to_string(),
        Ok(ValueRef::Real(x)) => x.to_string(),
        Ok(ValueRef::Null) | Err(_) => String::new(),
    }
}

/// Whether `e` says a row holds something its decoder cannot turn into a
/// record (as opposed to the database failing).
pub(super) fn is_undecodable(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

/// A text column holding one of a closed set of names.
fn named_at<T>(row: &Row<'_>, idx: usize, what: &str, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    named(&text, what, parse).map_err(|reason| unreadable(idx, reason))
}

/// The columns [`run_from_row`] reads, in its order.
pub(super) const RUN_COLUMNS: &str = "run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic, \
     event_id, payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced, step, request, session";

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    run_from_row_at(row, 0)
}

/// A run whose [`RUN_COLUMNS`] start at column `at`.
fn run_from_row_at(row: &Row<'_>, at: usize) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: row.get(at)?,
        sop: row.get(at + 1)?,
        sop_version: row.get(at + 2)?,
        status: named_at(row, at + 3, "run status", RunStatus::parse)?,
        trigger_index: row.get(at + 4)?,
        trigger: row.get(at + 5)?,
        source: named_at(row, at + 6, "source", Source::parse)?,
        topic: row.get(at + 7)?,
        event_id: row.get(at + 8)?,
        payload: json_at(row, at + 9)?,
        client: row.get(at + 10)?,
        idempotency_key: row.get(at + 11)?,
        started_at: time_at(row, at + 12)?,
        updated_at: time_at(row, at + 13)?,
        finished_at: opt_time_at(row, at + 14)?,
        coalesced: row.get(at + 15)?,
        step: row.get(at + 16)?,
        request: request_at(row, at + 17)?,
        session: opt_json_at(row, at + 18)?,
    })
}

/// A run's webhook request (see [`request_from_json`]).
fn request_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Request>> {
    Ok(opt_json_at(row, idx)?.map(request_from_json))
}

/// The columns [`step_from_row`] reads, in its order.
pub(super) const STEP_COLUMNS: &str =
    "run_id, step_index, status, lease_id, leased_until, attempts, output, created_at, updated_at";

pub(super) fn step_from_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
    Ok(StepRecord {
        run_id: row.get(0)?,
        index: row.get(1)?,
        status: named_at(row, 2, "step status", parse_step_status)?,
        lease_id: row.get(3)?,
        leased_until: opt_time_at(row, 4)?,
        attempts: row.get(5)?,
        output: opt_json_at(row, 6)?,
        created_at: time_at(row, 7)?,
        updated_at: time_at(row, 8)?,
    })
}

/// The columns [`outbox_from_row`] reads, in its order.
pub(super) const OUTBOX_COLUMNS: &str = "id, seq, run_id, destination, envelope, status, attempts, next_attempt_at, \
     last_error, created_at, delivered_at";

pub(super) fn outbox_from_row(row: &Row<'_>) -> rusqlite::Result<OutboxRecord> {
    Ok(OutboxRecord {
        id: row.get(0)?,
        seq: row.get(1)?,
        run_id: row.get(2)?,
        destination: row.get(3)?,
        envelope: json_at(row, 4)?,
        status: named_at(row, 5, "outbox status", OutboxStatus::parse)?,
        attempts: row.get(6)?,
        next_attempt_at: time_at(row, 7)?,
        last_error: row.get(8)?,
        created_at: time_at(row, 9)?,
        delivered_at: opt_time_at(row, 10)?,
    })
}

/// The outbox columns [`due_from_row`] reads (from `outbox AS o`), then
/// [`DUE_RUN_COLUMNS`].
pub(super) const DUE_COLUMNS: &str = "o.id, o.seq, o.run_id, o.destination, o.envelope, o.attempts, o.last_error";

/// [`RUN_COLUMNS`] of `runs AS r` with the payload left out (`'null'`).
pub(super) const DUE_RUN_COLUMNS: &str = "r.run_id, r.sop, r.sop_version, r.status, r.trigger_index, r.trigger_desc, \
     r.source, r.topic, r.event_id, 'null', r.client, r.idempotency_key, r.started_at, r.updated_at, r.finished_at, \
     r.coalesced, r.step, r.request, r.session";

/// A due entry and its run (`LEFT JOIN`: all run columns NULL when there is
/// no such run).
/// A due entry for the delivery worker. One whose row (or its run's) cannot
/// be decoded comes back without its run, so the worker dead-letters it
/// rather than meeting it again on every round.
pub(super) fn due_from_row(row: &Row<'_>) -> rusqlite::Result<DueEntry> {
    match decoded_due_from_row(row) {
        Err(e) if is_undecodable(&e) => Ok(DueEntry {
            id: row.get(0)?,
            seq: row.get(1)?,
            run_id: lossy_text_at(row, 2),
            destination: lossy_text_at(row, 3),
            envelope: lossy_text_at(row, 4),
            attempts: row.get(5).unwrap_or(0),
            last_error: None,
            run: None,
            unreadable: Some(format!("the stored entry cannot be read: {e}")),
        }),
        other => other,
    }
}

fn decoded_due_from_row(row: &Row<'_>) -> rusqlite::Result<DueEntry> {
    let run = match row.get::<_, Option<String>>(7)? {
        None => None,
        Some(_) => Some(run_from_row_at(row, 7)?),
    };
    Ok(DueEntry {
        id: row.get(0)?,
        seq: row.get(1)?,
        run_id: row.get(2)?,
        destination: row.get(3)?,
        envelope: row.get(4)?,
        attempts: row.get(5)?,
        last_error: row.get(6)?,
        run,
        unreadable: None,
    })
}

/// The columns [`audit_from_row`] reads, in its order.
pub(super) const AUDIT_COLUMNS: &str = "seq, at, kind, run_id, sop, detail";

pub(super) fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.get(0)?,
        at: time_at(row, 1)?,
        kind: named_at(row, 2, "audit kind", AuditKind::parse)?,
        run_id: row.get(3)?,
        sop: row.get(4)?,
        detail: json_at(row, 5)?,
    })
}

/// The columns [`token_from_row`] reads, in its order.
pub(super) const TOKEN_COLUMNS: &str = "prefix, hash, subject, created_at, revoked_at";

pub(super) fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        prefix: row.get(0)?,
        hash: row.get(1)?,
        subject: row.get(2)?,
        created_at: time_at(row, 3)?,
        revoked_at: opt_time_at(row, 4)?,
    })
}

pub(super) fn is_constraint_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// Names the file and what was being done. A row that cannot be decoded is
/// `Invalid` (the file holds something this fanin does not understand);
/// anything else from SQLite is `Unavailable` (disk, lock, I/O).
pub(super) fn store_error(path: &Path, doing: &str, e: rusqlite::Error) -> StoreError {
    let message = format!("store {}: {doing}: {e}", path.display());
    match e {
        _ if is_undecodable(&e) => StoreError::Invalid(message),
        rusqlite::Error::SqliteFailure(ref err, _) if err.code == ErrorCode::NotADatabase => {
            StoreError::Invalid(message)
        }
        _ => StoreError::Unavailable(message),
    }
}
