//! `fanin store copy`: a whole store moved from a SQLite file into a
//! PostgreSQL database, for a deployment that outgrows one machine.
//!
//! Why rows travel as they are stored, column by column, and not as records
//! through the [`Store`](super::Store) trait: both back ends keep the same
//! tables and columns with the same encodings ([`codec`](super::codec)),
//! so nothing is decoded and encoded again. A record fanin cannot read
//! back (an [`unreadable`](super::unreadable) payload) arrives as it was
//! and reads the same on the other side; sequence numbers (runs, audit,
//! outbox) are kept, and the target's identities go on above the highest
//! one. What the target's columns cannot hold (text that is not UTF-8, an
//! integer column holding text) refuses the whole copy, naming the table,
//! the row and the column.
//!
//! All or nothing: the source is read in one snapshot by one read-only
//! connection (`sqlite/export.rs`), under the daemon's lock so no daemon
//! writes it meanwhile; the target takes every row in one transaction
//! (`postgres/import.rs`, binary `COPY`), which a failure, or the process
//! ending, rolls back. The target must be empty: a copy never merges two
//! stores. Rows stream from the reader's thread to the writer in bounded
//! chunks, so a large store never sits in memory whole.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{files, is_postgres, local_path, postgres, sqlite, StoreError};

/// What a column holds, the same in both back ends (`BIGINT` / `TEXT` in
/// PostgreSQL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Text,
}

/// A table that is copied.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// Every column, in the order a row carries them.
    pub columns: &'static [(&'static str, Kind)],
    /// The primary key's columns: how a row that cannot be copied is named.
    pub key: &'static [&'static str],
    /// `seq` numbers new rows (an identity in PostgreSQL, which must go on
    /// above the copied numbers).
    pub numbered: bool,
}

use Kind::{Integer as I, Text as T};

/// Every table of the store that is copied, with every column of both
/// schemas (a test holds both to this list).
pub const TABLES: &[Table] = &[
    Table {
        name: "runs",
        columns: &[
            ("seq", I),
            ("run_id", T),
            ("sop", T),
            ("sop_version", T),
            ("status", T),
            ("trigger_index", I),
            ("trigger_desc", T),
            ("source", T),
            ("topic", T),
            ("event_id", T),
            ("payload", T),
            ("client", T),
            ("idempotency_key", T),
            ("started_at", I),
            ("updated_at", I),
            ("finished_at", I),
            ("coalesced", I),
            ("step", I),
            ("request", T),
            ("session", T),
        ],
        key: &["seq"],
        numbered: true,
    },
    Table {
        name: "audit",
        columns: &[("seq", I), ("at", I), ("kind", T), ("run_id", T), ("sop", T), ("detail", T)],
        key: &["seq"],
        numbered: true,
    },
    Table {
        name: "run_steps",
        columns: &[
            ("run_id", T),
            ("step_index", I),
            ("status", T),
            ("lease_id", T),
            ("leased_until", I),
            ("attempts", I),
            ("output", T),
            ("created_at", I),
            ("updated_at", I),
        ],
        key: &["run_id", "step_index"],
        numbered: false,
    },
    Table {
        name: "outbox",
        columns: &[
            ("seq", I),
            ("id", T),
            ("run_id", T),
            ("destination", T),
            ("envelope", T),
            ("status", T),
            ("attempts", I),
            ("next_attempt_at", I),
            ("last_error", T),
            ("created_at", I),
            ("delivered_at", I),
        ],
        key: &["seq"],
        numbered: true,
    },
    Table {
        name: "idempotency",
        columns: &[("scope", T), ("key", T), ("created_at", I), ("expires_at", I), ("response", T)],
        key: &["scope", "key"],
        numbered: false,
    },
    Table {
        name: "tokens",
        columns: &[("prefix", T), ("hash", T), ("subject", T), ("created_at", I), ("revoked_at", I)],
        key: &["prefix"],
        numbered: false,
    },
    Table { name: "cron_state", columns: &[("key", T), ("last_check", I)], key: &["key"], numbered: false },
    Table {
        name: "source_cursors",
        columns: &[("source", T), ("value", T), ("updated_at", I)],
        key: &["source"],
        numbered: false,
    },
    Table {
        name: "file_states",
        columns: &[("source", T), ("path", T), ("size", I), ("mtime", I), ("sha256", T)],
        key: &["source", "path"],
        numbered: false,
    },
];

/// The tables of the store that are not copied, and why. They are counted
/// (and said) all the same, and must be empty in the target too.
pub const NOT_COPIED: &[(&str, &str)] = &[(
    "pairing_codes",
    "one-time pairing codes live an hour at most and are checked under the pairing key beside the SQLite file, \
     which a PostgreSQL store keeps beside config.toml; `fanin pair` issues a new one",
)];

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Null,
    Integer(i64),
    Text(String),
}

/// What the source sends the target, in this order: one [`Snapshot`], then
/// for each table of [`TABLES`] its rows and its end.
#[derive(Debug)]
pub enum Exported {
    Snapshot(Snapshot),
    /// Rows of `TABLES[table]`, their cells one row after another.
    Rows {
        table: usize,
        cells: Vec<Cell>,
    },
    Done {
        table: usize,
    },
}

/// What the source holds, counted in the snapshot the rows are read in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Rows of each of [`TABLES`].
    pub rows: Vec<u64>,
    /// The highest number each of [`TABLES`] ever handed out (`None`: not
    /// numbered, or never numbered a row).
    pub highest: Vec<Option<i64>>,
    /// Rows of each of [`NOT_COPIED`].
    pub not_copied: Vec<u64>,
}

