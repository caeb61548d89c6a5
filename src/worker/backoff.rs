//! Delay schedules, written once.
//!
//! * [`backoff_ms`]: the durable retry schedule of a task attempt (the dispatcher) and of a
//!   webhook delivery (the sender): `base·2^(n-1)` after the `n`-th failure. The resulting due
//!   time is a wall-clock time, so it is added to the [`crate::clock::Clock`]'s now.
//! * [`Doubling`]: the in-process waits after a store error (a failed claim, an outcome that
//!   could not be written yet): `first`, then twice that, and so on up to `max`. These are
//!   durations slept on `tokio::time`.

use std::time::Duration;

/// Backoff before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
pub(crate) fn backoff_ms(base: u64, attempt: u32) -> u64 {
    base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
}

/// A wait that doubles with each consecutive failure: `first` after the first, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Doubling {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

impl Doubling {
    /// The wait after the `failures`-th consecutive failure (1-based; 0 counts as 1).
    pub(crate) fn after(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        assert_eq!(backoff_ms(100, 1), 100);
        assert_eq!(backoff_ms(100, 2), 200);
        assert_eq!(backoff_ms(100, 4), 800);
        assert_eq!(backoff_ms(u64::MAX, 3), u64::MAX);
    }

    #[test]
    fn a_doubling_wait_starts_at_first_and_stops_at_max() {
        let d = Doubling {
            first: Duration::from_millis(100),
            max: Duration::from_millis(3_200),
        };
        let ms: Vec<u128> = (1..=8).map(|f| d.after(f).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_600, 3_200, 3_200, 3_200]);
        assert_eq!(d.after(0), d.after(1));
        assert_eq!(d.after(u32::MAX), d.max);
    }
}
