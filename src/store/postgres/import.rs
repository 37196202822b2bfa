//! The PostgreSQL side of `fanin store copy` (`store/copy.rs`): an empty
//! store filled in one transaction by binary `COPY`.
//!
//! Why this shape: `COPY … FROM STDIN (FORMAT binary)` takes rows as fast as
//! the server writes them, with no statement per row; one transaction makes
//! the copy all or nothing (a failure, or the process ending, leaves the
//! tables as empty as they were). The schema is created or upgraded first,
//! as [`PostgresStore::open`](super::PostgresStore::open) does, in its own
//! transaction. The daemon lock is held for the whole copy, and the tables
//! are locked against other writers (a CLI command's write waits, then
//! fails), so what was checked empty stays so until the copy commits.
//! Copied `seq` numbers are kept (`COPY` writes identity columns as given),
//! and each identity is then set to go on above the highest copied.

use std::error::Error;
use std::path::Path;
use std::pin::Pin;

use bytes::BytesMut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Client;

use super::connect::Connector;
use super::{pg_error, schema, DaemonLock};
use crate::store::copy::{Cell, Kind, Table};
use crate::store::StoreError;

impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Integer(n) => n.to_sql(ty, out),
            Cell::Text(text) => text.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::TEXT)
    }

    to_sql_checked!();
}

/// A target store taking a copy: its connection, inside the copy's
/// transaction.
pub struct Import {
    client: Client,
    name: String,
    /// Every table of the store, locked and checked empty.
    tables: String,
    _lock: DaemonLock,
}

impl Import {
    /// Takes the daemon lock, creates or upgrades the schema, begins the
    /// copy's transaction and checks that none of `tables` holds a row.
    pub async fn begin(url: &str, base_dir: &Path, tables: &[&str]) -> Result<Import, StoreError> {
        let lock = DaemonLock::acquire(url, base_dir, None).await?;
        let connector = Connector::new(url, base_dir)?;
        let name = connector.name.clone();
        let mut client = connector.connect().await.map_err(|e| pg_error(&name, "connect", e))?;
        schema::migrate(&mut client, &name).await?;
        let fail = |doing: &'static str| |e| pg_error(&name, doing, e);
        client.batch_execute("BEGIN").await.map_err(fail("begin the copy"))?;
        let list = tables.join(", ");
        client.batch_execute(&format!("LOCK TABLE {list} IN EXCLUSIVE MODE")).await.map_err(fail("lock the tables"))?;
        let mut holding = Vec::new();
        for table in tables {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {table})");
            let row = client.query_one(&sql, &[]).await.map_err(fail("look for rows"))?;
            if row.get::<_, bool>(0) {
                holding.push(*table);
            }
        }
        if !holding.is_empty() {
            return Err(StoreError::Invalid(format!(
                "store {name}: not empty: {} {} {} rows; fanin store copy fills an empty store only (a new \
                 database, or a schema of its own), and changed nothing",
                if holding.len() == 1 { "table" } else { "tables" },
                holding.join(", "),
                if holding.len() == 1 { "has" } else { "have" },
            )));
        }
        Ok(Import { client, name, tables: list, _lock: lock })
    }

    /// The target as messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the `COPY` of `table`'s rows.
    pub async fn table(&mut self, table: &'static Table) -> Result<TableWriter, StoreError> {
        let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        let sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", table.name, columns.join(", "));
        let sink = self.client.copy_in(&sql).await.map_err(|e| pg_error(&self.name, "start a COPY", e))?;
        let types: Vec<Type> = table
            .columns
            .iter()
            .map(|(_, kind)| match kind {
                Kind::Integer => Type::INT8,
                Kind::Text => Type::TEXT,
            })
            .collect();
        Ok(TableWriter { writer: Box::pin(BinaryCopyInWriter::new(sink, &types)), table, name: self.name.clone() })
    }

    /// Makes `table`'s identity hand out numbers above `highest`.
    pub async fn continue_numbering(&mut self, table: &Table, highest: i64) -> Result<(), StoreError> {
        if highest < 1 {
            return Ok(());
        }
        self.client
            .execute("SELECT setval(pg_get_serial_sequence($1, 'seq'), $2)", &[&table.name, &highest])
            .await
            .map_err(|e| pg_error(&self.name, &format!("continue the numbers of {}", table.name), e))?;
        Ok(())
    }

    /// Commits the copy, with fresh statistics for the planner (the tables
    /// went from empty to full at once).
    pub async fn commit(self) -> Result<(), StoreError> {
        let fail = |doing: &'static str| |e| pg_error(&self.name, doing, e);
        self.client
            .batch_execute(&format!("ANALYZE {}", self.tables))
            .await
            .map_err(fail("analyze the copied tables"))?;
        self.client.batch_execute("COMMIT").await.map_err(fail("commit the copy"))
    }
}

/// One table's `COPY` in progress.
pub struct TableWriter {
    writer: Pin<Box<BinaryCopyInWriter>>,
    table: &'static Table,
    name: String,
}

impl TableWriter {
    /// Writes rows given as their cells one row after another; returns how
    /// many rows.
    pub async fn write(&mut self, cells: &[Cell]) -> Result<u64, StoreError> {
        let width = self.table.columns.len();
        for row in cells.chunks(width) {
            self.writer.as_mut().write_raw(row.iter()).await.map_err(|e| self.failed(e))?;
        }
        Ok((cells.len() / width) as u64)
    }

    /// Ends the `COPY`; returns the rows the server took.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        let taken = self.writer.as_mut().finish().await;
        taken.map_err(|e| self.failed(e))
    }

    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        pg_error(&self.name, &format!("copy table {}", self.table.name), e)
    }
}
