//! When to try again: capped exponential backoff with jitter, shared by
//! everything that retries — sources reconnecting (MQTT, serial ports) or
//! retrying a dispatch, and the outbox redelivering. Pure: the random draw
//! is an argument.

use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff { initial, cap, failures: 0 }
    }

    /// The wait before the next attempt, then doubles the base up to the
    /// cap. `unit` is a random number in `[0, 1)`: the wait is between half
    /// and all of the base, so peers that failed together (boards on one USB
    /// hub, replicas that lost one broker) do not retry in lockstep.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let delay = Backoff::nth(self.initial, self.cap, self.failures, unit);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// After a healthy spell: the next failure starts from a short wait.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait after `failures` failures, for callers that keep the count
    /// themselves (the outbox stores it): `initial * 2^failures`, capped,
    /// scaled into its upper half by `unit`.
    pub fn nth(initial: Duration, cap: Duration, failures: u32, unit: f64) -> Duration {
        let base = initial.saturating_mul(2u32.saturating_pow(failures.min(31))).min(cap);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
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
    fn many_failures_stay_at_the_cap_and_bad_draws_are_clamped() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        for _ in 0..1000 {
            b.next_delay(0.5);
        }
        assert_eq!(b.next_delay(0.999_999).as_millis(), 29_999);
        assert_eq!(b.next_delay(-3.0), Duration::from_secs(15));
        assert_eq!(b.next_delay(7.0), Duration::from_secs(30));
    }
}
