//! Wake-ups between the processes that share one PostgreSQL store: a step
//! pended or an envelope queued by one replica (or by `fanin outbox retry`)
//! wakes the agent-loop long polls and outbox workers of the others at
//! once, where their own dispatcher's wake-ups cannot reach.
//!
//! The writer ends a group's transaction with a `NOTIFY` for each kind of
//! thing it committed (`step`, `outbox`, and `runs` for a change to what
//! the console lists that is neither), at most one of each however many
//! requests the group carried, sent in the same round trip as its `COMMIT`
//! ([`Notices`]): PostgreSQL delivers them only when the transaction
//! commits, so a refused request (undone in its savepoint, not counted)
//! and a lost transaction wake nobody. The [`Listener`] is one connection
//! per store, made when somebody first asks for wake-ups, that `LISTEN`s
//! and turns what arrives into [`Wakeup`]s.
//!
//! Channels are database-wide, so a store's is named after its schema
//! ([`channel`]): stores in other schemas of the database stay apart. Each
//! opened store signs what it sends with an origin of its own and leaves
//! its own notifications out, since its process has woken its waiters at
//! its commit already. Every time listening starts (the first time, and
//! after the connection broke and was made again) the listener says
//! [`Wakeup::All`]: whatever was sent while it was not listening is lost.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::connect::{Connector, Notifications};
use super::pg_error;
use crate::backoff::Backoff;
use crate::store::ops::{Op, Outcome};
use crate::store::{Committed, StoreError, Wakeup, Write};

/// Wake-ups held for a receiver that is slow to take them; one that falls
/// further behind hears `Lagged`, which means [`Wakeup::All`].
const WAKEUPS_BUFFERED: usize = 16;

/// Reconnecting: the first wait, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// A connection that lasted this long was healthy: the next break starts
/// from the first wait again.
const STABLE: Duration = Duration::from_secs(60);

/// An idle listening connection carries nothing, so a peer that vanished
/// without closing it would go unnoticed: it is asked something this
/// often, and given up when the answer takes longer than the timeout.
const HEARTBEAT: Duration = Duration::from_secs(30);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest channel name PostgreSQL takes (`NAMEDATALEN - 1`).
const MAX_CHANNEL: usize = 63;

/// The notification channel of the store in schema `schema`:
/// `fanin_<schema>`, or, for a name that is long or needs quoting,
/// `fanin_` and a digest of it. Only letters, digits and `_`, so it is
/// written in SQL as it is.
pub(super) fn channel(schema: &str) -> String {
    let plain = schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain && !schema.is_empty() && "fanin_".len() + schema.len() <= MAX_CHANNEL {
        return format!("fanin_{schema}");
    }
    let digest = hex::encode(Sha256::digest(schema.as_bytes()));
    format!("fanin_{}", &digest[..32])
}

/// The channel of the schema a connection works in (its `search_path`'s).
pub(super) async fn channel_of(client: &Client, name: &str) -> Result<String, StoreError> {
    let row = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(|e| pg_error(name, "read the current schema", e))?;
    let schema: Option<String> = row.get(0);
    Ok(channel(&schema.unwrap_or_default()))
}

/// What ends a group's transaction: `COMMIT`, preceded by the `NOTIFY`s
/// the group owes, written once per store.
pub(super) struct Notices {
    /// Indexed by [`Owed::index`].
    commits: [String; 8],
}

impl Notices {
    pub fn new(channel: &str, origin: &str) -> Notices {
        let notify = |kind: &str| format!("NOTIFY \"{channel}\", '{kind} {origin}'; ");
        let commits = std::array::from_fn(|index| {
            let mut statements = String::new();
            for (bit, kind) in [STEP, OUTBOX, RUNS].into_iter().enumerate() {
                if index & 1 << bit != 0 {
                    statements.push_str(&notify(kind));
                }
            }
            statements + "COMMIT"
        });
        Notices { commits }
    }

    /// The statements that commit a group whose requests came to `results`.
    pub fn commit(&self, ops: &[&Op], results: &[Result<Outcome, StoreError>]) -> &str {
        &self.commits[owed(ops, results).index()]
    }
}

const STEP: &str = "step";
const OUTBOX: &str = "outbox";
const RUNS: &str = "runs";

/// The notifications a group owes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Owed {
    step: bool,
    outbox: bool,
    runs: bool,
}

impl Owed {
    fn index(&self) -> usize {
        usize::from(self.step) | usize::from(self.outbox) << 1 | usize::from(self.runs) << 2
    }
}

/// Whether the applied batches among `ops` made a step leasable (`step`),
/// an envelope due (`outbox`), or, if neither, changed a run, a step or an
/// envelope in another way the console shows (`runs`: a run started or
/// moved on, an envelope delivered or given up on); the bookkeeping of
/// sources (cron checks, cursors, file states) is nobody's concern.
/// Refused requests and duplicates wrote nothing; an expired lease, found
/// by time, is nobody's to announce.
fn owed(ops: &[&Op], results: &[Result<Outcome, StoreError>]) -> Owed {
    let mut owed = Owed::default();
    let mut changed = false;
    for (op, result) in ops.iter().zip(results) {
        if let (Op::Commit(encoded), Ok(Outcome::Committed(Committed::Applied))) = (op, result) {
            for write in &encoded.batch.writes {
                match write {
                    Write::PendStep { .. } => owed.step = true,
                    Write::Enqueue(_) | Write::Revive { .. } => owed.outbox = true,
                    Write::CronChecked { .. } | Write::SetCursor { .. } | Write::SetFileState { .. } => {}
                    _ => changed = true,
                }
            }
        }
    }
    owed.runs = changed && !owed.step && !owed.outbox;
    owed
}

