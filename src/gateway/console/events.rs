//! `GET /ui/events`: server-sent events telling the console's open pages
//! that runs changed, so their lists refresh without a reload
//! (console.js). The signal is the store's count of committed batches
//! ([`StoreWatch::commits`](crate::store::StoreWatch::commits)): every
//! writer passes there, and a watch coalesces a burst of commits into one
//! event for a client that is behind, so no client polls the store.
//!
//! A stream lasts at most `request_timeout_secs`, the bound every request
//! of the gateway keeps (so a shutdown never waits on an open page); the
//! browser reopens it by itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::{AppState, ConsoleAccess};

pub async fn stream(
    State(state): State<AppState>,
    _: ConsoleAccess,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let lasts = Duration::from_secs(state.config.request_timeout_secs.max(1));
    let until = tokio::time::Instant::now() + lasts;
    let commits = state.store.watch().commits();
    let events = futures_util::stream::unfold(commits, move |mut commits| async move {
        match tokio::time::timeout_at(until, commits.changed()).await {
            Ok(Ok(())) => {
                let n = *commits.borrow_and_update();
                Some((Ok(Event::default().event("runs").data(n.to_string())), commits))
            }
            _ => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive(lasts)))
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
}
