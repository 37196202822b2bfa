//! What each request ([`Op`]) does in SQL, on the writer's connection: one
//! function per [`Write`], the batch that applies them with its idempotency
//! claim, and the pairing, token and housekeeping requests. Callers encode
//! the JSON before the request reaches the writer thread
//! ([`EncodedBatch`]), so the thread runs only SQL; `writer.rs` decides when
//! and how a group of these is committed.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::codec::{is_constraint_violation, json_at};
use crate::store::codec::{json_text, micros, step_status_name};
use crate::store::ops::refusal::{self, StepState};
use crate::store::ops::{EncodedBatch, Op, Outcome, Texts};
use crate::store::{
    AuditKind, Committed, FileState, IdempotencyClaim, NewAudit, OutboxRecord, OutboxStatus, RunRecord, StepStatus,
    StoreError, TokenRecord, Write,
};
use fanin_core::runs::RunStatus;

/// Why one request could not be applied.
pub(super) enum Failure {
    /// This request alone is refused; its savepoint is rolled back and the
    /// rest of the transaction goes on.
    Refused(StoreError),
    /// The database failed (I/O, disk full): the whole transaction is lost.
    Broken(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        if is_constraint_violation(&e) {
            Failure::Refused(StoreError::Conflict(e.to_string()))
        } else {
            Failure::Broken(e)
        }
    }
}

pub(super) fn apply(conn: &Connection, op: &Op) -> Result<Outcome, Failure> {
    match op {
        Op::Commit(encoded) => apply_batch(conn, encoded).map(Outcome::Committed),
        Op::AddPairingCode { hash, created_at, expires_at } => {
            add_pairing_code(conn, hash, *created_at, *expires_at).map(|()| Outcome::Done)
        }
        Op::RedeemPairingCode { hash, now, token } => {
            redeem_pairing_code(conn, hash, *now, token).map(Outcome::Redeemed)
        }
        Op::ChargePairingGuess { now, budget } => charge_pairing_guess(conn, *now, *budget).map(Outcome::Count),
        Op::RevokeTokens { prefix, at } => revoke_tokens(conn, prefix, *at).map(Outcome::Count),
        Op::PurgeIdempotency { now } => purge_idempotency(conn, *now).map(Outcome::Count),
    }
}

fn apply_batch(conn: &Connection, encoded: &EncodedBatch) -> Result<Committed, Failure> {
    let batch = &encoded.batch;
    if let Some(claim) = &batch.idempotency {
        if let Some(response) = live_claim(conn, claim)? {
            return Ok(Committed::Duplicate { response });
        }
        store_claim(conn, claim, encoded.claim_response())?;
    }
    for (write, texts) in batch.writes.iter().zip(&encoded.texts) {
        apply_write(conn, write, texts)?;
    }
    Ok(Committed::Applied)
}

/// The response of a claim on the same key that is still live when this
/// claim is made (a stored response that cannot be read comes back as the
/// unreadable stand-in: the key still holds).
fn live_claim(conn: &Connection, claim: &IdempotencyClaim) -> Result<Option<Value>, Failure> {
    Ok(conn
        .prepare_cached("SELECT response FROM idempotency WHERE scope = ?1 AND key = ?2 AND expires_at > ?3")?
        .query_row(params![claim.scope, claim.key, micros(claim.created_at)], |row| json_at(row, 0))
        .optional()?)
}

/// Inserts the claim, replacing an expired one on the same key.
fn store_claim(conn: &Connection, claim: &IdempotencyClaim, response: &str) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO idempotency (scope, key, created_at, expires_at, response) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, key) DO UPDATE SET created_at = excluded.created_at,
             expires_at = excluded.expires_at, response = excluded.response",
    )?
    .execute(params![claim.scope, claim.key, micros(claim.created_at), micros(claim.expires_at), response])?;
    Ok(())
}

