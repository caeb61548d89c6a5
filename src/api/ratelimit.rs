//! Per API key, per endpoint rate limit (SPEC §3.2, reference §4): a fixed one-second window
//! per `(key id, route template)`, so every `/v1/async/task/{task_id}` shares one bucket.
//! The limit is the organization's (`orgs.rate_limit`) or the server's default
//! (`serve --rate-limit`, 1,000/s).
//!
//! Windows are numbered by whole seconds since the limiter was made; a counter whose window is
//! over is reset on its next use. Memory is bounded: once per second the counters of past
//! windows are dropped, and the map never holds more than [`MAX_ENTRIES`] counters (when full,
//! new buckets are admitted uncounted until the next sweep rather than evicting live ones).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The default limit: requests per second per key per endpoint.
pub(crate) const DEFAULT_RATE_LIMIT: u32 = 1_000;
/// Most counters kept at once.
pub(crate) const MAX_ENTRIES: usize = 200_000;

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    /// `X-RateLimit-Limit`.
    pub(crate) limit: u32,
    /// `X-RateLimit-Remaining`: requests left in this window after this one.
    pub(crate) remaining: u32,
}

struct Inner {
    counters: HashMap<(String, &'static str), (u64, u32)>,
    swept: u64,
}

/// The fixed-window counters of one server.
pub(crate) struct RateLimiter {
    default_limit: u32,
    start: Instant,
    inner: Mutex<Inner>,
}

impl RateLimiter {
    pub(crate) fn new(default_limit: u32) -> RateLimiter {
        RateLimiter {
            default_limit: default_limit.max(1),
            start: Instant::now(),
            inner: Mutex::new(Inner {
                counters: HashMap::new(),
                swept: 0,
            }),
        }
    }

    /// Counts one request of `key_id` on `route` now; `org_limit` overrides the default.
    pub(crate) fn check(
        &self,
        key_id: &str,
        route: &'static str,
        org_limit: Option<u32>,
    ) -> Decision {
        let second = self.start.elapsed().as_secs();
        self.check_at(key_id, route, org_limit, second)
    }

    /// [`check`](Self::check) in window `second` (tests drive the clock).
    pub(crate) fn check_at(
        &self,
        key_id: &str,
        route: &'static str,
        org_limit: Option<u32>,
        second: u64,
    ) -> Decision {
        let limit = org_limit.unwrap_or(self.default_limit).max(1);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.swept < second {
            inner.swept = second;
            inner.counters.retain(|_, (w, _)| *w >= second);
        }
        let used = match inner.counters.get_mut(&(key_id.to_owned(), route)) {
            Some((w, n)) => {
                if *w != second {
                    *w = second;
                    *n = 0;
                }
                *n = n.saturating_add(1);
                *n
            }
            None => {
                if inner.counters.len() < MAX_ENTRIES {
                    inner
                        .counters
                        .insert((key_id.to_owned(), route), (second, 1));
                }
                1
            }
        };
        Decision {
            allowed: used <= limit,
            limit,
            remaining: limit.saturating_sub(used),
        }
    }

    /// Counters held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counters
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_within_a_window_and_resets_in_the_next() {
        let rl = RateLimiter::new(3);
        let d: Vec<_> = (0..4).map(|_| rl.check_at("k", "/a", None, 5)).collect();
        assert_eq!(
            d.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(d[2].allowed && !d[3].allowed);
        let next = rl.check_at("k", "/a", None, 6);
        assert!(next.allowed);
        assert_eq!(next.remaining, 2);
    }

    #[test]
    fn keys_and_routes_have_separate_buckets() {
        let rl = RateLimiter::new(1);
        assert!(rl.check_at("k", "/a", None, 0).allowed);
        assert!(rl.check_at("k", "/b", None, 0).allowed);
        assert!(rl.check_at("j", "/a", None, 0).allowed);
        assert!(!rl.check_at("k", "/a", None, 0).allowed);
    }

    #[test]
    fn an_organization_limit_overrides_the_default() {
        let rl = RateLimiter::new(1000);
        let d = rl.check_at("k", "/a", Some(2), 0);
        assert_eq!((d.limit, d.remaining), (2, 1));
    }

    #[test]
    fn past_windows_are_evicted() {
        let rl = RateLimiter::new(10);
        for i in 0..100 {
            rl.check_at(&format!("k{i}"), "/a", None, 0);
        }
        assert_eq!(rl.len(), 100);
        rl.check_at("k0", "/a", None, 1);
        assert_eq!(rl.len(), 1);
    }
}
