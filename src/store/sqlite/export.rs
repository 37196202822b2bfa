//! The SQLite side of `fanin store copy` (`store/copy.rs`): every row of
//! every copied table, as stored, read in one snapshot.
//!
//! One read-only connection and one read transaction for the counts and all
//! the rows, so what is counted is what is sent, and every table is seen at
//! the same moment (WAL keeps that snapshot while others commit). A value
//! is sent as SQLite holds it; one the target's column cannot take (SQLite
//! keeps whatever was written: text in an integer column, bytes that are
//! not UTF-8) ends the export, naming where it is.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::codec::store_error;
use super::schema::{check_version, open_reader};
use super::shm::ShmGuard;
use super::BUSY_TIMEOUT;
use crate::store::copy::{Cell, Exported, Kind, Snapshot, Table};
use crate::store::StoreError;

/// Rows per chunk sent, at most.
const CHUNK_ROWS: usize = 2048;

/// Text bytes per chunk sent, about: a chunk of large payloads is sent
/// before it holds [`CHUNK_ROWS`].
const CHUNK_BYTES: usize = 1 << 20;

/// A source opened for the copy: its schema is this fanin's.
pub struct Export {
    path: PathBuf,
    conn: Connection,
}

impl Export {
    /// Opens the store at `path` read-only; refused unless its schema is
    /// this fanin's version (an older one is upgraded by starting the
    /// daemon on it once).
    pub fn open(path: &Path) -> Result<Export, StoreError> {
        // A -shm that cannot be written now SQLite maps read-only and never
        // writes; one it writes is named in the report of a SIGBUS (`shm`).
        let _ = ShmGuard::new(path);
        let conn = open_reader(path, BUSY_TIMEOUT)?;
        check_version(&conn, path)?;
        Ok(Export { path: path.to_path_buf(), conn })
    }

    /// Sends the snapshot, then each table's rows and end, in the order of
    /// `tables`. Blocking. When the receiver goes away (the target failed),
    /// stops without an error: the target's is the one to report.
    pub fn run(
        self,
        tables: &[Table],
        not_copied: &[(&str, &str)],
        out: &flume::Sender<Exported>,
    ) -> Result<(), StoreError> {
        let fail = |doing: &str, e| store_error(&self.path, doing, e);
        self.conn.execute_batch("BEGIN").map_err(|e| fail("begin the snapshot", e))?;
        let snapshot = self.snapshot(tables, not_copied).map_err(|e| fail("count rows", e))?;
        if out.send(Exported::Snapshot(snapshot)).is_err() {
            return Ok(());
        }
        for (index, table) in tables.iter().enumerate() {
            if !self.send_table(index, table, out)? {
                return Ok(());
            }
        }
        self.conn.execute_batch("COMMIT").map_err(|e| fail("end the snapshot", e))
    }