/// `texts`: what the write stores as JSON, already written out.
fn apply_write(conn: &Connection, write: &Write, texts: &Texts) -> Result<(), Failure> {
    let json = texts.json();
    match write {
        Write::InsertRun(run) => insert_run(conn, run, texts),
        Write::SetStatus { run_id, from, to, at } => set_status(conn, run_id, *from, *to, *at),
        Write::Coalesce { run_id, event_id, client, at, .. } => {
            coalesce(conn, run_id, event_id, texts, client.as_deref(), *at)
        }
        Write::Audit(audit) => insert_audit(conn, audit, json),
        Write::CronChecked { key, at } => cron_checked(conn, key, *at),
        Write::SetCursor { source, from, to, at } => set_cursor(conn, source, from.as_deref(), to, *at),
        Write::SetFileState { source, path, state } => set_file_state(conn, source, path, state.as_ref()),
        Write::SetStep { run_id, from, to, at } => set_step(conn, run_id, *from, *to, *at),
        Write::PendStep { run_id, index, at } => pend_step(conn, run_id, *index, *at),
        Write::LeaseStep { run_id, index, lease_id, until, at } => {
            lease_step(conn, run_id, *index, lease_id, *until, *at)
        }
        Write::FinishStep { run_id, index, lease_id, status, output: _, at } => {
            finish_step(conn, run_id, *index, lease_id, *status, json, *at)
        }
        Write::Enqueue(entry) => enqueue(conn, entry, json),
        Write::Delivered { id, attempts, at } => delivered(conn, id, *attempts, *at),
        Write::Reschedule { id, attempts, next_attempt_at, error } => {
            reschedule(conn, id, *attempts, *next_attempt_at, error)
        }
        Write::DeadLetter { id, attempts, error, at: _ } => dead_letter(conn, id, *attempts, error),
        Write::Revive { id, at } => revive(conn, id, *at),
        Write::WithdrawEnvelope { id, .. } => withdraw_envelope(conn, id),
        Write::WithdrawStep { run_id, index, at } => withdraw_step(conn, run_id, *index, *at),
    }
}

fn insert_run(conn: &Connection, run: &RunRecord, texts: &Texts) -> Result<(), Failure> {
    let result = conn
        .prepare_cached(
            "INSERT INTO runs (run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic,
                 event_id, payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced, step,
                 request, session)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?
        .execute(params![
            run.run_id,
            run.sop,
            run.sop_version,
            run.status.as_str(),
            run.trigger_index,
            run.trigger,
            run.source.as_str(),
            run.topic,
            run.event_id,
            texts.json(),
            run.client,
            run.idempotency_key,
            micros(run.started_at),
            micros(run.updated_at),
            run.finished_at.map(micros),
            run.coalesced,
            run.step,
            texts.request,
            texts.session,
        ]);
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_constraint_violation(&e) => Err(Failure::Refused(refusal::run_exists(&run.run_id))),
        Err(e) => Err(e.into()),
    }
}

/// Compare-and-set on the status.
fn set_status(
    conn: &Connection,
    run_id: &str,
    from: RunStatus,
    to: RunStatus,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    let finished_at = to.is_terminal().then(|| micros(at));
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = ?3, updated_at = ?4, finished_at = COALESCE(?5, finished_at)
             WHERE run_id = ?1 AND status = ?2",
        )?
        .execute(params![run_id, from.as_str(), to.as_str(), micros(at), finished_at])?;
    if changed == 1 {
        return Ok(());
    }
    let found = current_status(conn, run_id)?;
    Err(Failure::Refused(refusal::status(run_id, found.as_deref(), from, to)))
}

fn current_status(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT status FROM runs WHERE run_id = ?1")?.query_row([run_id], |row| row.get(0)).optional()
}

/// Only a run still waiting in the backlog takes a newer trigger's event.
fn coalesce(
    conn: &Connection,
    run_id: &str,
    event_id: &str,
    texts: &Texts,
    client: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET event_id = ?2, payload = ?3, client = ?4, coalesced = coalesced + 1, updated_at = ?5,
                 request = ?7, session = ?8
             WHERE run_id = ?1 AND status = ?6",
        )?
        .execute(params![
            run_id,
            event_id,
            texts.json(),
            client,
            micros(at),
            RunStatus::Deferred.as_str(),
            texts.request,
            texts.session
        ])?;
    if changed == 1 {
        return Ok(());
    }
    let found = current_status(conn, run_id)?;
    Err(Failure::Refused(refusal::coalesce(run_id, found.as_deref())))
}

fn insert_audit(conn: &Connection, audit: &NewAudit, detail: &str) -> Result<(), Failure> {
    conn.prepare_cached("INSERT INTO audit (at, kind, run_id, sop, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![micros(audit.at), audit.kind.as_str(), audit.run_id, audit.sop, detail])?;
    Ok(())
}

fn cron_checked(conn: &Connection, key: &str, at: DateTime<Utc>) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO cron_state (key, last_check) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET last_check = excluded.last_check",
    )?
    .execute(params![key, micros(at)])?;
    Ok(())
}