/// What a notification's payload (`<kind> <origin>`) asks of this store's
/// waiters: nothing when this store sent it; a kind it does not know
/// (another fanin's, an operator's `NOTIFY`) wakes everybody.
fn wakeup_of(payload: &str, origin: &str) -> Option<Wakeup> {
    let (kind, from) = payload.split_once(' ').unwrap_or((payload, ""));
    if from == origin {
        return None;
    }
    Some(match kind {
        STEP => Wakeup::Step,
        OUTBOX => Wakeup::Outbox,
        RUNS => Wakeup::Runs,
        _ => Wakeup::All,
    })
}

/// A store's listener: started by the first [`Listener::subscribe`], ended
/// when the store (and with it this) is dropped.
pub(super) struct Listener {
    task: Arc<Task>,
    wakeups: OnceLock<broadcast::Sender<Wakeup>>,
}

struct Task {
    connector: Connector,
    channel: String,
    origin: String,
    stop: CancellationToken,
    /// The server process of the listening connection (0: none now).
    pid: AtomicI32,
}

impl Listener {
    pub fn new(connector: Connector, channel: String, origin: String) -> Listener {
        let task = Task { connector, channel, origin, stop: CancellationToken::new(), pid: AtomicI32::new(0) };
        Listener { task: Arc::new(task), wakeups: OnceLock::new() }
    }

    /// A receiver of the wake-ups; the first call starts listening (on the
    /// current runtime), and its first [`Wakeup::All`] says it listens.
    pub fn subscribe(&self) -> broadcast::Receiver<Wakeup> {
        let sender = self.wakeups.get_or_init(|| {
            let (sender, _) = broadcast::channel(WAKEUPS_BUFFERED);
            tokio::spawn(Arc::clone(&self.task).run(sender.clone()));
            sender
        });
        sender.subscribe()
    }

    /// Test hook: the server process of the listening connection, if one
    /// listens now.
    #[cfg(test)]
    pub fn pid(&self) -> Option<i32> {
        Some(self.task.pid.load(Ordering::SeqCst)).filter(|pid| *pid != 0)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.stop.cancel();
    }
}

impl Task {
    /// Listens, connecting again with backoff whenever the connection is
    /// lost, until stopped. Says when it first listens, once that it lost
    /// the connection, and once that it listens again.
    async fn run(self: Arc<Task>, wakeups: broadcast::Sender<Wakeup>) {
        let name = &self.connector.name;
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
        let mut lost = false;
        loop {
            let started = Instant::now();
            let ended = tokio::select! {
                _ = self.stop.cancelled() => return,
                ended = self.session(&wakeups, &mut lost) => ended,
            };
            self.pid.store(0, Ordering::SeqCst);
            if started.elapsed() >= STABLE {
                backoff.reset();
            }
            let wait = backoff.next_delay(rand::random::<f64>());
            if !lost {
                tracing::warn!(store = %name, retry_in = ?wait,
                    "store: not listening for other processes' commits ({ended}); the steps and envelopes they \
                     commit wake nobody here until it listens again");
            } else {
                tracing::debug!(store = %name, retry_in = ?wait, "store: listening failed again: {ended}");
            }
            lost = true;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One connection: `LISTEN`, [`Wakeup::All`], then every notification
    /// handed on until the connection fails; returns why it did.
    async fn session(&self, wakeups: &broadcast::Sender<Wakeup>, lost: &mut bool) -> String {
        let name = &self.connector.name;
        let failed = |doing, e| pg_error(name, doing, e).to_string();
        let (client, mut notifications): (Client, Notifications) = match self.connector.connect_listening().await {
            Ok(connected) => connected,
            Err(e) => return failed("connect to listen", e),
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN \"{}\"", self.channel)).await {
            return failed("listen", e);
        }
        match client.query_one("SELECT pg_backend_pid()", &[]).await {
            Ok(row) => self.pid.store(row.get(0), Ordering::SeqCst),
            Err(e) => return failed("listen", e),
        }
        match std::mem::take(lost) {
            true => tracing::info!(store = %name, "store: listening for other processes' commits again"),
            false => {
                tracing::info!(store = %name, channel = %self.channel, "store: listening for other processes' commits")
            }
        }
        let _ = wakeups.send(Wakeup::All);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            tokio::select! {
                received = notifications.recv() => match received {
                    Some(Ok(notification)) => {
                        if let Some(wakeup) = wakeup_of(notification.payload(), &self.origin) {
                            let _ = wakeups.send(wakeup);
                        }
                    }
                    Some(Err(e)) => return failed("listen", e),
                    None => return format!("store {name}: listen: the connection ended"),
                },
                _ = heartbeat.tick() => {
                    match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.batch_execute("SELECT 1")).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return failed("listen", e),
                        Err(_) => return format!("store {name}: listen: the server did not answer within \
                                                  {HEARTBEAT_TIMEOUT:?}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
