//! Replicas (docs/cluster.md): who this daemon is among those sharing one
//! PostgreSQL store, and the singleton duties they hand each other.
//!
//! Most of what holds across replicas is the store's doing (idempotency
//! keys, compare-and-sets, the shared cron window). What cannot be shared
//! — a serial port, an IMAP session, a feed poller, the filesystem watcher,
//! an outbox destination — is a duty one replica owns through a lease in
//! the store, and another takes over when the owner stops renewing.
//!
//! The timing, with `L = lease_secs`: a lease is taken for `3L/4` by the
//! store's clock and renewed every `L/4`; an owner that cannot renew stops
//! its duty before the term it last got is over (by its own monotonic
//! clock, counted from before it asked, so it stops early rather than
//! late), and a replica on standby wakes when the lease it was told of
//! lapses. An owner that dies is replaced within `3L/4` and a moment; one
//! that shuts down releases its leases, and is replaced at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::store::Store;

/// This daemon as one replica of several.
pub struct Cluster {
    node_id: String,
    lease: Duration,
    store: Arc<dyn Store>,
}

/// Where a duty stands on this replica, for whoever reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DutyState {
    /// This replica holds the lease and runs the duty.
    Held,
    /// Another replica holds it.
    Standby { owner: String },
    /// The store cannot be asked; nobody here runs the duty.
    Unreachable(String),
}

impl Cluster {
    /// The replica `node_id` (see [`node_id_of`]) on `store`.
    pub fn new(node_id: &str, lease_secs: u64, store: Arc<dyn Store>) -> Cluster {
        Cluster { node_id: node_id.to_string(), lease: Duration::from_secs(lease_secs), store }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn term(&self) -> Duration {
        self.lease * 3 / 4
    }

    fn renew_every(&self) -> Duration {
        self.lease / 4
    }

    /// Runs `body` whenever this replica holds the lease on `duty`, until
    /// `shutdown`. `body` gets a token cancelled when the lease is lost (or
    /// at shutdown) and must return soon after. Each change of where the
    /// duty stands is `report`ed.
    pub async fn run_duty<B>(
        &self,
        duty: &str,
        shutdown: &CancellationToken,
        report: impl Fn(&DutyState),
        mut body: impl FnMut(CancellationToken) -> B,
    ) where
        B: std::future::Future<Output = ()>,
    {
        let mut last: Option<DutyState> = None;
        let mut say = |state: DutyState| {
            if last.as_ref() != Some(&state) {
                log_change(duty, &state, last.as_ref());
                report(&state);
                last = Some(state);
            }
        };
        loop {
            let asked = Instant::now();
            let wait = match self.store.hold_lease(duty, &self.node_id, self.term()).await {
                Ok(lease) if lease.owner == self.node_id => None,
                Ok(lease) => {
                    // Wake just after the lease lapses, by the store's clock.
                    let wait = (lease.left + Duration::from_millis(20)).min(self.renew_every());
                    say(DutyState::Standby { owner: lease.owner });
                    Some(wait)
                }
                Err(e) => {
                    say(DutyState::Unreachable(e.to_string()));
                    Some(self.renew_every())
                }
            };
            if let Some(wait) = wait {
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
            say(DutyState::Held);
            let duty_token = shutdown.child_token();
            let lost = {
                let running = body(duty_token.clone());
                tokio::pin!(running);
                let lost = tokio::select! {
                    () = &mut running => None,
                    lost = self.keep(duty, asked + self.term()) => Some(lost),
                };
                duty_token.cancel();
                if lost.is_some() {
                    running.await;
                }
                lost
            };
            if shutdown.is_cancelled() || lost.is_none() {
                // Handed on at once, not when it lapses.
                if let Err(e) = self.store.release_lease(duty, &self.node_id).await {
                    tracing::warn!(duty, error = %e, "could not release the lease; it lapses by itself");
                }
                return;
            }
            say(lost.expect("checked above"));
        }
    }

    /// Renews the lease on `duty` (good until `valid_until` on this
    /// replica's clock) for as long as it is granted; returns why it no
    /// longer is.
    async fn keep(&self, duty: &str, mut valid_until: Instant) -> DutyState {
        let margin = (self.lease / 8).max(Duration::from_millis(250));
        let mut next = Instant::now() + self.renew_every();
        loop {
            tokio::time::sleep_until(next.min(valid_until - margin)).await;
            if Instant::now() + margin >= valid_until {
                return DutyState::Unreachable("the lease could not be renewed in time".into());
            }
            let asked = Instant::now();
            match self.store.hold_lease(duty, &self.node_id, self.term()).await {
                Ok(lease) if lease.owner == self.node_id => {
                    valid_until = asked + self.term();
                    next = asked + self.renew_every();
                }
                Ok(lease) => return DutyState::Standby { owner: lease.owner },
                // Tried again soon, until the term it has is nearly over.
                Err(_) => next = Instant::now() + Duration::from_millis(500),
            }
        }
    }
}

fn log_change(duty: &str, state: &DutyState, before: Option<&DutyState>) {
    match (state, before) {
        (DutyState::Held, _) => tracing::info!(duty, "this replica holds the duty"),
        (DutyState::Standby { owner }, Some(DutyState::Held)) => {
            tracing::warn!(duty, %owner, "the duty's lease was lost to another replica; stopped it here")
        }
        (DutyState::Standby { owner }, _) => tracing::info!(duty, %owner, "standby: another replica holds the duty"),
        (DutyState::Unreachable(why), Some(DutyState::Held)) => {
            tracing::warn!(duty, reason = %why, "stopped the duty: its lease cannot be renewed")
        }
        (DutyState::Unreachable(why), _) => tracing::warn!(duty, reason = %why, "cannot ask the store for the lease"),
    }
}

/// `cluster.node_id`, or the host name and process id when it is empty.
pub fn node_id_of(config: &ClusterConfig) -> String {
    match config.node_id.as_str() {
        "" => default_node_id(),
        given => given.to_string(),
    }
}

/// The host name and the process id: distinct for every daemon running at
/// once, which is what a node id must be.
fn default_node_id() -> String {
    let host = hostname();
    let host: String =
        host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).take(40).collect();
    let host = if host.is_empty() { "fanin".to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and the result is read only up to its first NUL.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    if !ok {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests;