/// Compare-and-set on a source's cursor: an update of the stored value, or
/// the first insert when `from` is `None`; anything else is a writer that
/// read a cursor that has moved since.
fn set_cursor(conn: &Connection, source: &str, from: Option<&str>, to: &str, at: DateTime<Utc>) -> Result<(), Failure> {
    let changed = match from {
        Some(from) => conn
            .prepare_cached("UPDATE source_cursors SET value = ?3, updated_at = ?4 WHERE source = ?1 AND value = ?2")?
            .execute(params![source, from, to, micros(at)])?,
        None => conn
            .prepare_cached(
                "INSERT INTO source_cursors (source, value, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![source, to, micros(at)])?,
    };
    if changed == 1 {
        return Ok(());
    }
    Err(Failure::Refused(refusal::cursor(source, from)))
}

fn set_file_state(conn: &Connection, source: &str, path: &str, state: Option<&FileState>) -> Result<(), Failure> {
    match state {
        Some(state) => conn
            .prepare_cached(
                "INSERT INTO file_states (source, path, size, mtime, sha256) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source, path) DO UPDATE
                 SET size = excluded.size, mtime = excluded.mtime, sha256 = excluded.sha256",
            )?
            .execute(params![source, path, state.size as i64, micros(state.mtime), state.sha256])?,
        None => conn
            .prepare_cached("DELETE FROM file_states WHERE source = ?1 AND path = ?2")?
            .execute(params![source, path])?,
    };
    Ok(())
}

/// Compare-and-set on the run's step index.
fn set_step(conn: &Connection, run_id: &str, from: u32, to: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let changed = conn
        .prepare_cached("UPDATE runs SET step = ?3, updated_at = ?4 WHERE run_id = ?1 AND step = ?2")?
        .execute(params![run_id, from, to, micros(at)])?;
    if changed == 1 {
        return Ok(());
    }
    let found: Option<i64> = conn
        .prepare_cached("SELECT step FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |row| row.get(0))
        .optional()?;
    Err(Failure::Refused(refusal::step_index(run_id, found, from, to)))
}

fn step_state(conn: &Connection, run_id: &str, index: u32) -> rusqlite::Result<Option<StepState>> {
    conn.prepare_cached("SELECT status, lease_id, leased_until FROM run_steps WHERE run_id = ?1 AND step_index = ?2")?
        .query_row(params![run_id, index], |row| {
            Ok(StepState { status: row.get(0)?, lease_id: row.get(1)?, leased_until: row.get(2)? })
        })
        .optional()
}

fn pend_step(conn: &Connection, run_id: &str, index: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO run_steps (run_id, step_index, status, attempts, created_at, updated_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4)",
        )?
        .execute(params![run_id, index, step_status_name(StepStatus::Pending), micros(at)]);
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_constraint_violation(&e) => {
            Err(Failure::Refused(refusal::pend(run_id, index, step_state(conn, run_id, index)?)))
        }
        Err(e) => Err(e.into()),
    }
}

/// A pending step, or one whose lease ended at or before `at`, takes the
/// new lease.
fn lease_step(
    conn: &Connection,
    run_id: &str,
    index: u32,
    lease_id: &str,
    until: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    let changed = conn
        .prepare_cached(
            "UPDATE run_steps SET status = ?3, lease_id = ?4, leased_until = ?5, attempts = attempts + 1,
                 updated_at = ?6
             WHERE run_id = ?1 AND step_index = ?2 AND (status = ?7 OR (status = ?3 AND leased_until <= ?6))",
        )?
        .execute(params![
            run_id,
            index,
            step_status_name(StepStatus::Leased),
            lease_id,
            micros(until),
            micros(at),
            step_status_name(StepStatus::Pending),
        ])?;
    if changed == 1 {
        return Ok(());
    }
    Err(Failure::Refused(refusal::lease(run_id, index, step_state(conn, run_id, index)?, at)))
}

/// Only the holder of the latest lease may report, even after the lease
/// ended, as long as nobody leased the step since.
fn finish_step(
    conn: &Connection,
    run_id: &str,
    index: u32,
    lease_id: &str,
    status: StepStatus,
    output: &str,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    if !matches!(status, StepStatus::Completed | StepStatus::Failed) {
        return Err(Failure::Refused(refusal::finish_status(run_id, index, step_status_name(status))));
    }
    let changed = conn
        .prepare_cached(
            "UPDATE run_steps SET status = ?3, output = ?4, updated_at = ?5
             WHERE run_id = ?1 AND step_index = ?2 AND status = ?6 AND lease_id = ?7",
        )?
        .execute(params![
            run_id,
            index,
            step_status_name(status),
            output,
            micros(at),
            step_status_name(StepStatus::Leased),
            lease_id,
        ])?;
    if changed == 1 {
        return Ok(());
    }
    Err(Failure::Refused(refusal::finish(run_id, index, lease_id, step_state(conn, run_id, index)?)))
}