/// Chunks on their way from the source to the target at once.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the copy tells whoever watches it (the CLI prints it).
pub trait Progress {
    /// The source's snapshot is taken: how many rows each table will copy.
    fn started(&mut self, snapshot: &Snapshot);
    /// More rows of `table` are in the target's transaction (often: a
    /// watcher paces its own output).
    fn rows(&mut self, table: &'static str, done: u64, total: u64);
    /// Every row of `table` is in.
    fn table_done(&mut self, table: &'static str, rows: u64, took: Duration);
}

/// A finished copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The source file and the target URL as messages name them (no
    /// password).
    pub from: String,
    pub to: String,
    /// Rows copied, per table of [`TABLES`].
    pub tables: Vec<(&'static str, u64)>,
    /// Rows left behind, per table of [`NOT_COPIED`], with why.
    pub not_copied: Vec<(&'static str, u64, &'static str)>,
}

/// Copies the SQLite store `from` (`sqlite://<path>`, relative to `cwd`)
/// into the empty PostgreSQL store `to` (`postgres://…`; a relative
/// `sslrootcert` is also taken from `cwd`), creating the target's schema
/// as a daemon would. Refused while a daemon runs on either.
pub async fn sqlite_to_postgres(
    from: &str,
    to: &str,
    cwd: &Path,
    progress: &mut dyn Progress,
) -> Result<Copied, StoreError> {
    let path = source_path(from, to, cwd)?;
    if !path.is_file() {
        return Err(StoreError::Invalid(format!("--from {}: no such file", path.display())));
    }
    let _source_lock = files::DaemonLock::acquire(&path)?;
    let export = sqlite::Export::open(&path)?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).chain(NOT_COPIED.iter().map(|(name, _)| *name)).collect();
    let mut import = postgres::Import::begin(to, cwd, &names).await?;
    let (sender, receiver) = flume::bounded(CHUNKS_IN_FLIGHT);
    let exporting = tokio::task::spawn_blocking(move || export.run(TABLES, NOT_COPIED, &sender));
    let filled = fill(&mut import, &receiver, progress).await;
    // A failed target stops the reader (its rows have nowhere to go), which
    // then ends without an error of its own; a failed reader leaves the
    // target short of rows, and its error is the one that says why.
    drop(receiver);
    let exported =
        exporting.await.map_err(|e| StoreError::Unavailable(format!("store copy: the reader failed: {e}")))?;
    exported?;
    let snapshot = filled?;
    let to = import.name().to_owned();
    import.commit().await?;
    Ok(Copied {
        from: path.display().to_string(),
        to,
        tables: TABLES.iter().map(|t| t.name).zip(snapshot.rows).collect(),
        not_copied: NOT_COPIED.iter().zip(snapshot.not_copied).map(|((name, why), n)| (*name, n, *why)).collect(),
    })
}

/// The source file, once both URLs name the one direction there is.
fn source_path(from: &str, to: &str, cwd: &Path) -> Result<PathBuf, StoreError> {
    let refused = |why: &str| {
        StoreError::Invalid(format!(
            "{why}: fanin store copy moves a SQLite store into PostgreSQL (--from sqlite://<path> --to \
             postgres://…) and nothing else"
        ))
    };
    // The URLs are not echoed: one may carry a password.
    if is_postgres(from) {
        return Err(refused("--from names a PostgreSQL store"));
    }
    if !from.starts_with("sqlite://") {
        return Err(refused("--from is not a sqlite:// URL"));
    }
    if !is_postgres(to) {
        return Err(refused("--to is not a postgres:// URL"));
    }
    local_path(from, cwd)
}

/// Takes what the reader sends into the target, table by table; the
/// snapshot once every table is in.
async fn fill(
    import: &mut postgres::Import,
    receiver: &flume::Receiver<Exported>,
    progress: &mut dyn Progress,
) -> Result<Snapshot, StoreError> {
    let ended = || StoreError::Unavailable("store copy: the source stopped before every row was read".into());
    let snapshot = match receiver.recv_async().await.map_err(|_| ended())? {
        Exported::Snapshot(snapshot) => snapshot,
        other => return Err(out_of_order(&other)),
    };
    progress.started(&snapshot);
    for (index, table) in TABLES.iter().enumerate() {
        let began = Instant::now();
        let total = snapshot.rows[index];
        let mut writer = import.table(table).await?;
        let mut done = 0;
        loop {
            match receiver.recv_async().await.map_err(|_| ended())? {
                Exported::Rows { table: of, cells } if of == index => {
                    done += writer.write(&cells).await?;
                    progress.rows(table.name, done, total);
                }
                Exported::Done { table: of } if of == index => break,
                other => return Err(out_of_order(&other)),
            }
        }
        let rows = writer.finish().await?;
        if let Some(highest) = snapshot.highest[index] {
            import.continue_numbering(table, highest).await?;
        }
        progress.table_done(table.name, rows, began.elapsed());
    }
    Ok(snapshot)
}

fn out_of_order(message: &Exported) -> StoreError {
    let what = match message {
        Exported::Snapshot(_) => "a second snapshot".to_owned(),
        Exported::Rows { table, .. } => format!("rows of {}", TABLES[*table].name),
        Exported::Done { table } => format!("the end of {}", TABLES[*table].name),
    };
    StoreError::Invalid(format!("store copy: the source sent {what} out of order"))
}

#[cfg(test)]
mod tests;
