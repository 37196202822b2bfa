//! What each request ([`Op`]) does in SQL on the writer's connection: one
//! function per [`Write`], with the meaning SQLite's `writes.rs` gives it,
//! compare-and-set refusals worded alike ([`refusal`]).
//!
//! PostgreSQL aborts a transaction at the first failed statement, so no
//! statement here is expected to fail: inserts that may meet a row already
//! there say `ON CONFLICT DO NOTHING` and a row count of 0 is the refusal.
//! Whatever still fails on what a request holds (a value the database
//! refuses) is that request's refusal too; the writer then undoes it alone
//! in its savepoint.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::rows::json_at;
use super::Conn;
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
    /// This request alone is refused; the rest of the group goes on.
    Refused(StoreError),
    /// The database or the connection failed: the whole group is lost.
    Broken(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Failure {
    /// Integrity violations (class 23) and refused values (class 22) are
    /// about the request; anything else is about the database.
    fn from(e: tokio_postgres::Error) -> Failure {
        match e.code().map(|code| code.code()) {
            Some(code) if code.starts_with("23") => Failure::Refused(StoreError::Conflict(db_message(&e))),
            Some(code) if code.starts_with("22") => Failure::Refused(StoreError::Invalid(db_message(&e))),
            _ => Failure::Broken(e),
        }
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn refused<T>(error: StoreError) -> Result<T, Failure> {
    Err(Failure::Refused(error))
}

fn count(n: u32) -> i64 {
    i64::from(n)
}

pub(super) async fn apply(conn: &Conn, op: &Op) -> Result<Outcome, Failure> {
    match op {
        Op::Commit(encoded) => apply_batch(conn, encoded).await.map(Outcome::Committed),
        Op::AddPairingCode { hash, created_at, expires_at } => {
            add_pairing_code(conn, hash, *created_at, *expires_at).await.map(|()| Outcome::Done)
        }
        Op::RedeemPairingCode { hash, now, token } => {
            redeem_pairing_code(conn, hash, *now, token).await.map(Outcome::Redeemed)
        }
        Op::ChargePairingGuess { now, budget } => charge_pairing_guess(conn, *now, *budget).await.map(Outcome::Count),
        Op::RevokeTokens { prefix, at } => revoke_tokens(conn, prefix, *at).await.map(Outcome::Count),
        Op::PurgeIdempotency { now } => {
            let purged = conn.execute("DELETE FROM idempotency WHERE expires_at <= $1", &[&micros(*now)]).await?;
            Ok(Outcome::Count(purged as usize))
        }
    }
}

async fn apply_batch(conn: &Conn, encoded: &EncodedBatch) -> Result<Committed, Failure> {
    let batch = &encoded.batch;
    if let Some(claim) = &batch.idempotency {
        if let Some(response) = claim_key(conn, claim, encoded.claim_response()).await? {
            return Ok(Committed::Duplicate { response });
        }
    }
    for (write, texts) in batch.writes.iter().zip(&encoded.texts) {
        apply_write(conn, write, texts).await?;
    }
    Ok(Committed::Applied)
}

/// Claims the key: inserted, or an expired claim on it replaced. A claim
/// still live when this one is made wins, and its stored response is
/// returned. One statement, so a replica claiming the same key at the same
/// moment waits for this transaction and then finds the key taken.
async fn claim_key(conn: &Conn, claim: &IdempotencyClaim, response: &str) -> Result<Option<Value>, Failure> {
    let claimed = conn
        .execute(
            "INSERT INTO idempotency (scope, key, created_at, expires_at, response) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (scope, key) DO UPDATE SET created_at = excluded.created_at,
                 expires_at = excluded.expires_at, response = excluded.response
             WHERE idempotency.expires_at <= excluded.created_at",
            &[&claim.scope, &claim.key, &micros(claim.created_at), &micros(claim.expires_at), &response],
        )
        .await?;
    if claimed == 1 {
        return Ok(None);
    }
    let row = conn
        .query_opt("SELECT response FROM idempotency WHERE scope = $1 AND key = $2", &[&claim.scope, &claim.key])
        .await?;
    match row.map(|row| json_at(&row, 0)) {
        Some(Ok(response)) => Ok(Some(response)),
        Some(Err(reason)) => refused(StoreError::Invalid(reason)),
        None => refused(StoreError::Conflict(format!("idempotency key {}: removed while it was claimed", claim.key))),
    }
}

async fn apply_write(conn: &Conn, write: &Write, texts: &Texts) -> Result<(), Failure> {
    let json = texts.json();
    match write {
        Write::InsertRun(run) => insert_run(conn, run, texts).await,
        Write::SetStatus { run_id, from, to, at } => set_status(conn, run_id, *from, *to, *at).await,
        Write::Coalesce { run_id, event_id, client, at, .. } => {
            coalesce(conn, run_id, event_id, texts, client.as_deref(), *at).await
        }
        Write::Audit(audit) => insert_audit(conn, audit, json).await,
        Write::CronChecked { key, at } => {
            let sql = "INSERT INTO cron_state (key, last_check) VALUES ($1, $2)
                       ON CONFLICT (key) DO UPDATE SET last_check = excluded.last_check";
            conn.execute(sql, &[key, &micros(*at)]).await.map(drop).map_err(Failure::from)
        }
        Write::SetCursor { source, from, to, at } => set_cursor(conn, source, from.as_deref(), to, *at).await,
        Write::SetFileState { source, path, state } => set_file_state(conn, source, path, state.as_ref()).await,
        Write::SetStep { run_id, from, to, at } => set_step(conn, run_id, *from, *to, *at).await,
        Write::PendStep { run_id, index, at } => pend_step(conn, run_id, *index, *at).await,
        Write::LeaseStep { run_id, index, lease_id, until, at } => {
            lease_step(conn, run_id, *index, lease_id, *until, *at).await
        }
        Write::FinishStep { run_id, index, lease_id, status, output: _, at } => {
            finish_step(conn, run_id, *index, lease_id, *status, json, *at).await
        }
        Write::Enqueue(entry) => enqueue(conn, entry, json).await,
        Write::Delivered { id, attempts, at } => {
            let sql = "UPDATE outbox SET status = $3, attempts = $4, delivered_at = $5 WHERE id = $1 AND status = $2";
            let to = OutboxStatus::Delivered.as_str();
            update_outbox(
                conn,
                sql,
                id,
                OutboxStatus::Pending,
                "mark it delivered",
                &[&to, &count(*attempts), &micros(*at)],
            )
            .await
        }
        Write::Reschedule { id, attempts, next_attempt_at, error } => {
            let sql = "UPDATE outbox SET attempts = $3, next_attempt_at = $4, last_error = $5
                       WHERE id = $1 AND status = $2";
            let rest: Params = &[&count(*attempts), &micros(*next_attempt_at), error];
            update_outbox(conn, sql, id, OutboxStatus::Pending, "reschedule it", rest).await
        }
        Write::DeadLetter { id, attempts, error, at: _ } => {
            let sql = "UPDATE outbox SET status = $3, attempts = $4, last_error = $5 WHERE id = $1 AND status = $2";
            let to = OutboxStatus::Dead.as_str();
            update_outbox(conn, sql, id, OutboxStatus::Pending, "dead-letter it", &[&to, &count(*attempts), error])
                .await
        }
        Write::Revive { id, at } => {
            let sql = "UPDATE outbox SET status = $3, attempts = 0, next_attempt_at = $4 WHERE id = $1 AND status = $2";
            let to = OutboxStatus::Pending.as_str();
            update_outbox(conn, sql, id, OutboxStatus::Dead, "revive it", &[&to, &micros(*at)]).await
        }
        Write::WithdrawEnvelope { id, .. } => {
            let sql = "UPDATE outbox SET status = $3 WHERE id = $1 AND status = $2";
            let to = OutboxStatus::Withdrawn.as_str();
            update_outbox(conn, sql, id, OutboxStatus::Pending, "withdraw it", &[&to]).await
        }
        Write::WithdrawStep { run_id, index, at } => withdraw_step(conn, run_id, *index, *at).await,
    }
}

async fn insert_run(conn: &Conn, run: &RunRecord, texts: &Texts) -> Result<(), Failure> {
    let inserted = conn
        .execute(
            "INSERT INTO runs (run_id, sop, sop_version, status, trigger_index, trigger_desc, source, topic,
                 event_id, payload, client, idempotency_key, started_at, updated_at, finished_at, coalesced, step,
                 request, session)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
             ON CONFLICT (run_id) DO NOTHING",
            &[
                &run.run_id,
                &run.sop,
                &run.sop_version,
                &run.status.as_str(),
                &count(run.trigger_index),
                &run.trigger,
                &run.source.as_str(),
                &run.topic,
                &run.event_id,
                &texts.json(),
                &run.client,
                &run.idempotency_key,
                &micros(run.started_at),
                &micros(run.updated_at),
                &run.finished_at.map(micros),
                &count(run.coalesced),
                &count(run.step),
                &texts.request,
                &texts.session,
            ],
        )
        .await?;
    match inserted {
        1 => Ok(()),
        _ => refused(refusal::run_exists(&run.run_id)),
    }
}

async fn current_status(conn: &Conn, run_id: &str) -> Result<Option<String>, Failure> {
    let row = conn.query_opt("SELECT status FROM runs WHERE run_id = $1", &[&run_id]).await?;
    Ok(row.and_then(|row| row.try_get(0).ok()))
}

/// Compare-and-set on the status.
async fn set_status(
    conn: &Conn,
    run_id: &str,
    from: RunStatus,
    to: RunStatus,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    let finished_at = to.is_terminal().then(|| micros(at));
    let changed = conn
        .execute(
            "UPDATE runs SET status = $3, updated_at = $4, finished_at = COALESCE($5::BIGINT, finished_at)
             WHERE run_id = $1 AND status = $2",
            &[&run_id, &from.as_str(), &to.as_str(), &micros(at), &finished_at],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    let found = current_status(conn, run_id).await?;
    refused(refusal::status(run_id, found.as_deref(), from, to))
}

/// Only a run still waiting in the backlog takes a newer trigger's event.
async fn coalesce(
    conn: &Conn,
    run_id: &str,
    event_id: &str,
    texts: &Texts,
    client: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    let changed = conn
        .execute(
            "UPDATE runs SET event_id = $2, payload = $3, client = $4, coalesced = coalesced + 1, updated_at = $5,
                 request = $7, session = $8
             WHERE run_id = $1 AND status = $6",
            &[
                &run_id,
                &event_id,
                &texts.json(),
                &client,
                &micros(at),
                &RunStatus::Deferred.as_str(),
                &texts.request,
                &texts.session,
            ],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    let found = current_status(conn, run_id).await?;
    refused(refusal::coalesce(run_id, found.as_deref()))
}

async fn insert_audit(conn: &Conn, audit: &NewAudit, detail: &str) -> Result<(), Failure> {
    conn.execute(
        "INSERT INTO audit (at, kind, run_id, sop, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&micros(audit.at), &audit.kind.as_str(), &audit.run_id, &audit.sop, &detail],
    )
    .await?;
    Ok(())
}

/// Compare-and-set on a source's cursor (see SQLite's `set_cursor`).
async fn set_cursor(conn: &Conn, source: &str, from: Option<&str>, to: &str, at: DateTime<Utc>) -> Result<(), Failure> {
    let changed = match from {
        Some(from) => {
            let sql = "UPDATE source_cursors SET value = $3, updated_at = $4 WHERE source = $1 AND value = $2";
            conn.execute(sql, &[&source, &from, &to, &micros(at)]).await?
        }
        None => {
            let sql =
                "INSERT INTO source_cursors (source, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
            conn.execute(sql, &[&source, &to, &micros(at)]).await?
        }
    };
    match changed {
        1 => Ok(()),
        _ => refused(refusal::cursor(source, from)),
    }
}

/// An upsert, or a delete for a file that is gone: the source is the
/// table's only writer, so this never refuses.
async fn set_file_state(conn: &Conn, source: &str, path: &str, state: Option<&FileState>) -> Result<(), Failure> {
    match state {
        Some(state) => {
            let size = i64::try_from(state.size).unwrap_or(i64::MAX);
            conn.execute(
                "INSERT INTO file_states (source, path, size, mtime, sha256) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (source, path) DO UPDATE
                 SET size = excluded.size, mtime = excluded.mtime, sha256 = excluded.sha256",
                &[&source, &path, &size, &micros(state.mtime), &state.sha256],
            )
            .await?
        }
        None => conn.execute("DELETE FROM file_states WHERE source = $1 AND path = $2", &[&source, &path]).await?,
    };
    Ok(())
}

/// Compare-and-set on the run's step index.
async fn set_step(conn: &Conn, run_id: &str, from: u32, to: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let changed = conn
        .execute(
            "UPDATE runs SET step = $3, updated_at = $4 WHERE run_id = $1 AND step = $2",
            &[&run_id, &count(from), &count(to), &micros(at)],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    let row = conn.query_opt("SELECT step FROM runs WHERE run_id = $1", &[&run_id]).await?;
    refused(refusal::step_index(run_id, row.and_then(|row| row.try_get(0).ok()), from, to))
}

async fn step_state(conn: &Conn, run_id: &str, index: u32) -> Result<Option<StepState>, Failure> {
    let row = conn
        .query_opt(
            "SELECT status, lease_id, leased_until FROM run_steps WHERE run_id = $1 AND step_index = $2",
            &[&run_id, &count(index)],
        )
        .await?;
    Ok(row.map(|row| StepState {
        status: row.try_get(0).unwrap_or_default(),
        lease_id: row.try_get(1).unwrap_or_default(),
        leased_until: row.try_get(2).unwrap_or_default(),
    }))
}

async fn pend_step(conn: &Conn, run_id: &str, index: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let inserted = conn
        .execute(
            "INSERT INTO run_steps (run_id, step_index, status, attempts, created_at, updated_at)
             VALUES ($1, $2, $3, 0, $4, $4) ON CONFLICT DO NOTHING",
            &[&run_id, &count(index), &step_status_name(StepStatus::Pending), &micros(at)],
        )
        .await?;
    match inserted {
        1 => Ok(()),
        _ => refused(refusal::pend(run_id, index, step_state(conn, run_id, index).await?)),
    }
}

/// A pending step, or one whose lease ended at or before `at`, takes the
/// new lease.
async fn lease_step(
    conn: &Conn,
    run_id: &str,
    index: u32,
    lease_id: &str,
    until: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    let changed = conn
        .execute(
            "UPDATE run_steps SET status = $3, lease_id = $4, leased_until = $5, attempts = attempts + 1,
                 updated_at = $6
             WHERE run_id = $1 AND step_index = $2 AND (status = $7 OR (status = $3 AND leased_until <= $6))",
            &[
                &run_id,
                &count(index),
                &step_status_name(StepStatus::Leased),
                &lease_id,
                &micros(until),
                &micros(at),
                &step_status_name(StepStatus::Pending),
            ],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    refused(refusal::lease(run_id, index, step_state(conn, run_id, index).await?, at))
}

/// Only the holder of the latest lease may report, even after the lease
/// ended, as long as nobody leased the step since.
async fn finish_step(
    conn: &Conn,
    run_id: &str,
    index: u32,
    lease_id: &str,
    status: StepStatus,
    output: &str,
    at: DateTime<Utc>,
) -> Result<(), Failure> {
    if !matches!(status, StepStatus::Completed | StepStatus::Failed) {
        return refused(refusal::finish_status(run_id, index, step_status_name(status)));
    }
    let changed = conn
        .execute(
            "UPDATE run_steps SET status = $3, output = $4, updated_at = $5
             WHERE run_id = $1 AND step_index = $2 AND status = $6 AND lease_id = $7",
            &[
                &run_id,
                &count(index),
                &step_status_name(status),
                &output,
                &micros(at),
                &step_status_name(StepStatus::Leased),
                &lease_id,
            ],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    refused(refusal::finish(run_id, index, lease_id, step_state(conn, run_id, index).await?))
}

async fn withdraw_step(conn: &Conn, run_id: &str, index: u32, at: DateTime<Utc>) -> Result<(), Failure> {
    let changed = conn
        .execute(
            "UPDATE run_steps SET status = $3, updated_at = $4
             WHERE run_id = $1 AND step_index = $2 AND status IN ($5, $6)",
            &[
                &run_id,
                &count(index),
                &step_status_name(StepStatus::Withdrawn),
                &micros(at),
                &step_status_name(StepStatus::Pending),
                &step_status_name(StepStatus::Leased),
            ],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    refused(refusal::withdraw_step(run_id, index, step_state(conn, run_id, index).await?))
}

/// The store numbers entries in the order they are written; the record's
/// own `seq` is ignored.
async fn enqueue(conn: &Conn, entry: &OutboxRecord, envelope: &str) -> Result<(), Failure> {
    let inserted = conn
        .execute(
            "INSERT INTO outbox (id, run_id, destination, envelope, status, attempts, next_attempt_at, last_error,
                 created_at, delivered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            &[
                &entry.id,
                &entry.run_id,
                &entry.destination,
                &envelope,
                &entry.status.as_str(),
                &count(entry.attempts),
                &micros(entry.next_attempt_at),
                &entry.last_error,
                &micros(entry.created_at),
                &entry.delivered_at.map(micros),
            ],
        )
        .await?;
    match inserted {
        1 => Ok(()),
        _ => refused(refusal::enqueued(&entry.id)),
    }
}

/// Runs an `UPDATE outbox ... WHERE id = $1 AND status = $2` (the remaining
/// parameters follow) and turns "no row changed" into a conflict that says
/// what the entry was instead.
async fn update_outbox(
    conn: &Conn,
    sql: &str,
    id: &str,
    expected: OutboxStatus,
    doing: &str,
    rest: Params<'_>,
) -> Result<(), Failure> {
    let expected = expected.as_str();
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&id, &expected];
    values.extend_from_slice(rest);
    if conn.execute(sql, &values).await? == 1 {
        return Ok(());
    }
    let row = conn.query_opt("SELECT status FROM outbox WHERE id = $1", &[&id]).await?;
    let found: Option<String> = row.and_then(|row| row.try_get(0).ok());
    refused(refusal::outbox(id, found.as_deref(), expected, doing))
}

/// A code drawn again is a fresh one; expired codes go.
async fn add_pairing_code(
    conn: &Conn,
    hash: &str,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), Failure> {
    conn.execute("DELETE FROM pairing_codes WHERE expires_at <= $1", &[&micros(created_at)]).await?;
    conn.execute(
        "INSERT INTO pairing_codes (hash, created_at, expires_at, used_at, wrong_guesses, retired_at)
             VALUES ($1, $2, $3, NULL, 0, NULL)
         ON CONFLICT (hash) DO UPDATE SET created_at = excluded.created_at,
             expires_at = excluded.expires_at, used_at = NULL, wrong_guesses = 0, retired_at = NULL",
        &[&hash, &micros(created_at), &micros(expires_at)],
    )
    .await?;
    Ok(())
}

/// Uses the code up and stores the token in the same request: a token
/// that cannot be stored is refused, and its savepoint leaves the code
/// unused.
async fn redeem_pairing_code(
    conn: &Conn,
    hash: &str,
    now: DateTime<Utc>,
    token: &TokenRecord,
) -> Result<bool, Failure> {
    let used = conn
        .execute(
            "UPDATE pairing_codes SET used_at = $2
             WHERE hash = $1 AND used_at IS NULL AND retired_at IS NULL AND expires_at > $2",
            &[&hash, &micros(now)],
        )
        .await?;
    if used == 0 {
        return Ok(false);
    }
    let inserted = conn
        .execute(
            "INSERT INTO tokens (prefix, hash, subject, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&token.prefix, &token.hash, &token.subject, &micros(token.created_at), &token.revoked_at.map(micros)],
        )
        .await?;
    match inserted {
        1 => Ok(true),
        _ => refused(refusal::token_taken(&token.prefix)),
    }
}

/// One wrong guess, charged to every code it could have been a guess at;
/// those that reach `budget` are retired and audited.
async fn charge_pairing_guess(conn: &Conn, now: DateTime<Utc>, budget: u32) -> Result<usize, Failure> {
    let now_us = micros(now);
    conn.execute(
        "UPDATE pairing_codes SET wrong_guesses = wrong_guesses + 1
         WHERE used_at IS NULL AND retired_at IS NULL AND expires_at > $1 AND created_at <= $1",
        &[&now_us],
    )
    .await?;
    let retired = conn
        .query(
            "UPDATE pairing_codes SET retired_at = $1
             WHERE used_at IS NULL AND retired_at IS NULL AND expires_at > $1 AND wrong_guesses >= $2
             RETURNING created_at, expires_at, wrong_guesses",
            &[&now_us, &count(budget)],
        )
        .await?;
    for row in &retired {
        let at = |idx: usize| {
            row.try_get::<_, i64>(idx).ok().and_then(DateTime::<Utc>::from_timestamp_micros).map(|t| t.to_rfc3339())
        };
        let audit = NewAudit {
            at: now,
            kind: AuditKind::PairingCodeRetired,
            run_id: None,
            sop: None,
            detail: serde_json::json!({
                "issued_at": at(0),
                "expires_at": at(1),
                "wrong_guesses": row.try_get::<_, i64>(2).unwrap_or_default(),
            }),
        };
        insert_audit(conn, &audit, &json_text(&audit.detail)).await?;
    }
    Ok(retired.len())
}

async fn revoke_tokens(conn: &Conn, prefix: &str, at: DateTime<Utc>) -> Result<usize, Failure> {
    if prefix.is_empty() {
        return refused(refusal::empty_revoke_prefix());
    }
    let revoked = conn
        .execute(
            "UPDATE tokens SET revoked_at = $2 WHERE revoked_at IS NULL AND left(prefix, length($1::TEXT)) = $1::TEXT",
            &[&prefix, &micros(at)],
        )
        .await?;
    Ok(revoked as usize)
}
