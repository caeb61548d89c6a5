//! Delay schedules, written once.
//!
//! * [`backoff_ms`]: the durable retry schedule of a task attempt (the dispatcher) and of a
//!   webhook delivery (the sender): `base·2^(n-1)` after the `n`-th failure. The resulting due
//!   time is a wall-clock time, so it is added to the [`crate::clock::Clock`]'s now.
//! * [`Jitter`]: how a task retry's delay is spread around that schedule. Tasks that failed
//!   together (an engine outage, a node restart) would otherwise all be due again at the same
//!   millisecond and hit the engine as one burst, every round. Each delay is drawn uniformly
//!   from [0.5, 1.5) × the schedule's value, so the schedule stays the mean.
//! * [`Doubling`]: the in-process waits after a store error (a failed claim, an outcome that
//!   could not be written yet): `first`, then twice that, and so on up to `max`. These are
//!   durations slept on `tokio::time`.

use std::time::Duration;

use rand::Rng;

/// Backoff before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
pub(crate) fn backoff_ms(base: u64, attempt: u32) -> u64 {
    base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
}

/// How a task retry's delay is spread around [`backoff_ms`]'s value (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in [0.5, 1.5) × the schedule's value: its mean is the schedule.
    #[default]
    Uniform,
    /// Exactly the schedule (tests that check the schedule itself).
    Off,
}

impl Jitter {
    /// The delay before attempt `attempt + 1` after attempt `attempt` (1-based) failed.
    pub(crate) fn retry_ms(self, base: u64, attempt: u32) -> u64 {
        self.retry_ms_with(base, attempt, &mut rand::rng())
    }

    /// [`Jitter::retry_ms`] drawing from `rng` (a seeded one in tests).
    pub(crate) fn retry_ms_with(self, base: u64, attempt: u32, rng: &mut impl Rng) -> u64 {
        let ms = backoff_ms(base, attempt);
        match self {
            Jitter::Off => ms,
            Jitter::Uniform => spread(ms, rng.random::<f64>()),
        }
    }
}

/// `ms × (0.5 + unit)`, rounded, for `unit` in [0, 1): uniform over [0.5, 1.5) × `ms` when
/// `unit` is, whose mean is `ms`. Saturates instead of overflowing.
fn spread(ms: u64, unit: f64) -> u64 {
    // A float-to-int `as` saturates (and maps NaN to 0), so no value overflows.
    (ms as f64 * (0.5 + unit.clamp(0.0, 1.0))).round() as u64
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
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        assert_eq!(backoff_ms(100, 1), 100);
        assert_eq!(backoff_ms(100, 2), 200);
        assert_eq!(backoff_ms(100, 4), 800);
        assert_eq!(backoff_ms(u64::MAX, 3), u64::MAX);
    }

    #[test]
    fn a_jittered_delay_stays_within_half_and_one_and_a_half_of_the_schedule() {
        assert_eq!(spread(1_000, 0.0), 500);
        assert_eq!(spread(1_000, 0.999_999), 1_500);
        assert_eq!(spread(1_000, 0.5), 1_000);
        // Tiny bases keep their value; huge ones saturate.
        assert_eq!(spread(1, 0.0), 1);
        assert_eq!(spread(0, 0.7), 0);
        assert_eq!(spread(u64::MAX, 0.9), u64::MAX);
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=5 {
            let d = Jitter::Uniform.retry_ms_with(1_000, attempt, &mut rng);
            let schedule = backoff_ms(1_000, attempt);
            assert!(d >= schedule / 2 && d <= schedule * 3 / 2, "{attempt}: {d}");
        }
    }

    #[test]
    fn the_schedule_is_the_mean_of_the_jittered_delays() {
        let mut rng = StdRng::seed_from_u64(12);
        let n = 20_000u64;
        for attempt in [1, 3, 5] {
            let schedule = backoff_ms(1_000, attempt);
            let sum: u64 = (0..n)
                .map(|_| Jitter::Uniform.retry_ms_with(1_000, attempt, &mut rng))
                .sum();
            let mean = sum as f64 / n as f64;
            // The mean's standard error is schedule·0.29/√n ≈ 0.2 % of it; allow 1 %.
            assert!(
                (mean / schedule as f64 - 1.0).abs() < 0.01,
                "attempt {attempt}: mean {mean}, schedule {schedule}"
            );
        }
    }

    #[test]
    fn without_jitter_the_delay_is_the_schedule() {
        let mut rng = StdRng::seed_from_u64(1);
        for attempt in 1..=5 {
            assert_eq!(
                Jitter::Off.retry_ms_with(250, attempt, &mut rng),
                backoff_ms(250, attempt)
            );
        }
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
