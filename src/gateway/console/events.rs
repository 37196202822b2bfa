//! `GET /ui/events`: server-sent events telling the console's open pages
//! that runs changed, so their lists refresh without a reload
//! (console.js). The signal is the store's count of committed batches
//! ([`StoreWatch::commits`](crate::store::StoreWatch::commits)): every
//! writer passes there, and a watch coalesces a burst of commits into one
//! event for a client that is behind, so no client polls the store. On a
//! store other processes write too (replicas on PostgreSQL), what they
//! commit arrives as the store's wake-ups
//! ([`Store::wakeups`](crate::store::Store::wakeups)), and each is an
//! event as well.
//!
//! A stream lasts at most `request_timeout_secs`, the bound every request
//! of the gateway keeps (so a shutdown never waits on an open page); the
//! browser reopens it by itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::{AppState, ConsoleAccess};
use crate::store::Wakeup;

pub async fn stream(
    State(state): State<AppState>,
    _: ConsoleAccess,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let lasts = Duration::from_secs(state.config.request_timeout_secs.max(1));
    let until = tokio::time::Instant::now() + lasts;
    let commits = state.store.watch().commits();
    let elsewhere = state.store.wakeups();
    let events = futures_util::stream::unfold((commits, elsewhere), move |(mut commits, mut elsewhere)| async move {
        let changed = tokio::select! {
            here = commits.changed() => here.is_ok(),
            there = heard(&mut elsewhere) => there,
            _ = tokio::time::sleep_until(until) => false,
        };
        if !changed {
            return None;
        }
        let n = *commits.borrow_and_update();
        Some((Ok(Event::default().event("runs").data(n.to_string())), (commits, elsewhere)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive(lasts)))
}

/// The next wake-ups from other processes, those already queued taken
/// with the first so a burst is one event (every kind changes some list:
/// a step, an envelope, a run; one missed, `Lagged`, may have been any).
/// Never, for a store nobody else writes or once its listener is gone.
async fn heard(elsewhere: &mut Option<broadcast::Receiver<Wakeup>>) -> bool {
    let Some(receiver) = elsewhere else { return std::future::pending().await };
    match receiver.recv().await {
        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
            while !matches!(
                receiver.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
            true
        }
        Err(broadcast::error::RecvError::Closed) => {
            *elsewhere = None;
            std::future::pending().await
        }
    }
}

/// Often enough that a proxy in between sees the stream alive before the
/// stream ends by itself.
fn keep_alive(lasts: Duration) -> Duration {
    (lasts / 2).clamp(Duration::from_millis(500), Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_come_before_the_stream_ends() {
        assert_eq!(keep_alive(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(keep_alive(Duration::from_secs(4)), Duration::from_secs(2));
        assert_eq!(keep_alive(Duration::from_secs(1)), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_burst_of_wake_ups_is_heard_once_and_a_store_nobody_else_writes_is_never_heard() {
        use futures_util::FutureExt;
        let (sender, receiver) = broadcast::channel(4);
        let mut elsewhere = Some(receiver);
        for wakeup in [Wakeup::Runs, Wakeup::Step, Wakeup::Outbox] {
            sender.send(wakeup).unwrap();
        }
        assert_eq!(heard(&mut elsewhere).now_or_never(), Some(true));
        assert_eq!(heard(&mut elsewhere).now_or_never(), None, "the burst was taken whole");
        for _ in 0..6 {
            sender.send(Wakeup::Runs).unwrap();
        }
        assert_eq!(heard(&mut elsewhere).now_or_never(), Some(true), "fell behind: something changed");
        assert_eq!(heard(&mut elsewhere).now_or_never(), None);
        drop(sender);
        assert_eq!(heard(&mut elsewhere).now_or_never(), None, "a listener gone says nothing");
        assert!(elsewhere.is_none());
        assert_eq!(heard(&mut None).now_or_never(), None);
    }
}