    fn snapshot(&self, tables: &[Table], not_copied: &[(&str, &str)]) -> rusqlite::Result<Snapshot> {
        let count = |table: &str| -> rusqlite::Result<u64> {
            let rows: i64 = self.conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0))?;
            Ok(rows.unsigned_abs())
        };
        let mut snapshot = Snapshot::default();
        for table in tables {
            snapshot.rows.push(count(table.name)?);
            snapshot.highest.push(if table.numbered { self.highest(table.name)? } else { None });
        }
        for (table, _) in not_copied {
            snapshot.not_copied.push(count(table)?);
        }
        Ok(snapshot)
    }

    /// The highest `seq` the table holds or (`AUTOINCREMENT`, the outbox)
    /// ever handed out: rows may have been deleted since.
    fn highest(&self, table: &str) -> rusqlite::Result<Option<i64>> {
        let held: Option<i64> = self.conn.query_row(&format!("SELECT max(seq) FROM {table}"), [], |row| row.get(0))?;
        let sequence_kept: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence')",
            [],
            |row| row.get(0),
        )?;
        let handed_out: Option<i64> = match sequence_kept {
            true => self
                .conn
                .query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [table], |row| row.get(0))
                .optional()?,
            false => None,
        };
        Ok(held.max(handed_out))
    }

    /// `Ok(false)` when the receiver is gone.
    fn send_table(&self, index: usize, table: &Table, out: &flume::Sender<Exported>) -> Result<bool, StoreError> {
        let doing = format!("read table {}", table.name);
        let fail = |e| store_error(&self.path, &doing, e);
        let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        let order = if table.numbered { " ORDER BY seq" } else { "" };
        let sql = format!("SELECT {} FROM {}{order}", columns.join(", "), table.name);
        let mut statement = self.conn.prepare(&sql).map_err(fail)?;
        let mut rows = statement.query([]).map_err(fail)?;
        let (mut cells, mut bytes) = (Vec::new(), 0);
        while let Some(row) = rows.next().map_err(fail)? {
            for (i, (column, kind)) in table.columns.iter().enumerate() {
                let value = row.get_ref(i).map_err(fail)?;
                let cell = cell(value, *kind).map_err(|what| self.refused(table, row, column, *kind, &what))?;
                if let Cell::Text(text) = &cell {
                    bytes += text.len();
                }
                cells.push(cell);
            }
            if cells.len() >= CHUNK_ROWS * table.columns.len() || bytes >= CHUNK_BYTES {
                if out.send(Exported::Rows { table: index, cells: std::mem::take(&mut cells) }).is_err() {
                    return Ok(false);
                }
                bytes = 0;
            }
        }
        if !cells.is_empty() && out.send(Exported::Rows { table: index, cells }).is_err() {
            return Ok(false);
        }
        Ok(out.send(Exported::Done { table: index }).is_ok())
    }

    /// Why a value of `row` is not copied, naming the row by its key.
    fn refused(&self, table: &Table, row: &rusqlite::Row<'_>, column: &str, kind: Kind, what: &str) -> StoreError {
        let key: Vec<String> = table
            .key
            .iter()
            .map(|name| {
                let at = table.columns.iter().position(|(c, _)| c == name).expect("key columns are columns");
                let value = row.get_ref(at).map(key_text).unwrap_or_else(|e| e.to_string());
                format!("{name} {value}")
            })
            .collect();
        let target = match kind {
            Kind::Integer => "BIGINT",
            Kind::Text => "TEXT",
        };
        StoreError::Invalid(format!(
            "store {}: table {}, row {}: column {column} holds {what}, which the target's {target} column cannot \
             take; nothing was copied",
            self.path.display(),
            table.name,
            key.join(", "),
        ))
    }
}

/// A stored value as the target's column takes it, or what it is instead.
fn cell(value: ValueRef<'_>, kind: Kind) -> Result<Cell, String> {
    match (value, kind) {
        (ValueRef::Null, _) => Ok(Cell::Null),
        (ValueRef::Integer(n), Kind::Integer) => Ok(Cell::Integer(n)),
        (ValueRef::Text(bytes), Kind::Text) => match std::str::from_utf8(bytes) {
            Ok(text) if text.contains('\0') => Err("text with a NUL character".into()),
            Ok(text) => Ok(Cell::Text(text.to_owned())),
            Err(_) => Err(format!("{} bytes of text that is not UTF-8", bytes.len())),
        },
        (other, _) => Err(describe(other)),
    }
}

/// A stored value for a message: its type, and a short form of it.
fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => format!("the integer {n}"),
        ValueRef::Real(x) => format!("the real number {x}"),
        ValueRef::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let short: String = text.chars().take(40).collect();
            let more = if short.len() < text.len() { "…" } else { "" };
            format!("the text {short:?}{more}")
        }
        ValueRef::Blob(bytes) => format!("a blob of {} bytes", bytes.len()),
    }
}

/// A key's value as a row is named by it: `seq 12`, `prefix "abcd"`.
fn key_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Text(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        other => describe(other),
    }
}
