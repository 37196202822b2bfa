//! A replica's admission holds, shared by its own concurrent requests.
//!
//! Under `[cluster]` a decision on a SOP is taken under the store's hold on
//! it ([`Store::hold_admission`]), kept until the decision is committed. One
//! hold per request would admit a SOP's runs one commit at a time across
//! the whole cluster. So requests of this process for the same SOPs share
//! one: the first takes it (and admission is reseeded from what it read),
//! the others join it while it is open, and it is released when the last of
//! them has committed. While this process holds it no other replica decides
//! for those SOPs, so this process's own admission state is exact for them
//! and a joiner needs no fresh read. A hold closes to joiners after
//! [`MAX_JOINERS`], so a busy replica hands the SOP on to the others in
//! turn (the server grants a waited-for lock in order) rather than keeping
//! it while its own load lasts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::{AdmissionHold, Store, StoreError};

/// Requests one hold serves before it stops taking more.
const MAX_JOINERS: usize = 256;

#[derive(Default)]
struct Slot {
    hold: Option<AdmissionHold>,
    /// Requests holding a ticket.
    users: usize,
    /// Requests served by this hold so far.
    served: usize,
}

/// The holds of one process, by the sorted SOP names they hold.
#[derive(Default)]
pub(super) struct SharedHolds {
    slots: Mutex<HashMap<String, Arc<SlotCell>>>,
}

#[derive(Default)]
struct SlotCell {
    slot: tokio::sync::Mutex<Slot>,
    /// Told when the hold is released, for requests waiting to take the next.
    released: Notify,
}

/// One request's share of a hold; [`HoldTicket::release`] once its writes
/// are committed (or failed). One dropped unreleased (its request given up
/// midway) is released on a task of its own, so the hold still ends.
pub(super) struct HoldTicket {
    cell: Option<Arc<SlotCell>>,
}

impl SharedHolds {
    /// Joins the open hold on `sops`, or takes a fresh one from `store`,
    /// calling `fresh` with what it read before anyone plans under it.
    pub async fn acquire(
        &self,
        store: &dyn Store,
        sops: &[String],
        fresh: impl FnOnce(&AdmissionHold),
    ) -> Result<HoldTicket, StoreError> {
        let mut names: Vec<&str> = sops.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let key = names.join("\n");
        let cell = Arc::clone(self.slots.lock().expect("holds lock").entry(key).or_default());
        loop {
            let mut slot = cell.slot.lock().await;
            if slot.hold.is_none() {
                let hold = store.hold_admission(sops).await?;
                fresh(&hold);
                *slot = Slot { hold: Some(hold), users: 1, served: 1 };
                return Ok(HoldTicket { cell: Some(Arc::clone(&cell)) });
            }
            if slot.served < MAX_JOINERS {
                slot.users += 1;
                slot.served += 1;
                return Ok(HoldTicket { cell: Some(Arc::clone(&cell)) });
            }
            // Closed to joiners: wait for its release, then take the next.
            let released = cell.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            drop(slot);
            released.await;
        }
    }
}

impl HoldTicket {
    pub async fn release(mut self) {
        if let Some(cell) = self.cell.take() {
            leave(cell).await;
        }
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            tokio::spawn(leave(cell));
        }
    }
}

async fn leave(cell: Arc<SlotCell>) {
    let mut slot = cell.slot.lock().await;
    slot.users -= 1;
    if slot.users == 0 {
        if let Some(hold) = slot.hold.take() {
            hold.release().await;
        }
        cell.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::Backend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn requests_share_an_open_hold_and_the_last_release_ends_it() {
        let Some(backend) = Backend::postgres("requests_share_an_open_hold").await else { return };
        let (store, other) = (backend.open().await, backend.open().await);
        let holds = SharedHolds::default();
        let fresh = AtomicUsize::new(0);
        let count = |_: &AdmissionHold| {
            fresh.fetch_add(1, Ordering::SeqCst);
        };
        let sops = ["s".to_string()];
        let first = holds.acquire(&*store, &sops, count).await.unwrap();
        let second = holds.acquire(&*store, &sops, count).await.unwrap();
        assert_eq!(fresh.load(Ordering::SeqCst), 1, "the second request joins the first's hold");
        first.release().await;
        // Still held for the second: another process waits for it.
        let waiting = tokio::spawn(async move { other.hold_admission(&["s".to_string()]).await.unwrap() });
        let Backend::Postgres(schema) = &backend else { unreachable!() };
        schema.wait_for_advisory_waiter("the other process waits").await;
        second.release().await;
        waiting.await.unwrap().release().await;

        let mut tickets = Vec::new();
        for _ in 0..MAX_JOINERS {
            tickets.push(holds.acquire(&*store, &sops, count).await.unwrap());
        }
        assert_eq!(fresh.load(Ordering::SeqCst), 2, "a fresh hold after the last release");
        // Closed to joiners: the next waits for the release and takes a fresh one.
        let next = holds.acquire(&*store, &sops, count);
        tokio::pin!(next);
        assert!(futures_util::poll!(next.as_mut()).is_pending());
        for ticket in tickets {
            ticket.release().await;
        }
        next.await.unwrap().release().await;
        assert_eq!(fresh.load(Ordering::SeqCst), 3);
    }
}
