//! Whether a skipped serial line is worth a log line or only a counter.
//! Pure: time is an argument.

use std::time::{Duration, Instant};

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