/// An open step (pending, or leased whether or not the lease ended) of a
/// run being cancelled.
fn withdraw_step(conn: &Connection, run_id: &str, index: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let changed = conn
        .prepare_cached(
            "UPDATE run_steps SET status = ?3, updated_at = ?4
             WHERE run_id = ?1 AND step_index = ?2 AND status IN (?5, ?6)",
        )?
        .execute(params![
            run_id,
            index,
            step_status_name(StepStatus::Withdrawn),
            micros(at),
            step_status_name(StepStatus::Pending),
            step_status_name(StepStatus::Leased),
        ])?;
    if changed == 1 {
        return Ok(());
    }
    Err(Failure::Refused(refusal::withdraw_step(run_id, index, step_state(conn, run_id, index)?)))
}

/// The store numbers entries in the order they are written; the record's
/// own `seq` is ignored.
fn enqueue(conn: &Connection, entry: &OutboxRecord, envelope: &str) -> Result<(), Failure> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO outbox (id, run_id, destination, envelope, status, attempts, next_attempt_at, last_error,
                 created_at, delivered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            entry.id,
            entry.run_id,
            entry.destination,
            envelope,
            entry.status.as_str(),
            entry.attempts,
            micros(entry.next_attempt_at),
            entry.last_error,
            micros(entry.created_at),
            entry.delivered_at.map(micros),
        ]);
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_constraint_violation(&e) => Err(Failure::Refused(refusal::enqueued(&entry.id))),
        Err(e) => Err(e.into()),
    }
}

/// Runs an `UPDATE outbox ... WHERE id = ?1 AND status = ?2` (the remaining
/// parameters follow) and turns "no row changed" into a conflict that says
/// what the entry was instead.
fn update_outbox(
    conn: &Connection,
    sql: &str,
    id: &str,
    expected: OutboxStatus,
    doing: &str,
    rest: &[&dyn rusqlite::ToSql],
) -> Result<(), Failure> {
    let expected = expected.as_str();
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&id, &expected];
    values.extend_from_slice(rest);
    let changed = conn.prepare_cached(sql)?.execute(values.as_slice())?;
    if changed == 1 {
        return Ok(());
    }
    let found: Option<String> =
        conn.prepare_cached("SELECT status FROM outbox WHERE id = ?1")?.query_row([id], |row| row.get(0)).optional()?;
    Err(Failure::Refused(refusal::outbox(id, found.as_deref(), expected, doing)))
}

fn delivered(conn: &Connection, id: &str, attempts: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let to = OutboxStatus::Delivered.as_str();
    update_outbox(
        conn,
        "UPDATE outbox SET status = ?3, attempts = ?4, delivered_at = ?5 WHERE id = ?1 AND status = ?2",
        id,
        OutboxStatus::Pending,
        "mark it delivered",
        &[&to, &attempts, &micros(at)],
    )
}

fn reschedule(
    conn: &Connection,
    id: &str,
    attempts: u32,
    next_attempt_at: DateTime<Utc>,
    error: &str,
) -> Result<(), Failure> {
    update_outbox(
        conn,
        "UPDATE outbox SET attempts = ?3, next_attempt_at = ?4, last_error = ?5 WHERE id = ?1 AND status = ?2",
        id,
        OutboxStatus::Pending,
        "reschedule it",
        &[&attempts, &micros(next_attempt_at), &error],
    )
}

/// The outbox has no column for when it gave up; the `envelope_failed`
/// audit record written beside it carries that time.
fn dead_letter(conn: &Connection, id: &str, attempts: u32, error: &str) -> Result<(), Failure> {
    let to = OutboxStatus::Dead.as_str();
    update_outbox(
        conn,
        "UPDATE outbox SET status = ?3, attempts = ?4, last_error = ?5 WHERE id = ?1 AND status = ?2",
        id,
        OutboxStatus::Pending,
        "dead-letter it",
        &[&to, &attempts, &error],
    )
}

/// The last error stays until the next attempt replaces it, so an operator
/// still sees why the entry had died.
fn revive(conn: &Connection, id: &str, at: DateTime<Utc>) -> Result<(), Failure> {
    let to = OutboxStatus::Pending.as_str();
    update_outbox(
        conn,
        "UPDATE outbox SET status = ?3, attempts = 0, next_attempt_at = ?4 WHERE id = ?1 AND status = ?2",
        id,
        OutboxStatus::Dead,
        "revive it",
        &[&to, &micros(at)],
    )
}

