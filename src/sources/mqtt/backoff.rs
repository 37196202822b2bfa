//! When to try the broker again, and what to say about it: capped
//! exponential backoff with jitter, and a record of the connection's state so
//! each change is logged once rather than once per retry.
//!
//! Pure: the random draw and the clock readings are arguments.

use std::time::Duration;

/// The first retry waits about this long…
pub const INITIAL: Duration = Duration::from_millis(500);
/// …doubling up to this.
pub const CAP: Duration = Duration::from_secs(30);
/// A connection that lasted this long was healthy: the next loss starts
/// the backoff from the beginning again. Shorter ones keep counting, so a
/// broker that accepts and then drops us at once is not hammered.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The wait before retry number `failures` (0 = the first retry):
/// `min(CAP, INITIAL * 2^failures)`, scaled into its upper half by `jitter`
/// (a draw from `[0, 1)`), so replicas that lost the broker together do not
/// return in step, while a wait never drops below half its nominal value.
pub fn delay(failures: u32, jitter: f64) -> Duration {
    let nominal = INITIAL.saturating_mul(2u32.saturating_pow(failures.min(16))).min(CAP);
    let jitter = jitter.clamp(0.0, 1.0);
    nominal.mul_f64(0.5 + 0.5 * jitter)
}

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
    fn delays_double_up_to_the_cap() {
        let cases = [
            (0, 0.999_999, 500),
            (1, 0.999_999, 1000),
            (2, 0.999_999, 2000),
            (5, 0.999_999, 16_000),
            (6, 0.999_999, 30_000),
            (40, 0.999_999, 30_000),
            (u32::MAX, 0.999_999, 30_000),
        ];
        for (failures, jitter, millis) in cases {
            let got = delay(failures, jitter).as_millis();
            assert!(got.abs_diff(millis) <= 1, "failures {failures}: {got} ms, expected {millis}");
        }
    }

    #[test]
    fn jitter_keeps_a_wait_in_the_upper_half() {
        assert_eq!(delay(2, 0.0), Duration::from_millis(1000));
        assert_eq!(delay(2, 0.5), Duration::from_millis(1500));
        assert!(delay(2, 0.99) < Duration::from_millis(2000));
        // An out-of-range draw is clamped, never a zero or a huge wait.
        assert_eq!(delay(0, -3.0), Duration::from_millis(250));
        assert_eq!(delay(0, 7.0), Duration::from_millis(500));
    }

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
