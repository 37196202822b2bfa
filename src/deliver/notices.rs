//! When the outbox worker says something: a line when a destination starts
//! failing (with the cause), a reminder with a count at most every
//! [`FAILING_LOG_EVERY`] while it keeps failing, a line when it delivers
//! again; and for the store, a line when it starts refusing the worker and
//! one when it answers again, with the wait before each retry taken from
//! [`Backoff`]. Never a line per envelope: a destination that is down
//! under load fails thousands of attempts a second.
//!
//! Pure: the worker passes the time and the random draw, and logs what it
//! is told to.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backoff::Backoff;

/// How often a destination that keeps failing is logged again.
pub const FAILING_LOG_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The first wait after the store refused the worker, and the longest.
pub const STORE_RETRY_FIRST: Duration = Duration::from_millis(250);
pub const STORE_RETRY_CAP: Duration = Duration::from_secs(15);

/// A spell of failed attempts at one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    pub since: DateTime<Utc>,
    /// Failed attempts since `since`.
    pub failed_attempts: u64,
    /// Envelopes that gave up (dead letters) since `since`.
    pub dead_letters: u64,
    /// The cause of the latest failure, with its cause chain.
    pub cause: String,
}

/// What one round of attempts at a destination came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundCounts {
    pub delivered: u64,
    pub failed: u64,
    /// Of the failed, those that were the last attempt (dead letters).
    pub dead_letters: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestinationNotice {
    /// The destination started failing.
    Failing { cause: String, failed_attempts: u64, dead_letters: u64 },
    /// It keeps failing: `failed_attempts` and `dead_letters` more since
    /// the last line.
    StillFailing { cause: String, failed_attempts: u64, dead_letters: u64, since: DateTime<Utc> },
    /// It delivered again after a spell of failures.
    Recovered { since: DateTime<Utc>, failed_attempts: u64 },
}

/// One destination's spell of failures, as logged.
#[derive(Debug, Default)]
pub struct DestinationLog {
    spell: Option<Spell>,
}

#[derive(Debug)]
struct Spell {
    failing: Failing,
    logged_at: DateTime<Utc>,
    /// Failed attempts and dead letters since the last line.
    unlogged: RoundCounts,
}

impl DestinationLog {
    /// After a round of attempts at `now`, with the cause of the round's
    /// last failure. A round with failures keeps (or starts) a spell, even
    /// if some attempts got through; only a round with deliveries and no
    /// failure ends it.
    pub fn round(&mut self, counts: RoundCounts, cause: Option<&str>, now: DateTime<Utc>) -> Option<DestinationNotice> {
        if counts.failed == 0 {
            if counts.delivered == 0 {
                return None;
            }
            let spell = self.spell.take()?;
            return Some(DestinationNotice::Recovered {
                since: spell.failing.since,
                failed_attempts: spell.failing.failed_attempts,
            });
        }
        let cause = cause.unwrap_or("unknown").to_string();
        match &mut self.spell {
            None => {
                let failing = Failing {
                    since: now,
                    failed_attempts: counts.failed,
                    dead_letters: counts.dead_letters,
                    cause: cause.clone(),
                };
                self.spell = Some(Spell { failing, logged_at: now, unlogged: RoundCounts::default() });
                Some(DestinationNotice::Failing {
                    cause,
                    failed_attempts: counts.failed,
                    dead_letters: counts.dead_letters,
                })
            }
            Some(spell) => {
                spell.failing.failed_attempts += counts.failed;
                spell.failing.dead_letters += counts.dead_letters;
                spell.failing.cause = cause;
                spell.unlogged.failed += counts.failed;
                spell.unlogged.dead_letters += counts.dead_letters;
                if now - spell.logged_at < FAILING_LOG_EVERY {
                    return None;
                }
                let notice = DestinationNotice::StillFailing {
                    cause: spell.failing.cause.clone(),
                    failed_attempts: spell.unlogged.failed,
                    dead_letters: spell.unlogged.dead_letters,
                    since: spell.failing.since,
                };
                spell.logged_at = now;
                spell.unlogged = RoundCounts::default();
                Some(notice)
            }
        }
    }

