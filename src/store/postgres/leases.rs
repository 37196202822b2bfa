//! The leases of singleton duties (docs/cluster.md): which replica runs a
//! serial board, an inbox, a feed poller, the filesystem watcher or an
//! outbox destination, and until when.
//!
//! One row per duty. Taking and renewing are one upsert that succeeds only
//! for the holder or once the lease has lapsed, so two replicas can never
//! both be told they hold it. Every time is the database's clock
//! (`clock_timestamp()`), never a replica's: replicas whose clocks disagree
//! still agree on who holds what and for how long.

use std::time::Duration;

use tokio_postgres::Row;

use super::reads::{Read, ReadError};
use super::rows::time_of;
use super::Conn;
use crate::store::DutyLease;

/// The database's clock in the stored unit (microseconds).
const NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT";

const COLUMNS: &str = "name, owner, since, until";

/// Takes the lease on `duty` for `owner` for `term`, or renews it if
/// `owner` holds it; returns the lease as it stands after the attempt.
pub(super) async fn hold(conn: &Conn, duty: &str, owner: &str, term: Duration) -> Read<DutyLease> {
    let term = i64::try_from(term.as_micros()).unwrap_or(i64::MAX);
    let take = format!(
        "WITH clock AS (SELECT {NOW} AS now)
         INSERT INTO leases (name, owner, since, until) SELECT $1, $2, now, now + $3 FROM clock
         ON CONFLICT (name) DO UPDATE
            SET owner = EXCLUDED.owner, until = EXCLUDED.until,
                since = CASE WHEN leases.owner = EXCLUDED.owner THEN leases.since ELSE EXCLUDED.since END
          WHERE leases.owner = EXCLUDED.owner OR leases.until <= EXCLUDED.since
         RETURNING {COLUMNS}, until - since"
    );
    if let Some(row) = conn.query_opt(&take, &[&duty, &owner, &term]).await? {
        return lease_of(&row);
    }
    // Someone else holds it: say who, and for how long yet.
    let read = format!("SELECT {COLUMNS}, GREATEST(until - {NOW}, 0) FROM leases WHERE name = $1");
    match conn.query_opt(&read, &[&duty]).await? {
        Some(row) => lease_of(&row),
        // Released between the two statements: the next attempt takes it.
        None => Ok(DutyLease {
            duty: duty.to_string(),
            owner: String::new(),
            since: chrono::DateTime::UNIX_EPOCH,
            until: chrono::DateTime::UNIX_EPOCH,
            left: Duration::ZERO,
        }),
    }
}

/// Gives up `owner`'s lease on `duty`; nothing when it is not theirs.
pub(super) async fn release(conn: &Conn, duty: &str, owner: &str) -> Read<()> {
    conn.execute("DELETE FROM leases WHERE name = $1 AND owner = $2", &[&duty, &owner]).await?;
    Ok(())
}

/// Every lease, by duty, with what is left of it.
pub(super) async fn list(conn: &Conn) -> Read<Vec<DutyLease>> {
    let sql = format!("SELECT {COLUMNS}, GREATEST(until - {NOW}, 0) FROM leases ORDER BY name");
    conn.query(&sql, &[]).await?.iter().map(lease_of).collect()
}

/// A row of [`COLUMNS`] and the microseconds left.
fn lease_of(row: &Row) -> Read<DutyLease> {
    let left: i64 = row.get(4);
    Ok(DutyLease {
        duty: row.get(0),
        owner: row.get(1),
        since: time_of(row, 2).map_err(ReadError::Undecodable)?,
        until: time_of(row, 3).map_err(ReadError::Undecodable)?,
        left: Duration::from_micros(left.max(0) as u64),
    })
}
