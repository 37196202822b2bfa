//! The pacing of reconnections of every source that connects out (a broker,
//! a mailbox, an API), and a record of the connection's
//! state so each change is logged once rather than once per retry. Pure.

use std::time::Duration;

/// The first reconnection waits about this long…
pub const INITIAL: Duration = Duration::from_millis(500);
/// …doubling up to this.
pub const CAP: Duration = Duration::from_secs(30);
/// A connection that lasted this long was healthy: the next loss starts
/// the backoff from the beginning again. Shorter ones keep counting, so a
/// broker that accepts and then drops us at once is not hammered.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What the listener last reported, to decide what deserves a log line.
#[derive(Debug, Default)]
pub struct LinkLog {
    up: bool,
    last_problem: Option<String>,
}

/// How loudly to report an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Say {
    /// A state change: log it at info (connected) or warn (lost).
    Loud,
    /// The same state again (another failed retry for the same reason).
    Quiet,
}

impl LinkLog {
    /// The broker accepted us.
    pub fn connected(&mut self) -> Say {
        let was_up = std::mem::replace(&mut self.up, true);
        self.last_problem = None;
        if was_up {
            Say::Quiet
        } else {
            Say::Loud
        }
    }

    /// A connection ended or could not be made, for `reason`.
    pub fn lost(&mut self, reason: &str) -> Say {
        let was_up = std::mem::replace(&mut self.up, false);
        let same = self.last_problem.as_deref() == Some(reason);
        self.last_problem = Some(reason.to_string());
        if was_up || !same {
            Say::Loud
        } else {
            Say::Quiet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_change_is_loud_once() {
        let mut log = LinkLog::default();
        assert_eq!(log.lost("connection refused"), Say::Loud, "the first failure at start");
        assert_eq!(log.lost("connection refused"), Say::Quiet, "the same failure on retry");
        assert_eq!(log.lost("connection refused"), Say::Quiet);
        assert_eq!(log.lost("TLS: unknown issuer"), Say::Loud, "a new reason");
        assert_eq!(log.connected(), Say::Loud);
        assert_eq!(log.connected(), Say::Quiet);
        assert_eq!(log.lost("TLS: unknown issuer"), Say::Loud, "losing a live connection");
        assert_eq!(log.connected(), Say::Loud);
    }
}
