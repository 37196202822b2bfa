//! `fanin store copy`: the store layer's copy ([`crate::store::copy`]) with
//! its progress on stderr and its summary on stdout. No config is read:
//! both stores are named on the command line, and relative paths (a
//! `sqlite://` file, an `sslrootcert`) are the current directory's.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{output, Failure};
use crate::store::copy::{self, Progress, Snapshot};

/// How often a table's progress is printed, at most.
const PACE: Duration = Duration::from_millis(250);

pub async fn copy(json: bool, from: &str, to: &str) -> Result<(), Failure> {
    let cwd = std::env::current_dir().map_err(|e| Failure::new(format!("the current directory: {e}")))?;
    let mut progress = Printed::new(std::io::stderr().is_terminal());
    let copied = copy::sqlite_to_postgres(from, to, &cwd, &mut progress).await?;
    if json {
        let tables: Vec<_> = copied.tables.iter().map(|(table, rows)| json!({"table": table, "rows": rows})).collect();
        let not_copied: Vec<_> = copied
            .not_copied
            .iter()
            .map(|(table, rows, why)| json!({"table": table, "rows": rows, "why": why}))
            .collect();
        output::json(&json!({"from": copied.from, "to": copied.to, "tables": tables, "not_copied": not_copied}));
    } else {
        let rows: u64 = copied.tables.iter().map(|(_, rows)| rows).sum();
        println!("copied {} from {} into {}", counted(rows, "row"), copied.from, copied.to);
    }
    Ok(())
}

/// Progress on stderr: on a terminal one line per table, rewritten in
/// place; elsewhere (a log) a line at most every [`PACE`].
struct Printed {
    terminal: bool,
    last: Option<Instant>,
    /// A progress line waits on the terminal for its end.
    open: bool,
}

impl Printed {
    fn new(terminal: bool) -> Printed {
        Printed { terminal, last: None, open: false }
    }
}

impl Drop for Printed {
    /// Ends a line the copy left open (it failed midway), so the error
    /// that follows starts a line of its own.
    fn drop(&mut self) {
        if self.open {
            eprintln!();
        }
    }
}

impl Progress for Printed {
    fn started(&mut self, snapshot: &Snapshot) {
        let rows: u64 = snapshot.rows.iter().sum();
        eprintln!("copying {} in {}", counted(rows, "row"), counted(snapshot.rows.len() as u64, "table"));
        for ((table, why), rows) in copy::NOT_COPIED.iter().zip(&snapshot.not_copied) {
            eprintln!("{table}: {rows} not copied: {why}");
        }
    }

    fn rows(&mut self, table: &'static str, done: u64, total: u64) {
        if self.last.is_some_and(|last| last.elapsed() < PACE) {
            return;
        }
        self.last = Some(Instant::now());
        self.open = self.terminal;
        let mut stderr = std::io::stderr().lock();
        let _ = match self.terminal {
            true => write!(stderr, "\r{table}: {done}/{total}\x1b[K"),
            false => writeln!(stderr, "{table}: {done}/{total}"),
        };
        let _ = stderr.flush();
    }

    fn table_done(&mut self, table: &'static str, rows: u64, took: Duration) {
        self.open = false;
        let (start, clear) = if self.terminal { ("\r", "\x1b[K") } else { ("", "") };
        eprintln!("{start}{table}: {} copied in {:.1} s{clear}", counted(rows, "row"), took.as_secs_f64());
    }
}

/// `1 row`, `2 rows`.
fn counted(n: u64, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        _ => format!("{n} {thing}s"),
    }
}
