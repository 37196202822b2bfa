//! The two pacing decisions of a serial reader, kept pure (time and
//! randomness are arguments): how long to wait before reopening a port, and
//! whether a skipped line is worth a log line or only a counter.

use std::time::{Duration, Instant};

/// Capped exponential backoff with jitter for reopening a port.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff { initial, cap, next: initial }
    }

    /// The wait before the next attempt, then doubles the base up to the
    /// cap. `unit` is a random number in `[0, 1)`: the wait is between half
    /// and all of the base, so many boards unplugged together (a USB hub)
    /// do not retry in lockstep.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// After a port delivered data: the next loss starts from a short wait.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What to do about one skipped line.
#[derive(Debug, PartialEq, Eq)]
pub enum BadLineNote {
    /// The first bad line of this reader: log it in full.
    LogFirst,
    /// Log that `skipped` more lines were skipped since the last log.
    LogSummary { skipped: u64 },
    /// Only count it.
    Quiet,
}

/// Logs the first bad line of a board, then at most one summary per
/// `every`, so a board at the wrong baud rate cannot flood the log.
#[derive(Debug)]
pub struct BadLineLog {
    every: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl BadLineLog {
    pub fn new(every: Duration) -> BadLineLog {
        BadLineLog { every, last_logged: None, unlogged: 0 }
    }

    pub fn note(&mut self, now: Instant) -> BadLineNote {
        let Some(last) = self.last_logged else {
            self.last_logged = Some(now);
            return BadLineNote::LogFirst;
        };
        self.unlogged += 1;
        if now.saturating_duration_since(last) >= self.every {
            self.last_logged = Some(now);
            let skipped = std::mem::take(&mut self.unlogged);
            BadLineNote::LogSummary { skipped }
        } else {
            BadLineNote::Quiet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_below_the_base() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let full: Vec<u128> = (0..6).map(|_| b.next_delay(0.999_999).as_millis()).collect();
        assert_eq!(full, vec![99, 199, 399, 799, 999, 999]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50), "half the base at the low end");
        assert_eq!(b.next_delay(0.5), Duration::from_millis(150));
    }

    #[test]
    fn the_first_bad_line_is_logged_then_only_summaries_at_most_once_per_period() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut log = BadLineLog::new(Duration::from_secs(60));
        assert_eq!(log.note(at(0)), BadLineNote::LogFirst);
        assert_eq!(log.note(at(1)), BadLineNote::Quiet);
        assert_eq!(log.note(at(59)), BadLineNote::Quiet);
        assert_eq!(log.note(at(60)), BadLineNote::LogSummary { skipped: 3 });
        assert_eq!(log.note(at(61)), BadLineNote::Quiet);
        assert_eq!(log.note(at(200)), BadLineNote::LogSummary { skipped: 2 });
    }
}