    /// The spell now, for `/ready`.
    pub fn failing(&self) -> Option<Failing> {
        self.spell.as_ref().map(|s| s.failing.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreNotice {
    /// The store started refusing the worker's reads or writes.
    Failing { reason: String },
    /// It answered again after `failures` refusals since `since`.
    Recovered { since: DateTime<Utc>, failures: u64 },
}

/// The worker's view of a store that refuses it: how long to wait before
/// trying again (growing, capped, jittered), and when to say so.
#[derive(Debug)]
pub struct StoreTrouble {
    backoff: Backoff,
    spell: Option<(DateTime<Utc>, u64)>,
}

impl Default for StoreTrouble {
    fn default() -> StoreTrouble {
        StoreTrouble { backoff: Backoff::new(STORE_RETRY_FIRST, STORE_RETRY_CAP), spell: None }
    }
}

impl StoreTrouble {
    /// The store refused at `now`: the wait before the next try (`unit` is
    /// the jitter draw in `[0, 1)`), and a notice if this starts a spell.
    pub fn failed(&mut self, reason: &str, now: DateTime<Utc>, unit: f64) -> (Duration, Option<StoreNotice>) {
        let wait = self.backoff.next_delay(unit);
        let notice = match &mut self.spell {
            Some((_, failures)) => {
                *failures += 1;
                None
            }
            None => {
                self.spell = Some((now, 1));
                Some(StoreNotice::Failing { reason: reason.to_string() })
            }
        };
        (wait, notice)
    }

    /// The store answered: the next failure starts from the first wait.
    pub fn succeeded(&mut self) -> Option<StoreNotice> {
        self.backoff.reset();
        self.spell.take().map(|(since, failures)| StoreNotice::Recovered { since, failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn counts(delivered: u64, failed: u64, dead_letters: u64) -> RoundCounts {
        RoundCounts { delivered, failed, dead_letters }
    }

    #[test]
    fn a_failing_destination_is_logged_once_then_reminded_with_a_count() {
        let mut log = DestinationLog::default();
        assert_eq!(log.round(counts(5, 0, 0), None, at(0)), None, "healthy rounds say nothing");
        assert_eq!(
            log.round(counts(0, 32, 0), Some("connection refused"), at(1)),
            Some(DestinationNotice::Failing {
                cause: "connection refused".into(),
                failed_attempts: 32,
                dead_letters: 0
            })
        );
        for s in 2..61 {
            assert_eq!(log.round(counts(0, 100, 1), Some("connection refused"), at(s)), None, "second {s}");
        }
        assert_eq!(
            log.round(counts(3, 2, 0), Some("HTTP 503"), at(61)),
            Some(DestinationNotice::StillFailing {
                cause: "HTTP 503".into(),
                failed_attempts: 59 * 100 + 2,
                dead_letters: 59,
                since: at(1)
            }),
            "a round with some deliveries but failures keeps the spell"
        );
        assert_eq!(
            log.failing(),
            Some(Failing { since: at(1), failed_attempts: 32 + 5902, dead_letters: 59, cause: "HTTP 503".into() })
        );
        assert_eq!(log.round(counts(0, 1, 0), Some("HTTP 503"), at(62)), None, "the reminder clock restarted");
        assert_eq!(
            log.round(counts(4, 0, 0), None, at(63)),
            Some(DestinationNotice::Recovered { since: at(1), failed_attempts: 5935 })
        );
        assert_eq!(log.failing(), None);
        assert_eq!(log.round(counts(4, 0, 0), None, at(64)), None);
        assert_eq!(log.round(counts(0, 0, 0), None, at(65)), None, "an empty round changes nothing");
    }

    #[test]
    fn a_refusing_store_backs_off_and_is_told_once_per_change() {
        let mut trouble = StoreTrouble::default();
        let (first, notice) = trouble.failed("disk full", at(0), 0.999_999);
        assert_eq!(notice, Some(StoreNotice::Failing { reason: "disk full".into() }));
        let waits: Vec<Duration> = (1..10)
            .map(|i| trouble.failed("disk full", at(i), 0.999_999))
            .map(|(w, n)| {
                assert_eq!(n, None, "one notice per spell");
                w
            })
            .collect();
        assert!(first < waits[0] && waits[0] < waits[1], "{first:?} {waits:?}: the wait grows");
        assert!(waits.iter().all(|w| *w <= STORE_RETRY_CAP));
        assert!(*waits.last().unwrap() > STORE_RETRY_CAP / 2, "and reaches the cap");
        assert_eq!(trouble.succeeded(), Some(StoreNotice::Recovered { since: at(0), failures: 10 }));
        assert_eq!(trouble.succeeded(), None);
        let (again, notice) = trouble.failed("disk full", at(20), 0.999_999);
        assert_eq!((again, notice.is_some()), (first, true), "a new spell starts from the first wait");
    }
}
