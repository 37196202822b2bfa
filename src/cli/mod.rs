//! The command line (docs/operations.md). Every subcommand takes `--config` and, where
//! it prints data, `--json`. Commands that read runs, audit, codes or tokens
//! open the store named in the config, also while a daemon runs on it;
//! `store copy` names both of its stores itself and reads no config.
//!
//! Exit codes: 0 success, 1 a user error (its one-line reason printed first),
//! 2 a usage error (clap's own). A command whose output is closed early
//! (`fanin runs list | head`) ends as killed by SIGPIPE, silently, like
//! coreutils do; the daemon alone keeps ignoring SIGPIPE.

mod approvals;
mod cancel;
pub mod check;
mod inspect;
mod outbox;
mod output;
mod reach;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "fanin", version, about = "Turns outside events into durable, audited SOP runs")]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = "./config.toml")]
    pub config: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything: gateway, sources, scheduler, delivery.
    Daemon,
    /// Check the config and every SOP; exit 1 listing each error.
    Validate,
    /// Dry run: which triggers an event would match, and why the others not.
    Explain {
        /// webhook | sop_webhook | mqtt | cron | peripheral | manual | email | slack | telegram | google_drive
        #[arg(long)]
        source: String,
        /// Path (webhook), topic (mqtt), expression (cron), board/signal
        /// (peripheral) or SOP name (manual).
        #[arg(long)]
        topic: String,
        /// The payload; JSON when it parses, else text.
        #[arg(long)]
        payload: Option<String>,
        /// Cron only: the timezone the expression fires in (default: any).
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Start a manual run of a SOP (through the running daemon when there is one).
    Fire {
        sop: String,
        #[arg(long)]
        payload: Option<String>,
    },
    /// The loaded SOPs.
    Sop {
        #[command(subcommand)]
        command: SopCommand,
    },
    /// Runs in the store.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The audit trail, oldest first.
    Audit {
        /// Keep printing new records as they are written.
        #[arg(long)]
        follow: bool,
        /// Only this run's records.
        #[arg(long = "run")]
        run: Option<String>,
    },
    /// Print a fresh one-time pairing code.
    Pair,
    /// Bearer tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Envelopes on their way to the Executor and the Agent.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The store as a whole.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a stopped SQLite store into an empty PostgreSQL store, in one
    /// transaction (docs/operations.md, "Moving a store to PostgreSQL").
    /// Reads no config.
    Copy {
        /// The SQLite store: sqlite://<path>, a relative path taken from
        /// the current directory (not the config's).
        #[arg(long)]
        from: String,
        /// The PostgreSQL store: postgres://user@host/db[?…], as `[store].url`
        /// takes it; a relative sslrootcert is taken from the current
        /// directory.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// Oldest first.
    List {
        /// pending | delivered | dead | withdrawn
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue a dead letter for delivery again.
    Retry { id: String },
}

#[derive(Subcommand, Debug)]
pub enum SopCommand {
    List,
    Show { name: String },
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    List {
        #[arg(long)]
        sop: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    Show {
        id: String,
    },
    /// Runs waiting for an approval, oldest first.
    Pending,
    /// Approve the gate a run waits at (through the running daemon when there is one).
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny it: the run is cancelled.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a run that has not ended (deferred, pending approval, running
    /// or waiting for an agent), through the running daemon when there is one.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    List,
    /// Revoke every token whose prefix starts with PREFIX.
    Revoke {
        prefix: String,
    },
}

/// A user error: printed as one line (plus details) and exit 1.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub details: Vec<String>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), details: Vec::new() }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e.to_string())
    }
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    prepare_process(&cli.command);
    let default_level = if matches!(cli.command, Command::Daemon) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            for d in &failure.details {
                eprintln!("  {d}");
            }
            ExitCode::from(1)
        }
    }
}

/// What every command sets before it does anything.
fn prepare_process(command: &Command) {
    #[cfg(unix)]
    // SAFETY: both calls only change process attributes, before any other
    // thread exists.
    unsafe {
        // Everything fanin creates (the store, its log and index, the
        // pairing key, the lock) is for its owner only.
        libc::umask(0o077);
        // Rust ignores SIGPIPE, so a closed stdout is an error every print
        // would have to handle; the default action ends a command quietly
        // instead. The daemon writes to sockets and keeps ignoring it.
        if !matches!(command, Command::Daemon) {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    #[cfg(not(unix))]
    let _ = command;
    crate::store::sqlite::report_sigbus();
}

/// Loads the config, listing every problem on failure.
pub fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    crate::config::load(path).map_err(|errors| Failure {
        message: format!("{}: {} configuration error(s)", path.display(), errors.len()),
        details: errors.iter().map(ToString::to_string).collect(),
    })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    match cli.command {
        Command::Daemon => {
            let config = load_config(&cli.config)?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(crate::daemon::cancel_on_signal(shutdown.clone()));
            crate::daemon::run(config, shutdown).await.map_err(|e| {
                let mut lines = e.0.lines().map(str::to_string);
                let first = lines.next().unwrap_or_default();
                Failure { message: first, details: lines.collect() }
            })
        }
        Command::Validate => check::validate(&cli.config, json),
        Command::Explain { source, topic, payload, timezone } => {
            check::explain(&cli.config, json, &source, &topic, payload.as_deref(), timezone)
        }
        Command::Fire { sop, payload } => inspect::fire(&cli.config, json, &sop, payload.as_deref()).await,
        Command::Sop { command } => check::sop(&cli.config, json, command),
        Command::Runs { command } => inspect::runs(&cli.config, json, command).await,
        Command::Audit { follow, run } => inspect::audit(&cli.config, json, follow, run).await,
        Command::Pair => inspect::pair(&cli.config, json).await,
        Command::Tokens { command } => inspect::tokens(&cli.config, json, command).await,
        Command::Outbox { command } => outbox::outbox(&cli.config, json, command).await,
        Command::Store { command: StoreCommand::Copy { from, to } } => store::copy(json, &from, &to).await,
    }
}
