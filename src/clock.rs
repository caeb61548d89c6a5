//! Wall-clock time, injected.
//!
//! Every place that reads the time to decide something (a retry's due time, a webhook's next
//! attempt, a lease, a billing cycle, the purge cutoff, `startedAt` and `completedAt`) reads it
//! from a [`Clock`] handed to it at start-up, never from [`std::time::SystemTime`] directly. In
//! production that is [`Clock::system`]; tests use [`Clock::manual`] and move time themselves,
//! so "a retry 2 minutes later" or "a cycle that ends tomorrow" is a plain test that does not
//! wait.
//!
//! Times are epoch milliseconds (`i64`), the unit both stores keep (see [`crate::time_fmt`]).
//! A clock is cheap to clone and may be read from any thread (the SQLite writer thread
//! included).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of wall-clock time in epoch milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a manual clock, moved only by [`Clock::advance`] and
    /// `Clock::set` (unit tests).
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that starts at `start_ms` and moves only when told to ([`Clock::advance`],
    /// `Clock::set` in unit tests). Clones share the same time.
    pub fn manual(start_ms: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch, now.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => crate::time_fmt::now_ms(),
            Some(t) => t.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock forward by `ms` (backwards with a negative value). A system clock
    /// ignores it.
    pub fn advance(&self, ms: i64) {
        if let Some(t) = &self.manual {
            t.fetch_add(ms, Ordering::AcqRel);
        }
    }

    /// Sets a manual clock to `ms`. A system clock ignores it.
    #[cfg(test)]
    pub(crate) fn set(&self, ms: i64) {
        if let Some(t) = &self.manual {
            t.store(ms, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = Clock::manual(1_000);
        let d = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        c.advance(250);
        assert_eq!(d.now_ms(), 1_250);
        d.set(5);
        assert_eq!(c.now_ms(), 5);
    }

    #[test]
    fn the_system_clock_follows_the_wall_and_ignores_moves() {
        let c = Clock::system();
        let before = crate::time_fmt::now_ms();
        c.advance(1_000_000);
        let now = c.now_ms();
        assert!(now >= before && now < before + 60_000, "{now} vs {before}");
    }
}