/// The `run_cancelled` audit record written beside it carries the time.
fn withdraw_envelope(conn: &Connection, id: &str) -> Result<(), Failure> {
    let to = OutboxStatus::Withdrawn.as_str();
    update_outbox(
        conn,
        "UPDATE outbox SET status = ?3 WHERE id = ?1 AND status = ?2",
        id,
        OutboxStatus::Pending,
        "withdraw it",
        &[&to],
    )
}

/// Six-digit codes repeat over time; a code drawn again is a fresh, unused
/// code with its whole budget. Expired codes are of no use to anyone and go.
fn add_pairing_code(
    conn: &Connection,
    hash: &str,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), Failure> {
    conn.prepare_cached("DELETE FROM pairing_codes WHERE expires_at <= ?1")?.execute([micros(created_at)])?;
    conn.prepare_cached(
        "INSERT INTO pairing_codes (hash, created_at, expires_at, used_at, wrong_guesses, retired_at)
             VALUES (?1, ?2, ?3, NULL, 0, NULL)
         ON CONFLICT (hash) DO UPDATE SET created_at = excluded.created_at,
             expires_at = excluded.expires_at, used_at = NULL, wrong_guesses = 0, retired_at = NULL",
    )?
    .execute(params![hash, micros(created_at), micros(expires_at)])?;
    Ok(())
}

/// Uses the code up and stores the token in the same savepoint: a token
/// that cannot be stored leaves the code unused.
fn redeem_pairing_code(
    conn: &Connection,
    hash: &str,
    now: DateTime<Utc>,
    token: &TokenRecord,
) -> Result<bool, Failure> {
    let used = conn
        .prepare_cached(
            "UPDATE pairing_codes SET used_at = ?2
             WHERE hash = ?1 AND used_at IS NULL AND retired_at IS NULL AND expires_at > ?2",
        )?
        .execute(params![hash, micros(now)])?;
    if used == 0 {
        return Ok(false);
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tokens (prefix, hash, subject, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            token.prefix,
            token.hash,
            token.subject,
            micros(token.created_at),
            token.revoked_at.map(micros)
        ]);
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_constraint_violation(&e) => Err(Failure::Refused(refusal::token_taken(&token.prefix))),
        Err(e) => Err(e.into()),
    }
}

/// One wrong guess, charged to every code it could have been a guess at:
/// those live now and issued no later. The ones that reach `budget` are
/// retired and audited; the record names a code by when it was issued.
fn charge_pairing_guess(conn: &Connection, now: DateTime<Utc>, budget: u32) -> Result<usize, Failure> {
    let now_us = micros(now);
    conn.prepare_cached(
        "UPDATE pairing_codes SET wrong_guesses = wrong_guesses + 1
         WHERE used_at IS NULL AND retired_at IS NULL AND expires_at > ?1 AND created_at <= ?1",
    )?
    .execute([now_us])?;
    let retired: Vec<(i64, i64, i64)> = conn
        .prepare_cached(
            "UPDATE pairing_codes SET retired_at = ?1
             WHERE used_at IS NULL AND retired_at IS NULL AND expires_at > ?1 AND wrong_guesses >= ?2
             RETURNING created_at, expires_at, wrong_guesses",
        )?
        .query_map(params![now_us, budget], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (created_at, expires_at, wrong_guesses) in &retired {
        let at = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.to_rfc3339());
        let audit = NewAudit {
            at: now,
            kind: AuditKind::PairingCodeRetired,
            run_id: None,
            sop: None,
            detail: serde_json::json!({
                "issued_at": at(*created_at),
                "expires_at": at(*expires_at),
                "wrong_guesses": wrong_guesses,
            }),
        };
        insert_audit(conn, &audit, &json_text(&audit.detail))?;
    }
    Ok(retired.len())
}

fn revoke_tokens(conn: &Connection, prefix: &str, at: DateTime<Utc>) -> Result<usize, Failure> {
    if prefix.is_empty() {
        return Err(Failure::Refused(refusal::empty_revoke_prefix()));
    }
    let revoked = conn
        .prepare_cached(
            "UPDATE tokens SET revoked_at = ?2 WHERE revoked_at IS NULL AND substr(prefix, 1, length(?1)) = ?1",
        )?
        .execute(params![prefix, micros(at)])?;
    Ok(revoked)
}

fn purge_idempotency(conn: &Connection, now: DateTime<Utc>) -> Result<usize, Failure> {
    let purged = conn.prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?1")?.execute([micros(now)])?;
    Ok(purged)
}
