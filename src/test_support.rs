//! What the crate's unit tests share: the one way a test waits for
//! something a background task does (whole-daemon tests have their own, in
//! `tests/common`, since they cannot reach this crate's test code).

use std::time::{Duration, Instant};

/// How long a unit test waits for a signal before it fails: generous, for
/// a loaded machine; a passing test never waits it out.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `probe` until it holds, for at most [`DEADLINE`], then fails the
/// test naming `what`.
pub async fn eventually(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
