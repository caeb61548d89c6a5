//! Tasks first: the webhook sender's pace behind a busy task queue (step 4 of the module doc
//! of [`super`]). [`Pace`] measures how many attempts the dispatcher finishes ([`Gate::finished`])
//! and, while the queue is busy, lets deliveries start at a fixed rate; [`SenderPacer`] plugs it
//! into the claim loop. Measured on `tokio::time`, so tests run it on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use super::WebhookConfig;
use crate::worker::Gate;
use crate::worker::claim_loop::Pacer;

/// The sender's side of the claim loop: holds it off while paced and out of tokens, and trims
/// each claim to the tokens left and to `max_batch`.
pub(super) struct SenderPacer {
    pace: Pace,
    gate: Arc<Gate>,
    max_batch: usize,
}

impl SenderPacer {
    pub(super) fn new(cfg: &WebhookConfig, gate: Arc<Gate>, max_batch: usize) -> SenderPacer {
        SenderPacer {
            pace: Pace::new(cfg, gate.finished()),
            gate,
            max_batch,
        }
    }
}

impl Pacer for SenderPacer {
    fn hold(&mut self) -> Option<impl Future<Output = ()> + Send + '_> {
        // Tasks first: while the queue is busy, wait for the next start allowed.
        self.pace.wait(self.gate.finished()).map(tokio::time::sleep)
    }

    fn batch(&mut self, free: usize) -> usize {
        free.min(self.max_batch).min(self.pace.allowed())
    }

    fn started(&mut self, n: usize) {
        self.pace.started(n);
    }
}

/// The sender's pace: unlimited while the queue is quiet, `busy_deliveries_per_sec` while this
/// node finishes more than `busy_tasks_per_sec` task attempts per second (measured over 100 ms
/// windows). Busy starts with the first busy window and ends only after [`Pace::QUIET`] without
/// one, so a short dip in a busy queue (a burst of submissions, a slow commit) does not let a
/// burst of deliveries in.
struct Pace {
    busy_tasks_per_sec: u64,
    per_sec: u64,
    window_start: tokio::time::Instant,
    finished_at_start: u64,
    busy: bool,
    /// When the last busy window ended.
    last_busy: tokio::time::Instant,
    /// Starts allowed now while busy (refilled at `per_sec`).
    tokens: f64,
    refilled: tokio::time::Instant,
}

impl Pace {
    const WINDOW: Duration = Duration::from_millis(100);
    const QUIET: Duration = Duration::from_secs(1);

    fn new(cfg: &WebhookConfig, finished: u64) -> Pace {
        Pace::new_at(cfg, finished, tokio::time::Instant::now())
    }

    fn new_at(cfg: &WebhookConfig, finished: u64, now: tokio::time::Instant) -> Pace {
        Pace {
            busy_tasks_per_sec: cfg.busy_tasks_per_sec,
            per_sec: cfg.busy_deliveries_per_sec.max(1),
            window_start: now,
            finished_at_start: finished,
            busy: false,
            last_busy: now.checked_sub(Self::QUIET).unwrap_or(now),
            tokens: 0.0,
            refilled: now,
        }
    }

    /// Updates the busy state; while busy and out of tokens, how long to wait.
    fn wait(&mut self, finished: u64) -> Option<Duration> {
        self.wait_at(finished, tokio::time::Instant::now())
    }

    fn wait_at(&mut self, finished: u64, now: tokio::time::Instant) -> Option<Duration> {
        let span = now.duration_since(self.window_start);
        let done = finished.saturating_sub(self.finished_at_start) as f64;
        let busy_per_window = self.busy_tasks_per_sec as f64 * Self::WINDOW.as_secs_f64();
        let was = self.busy;
        if span >= Self::WINDOW {
            if done / span.as_secs_f64() > self.busy_tasks_per_sec as f64 {
                self.last_busy = now;
                self.busy = true;
            } else if now.duration_since(self.last_busy) >= Self::QUIET {
                self.busy = false;
            }
            self.window_start = now;
            self.finished_at_start = finished;
        } else if done > busy_per_window {
            // Busy already within this window (a queue starting to drain): no need to wait
            // for its end, while a burst of deliveries would get in.
            self.last_busy = now;
            self.busy = true;
        }
        if self.busy && !was {
            self.tokens = 0.0;
            self.refilled = now;
        }
        if !self.busy {
            return None;
        }
        let per_sec = self.per_sec as f64;
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * per_sec)
            .min(per_sec / 10.0 + 1.0);
        self.refilled = now;
        if self.tokens >= 1.0 {
            None
        } else {
            let until_token = Duration::from_secs_f64((1.0 - self.tokens) / per_sec);
            Some(until_token.min(Self::WINDOW))
        }
    }

    /// How many attempts may start now.
    fn allowed(&self) -> usize {
        if self.busy {
            self.tokens.max(0.0) as usize
        } else {
            usize::MAX
        }
    }

    fn started(&mut self, n: usize) {
        if self.busy {
            self.tokens -= n as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_stays_busy_through_a_short_dip_and_ends_after_a_quiet_second() {
        let cfg = WebhookConfig {
            busy_tasks_per_sec: 1_000,
            busy_deliveries_per_sec: 100,
            ..WebhookConfig::default()
        };
        let start = tokio::time::Instant::now();
        let (mut finished, mut ms) = (0, 0);
        let mut pace = Pace::new_at(&cfg, finished, start);
        // `n` more attempts finished after `after_ms` more milliseconds.
        let mut step = |pace: &mut Pace, after_ms: u64, n: u64| {
            ms += after_ms;
            finished += n;
            pace.wait_at(finished, start + Duration::from_millis(ms))
        };
        assert_eq!(step(&mut pace, 0, 0), None, "a quiet queue: no wait");
        assert_eq!(pace.allowed(), usize::MAX);
        assert_eq!(step(&mut pace, 10, 50), None, "not busy yet");
        // 150 attempts within 20 ms of the window: more than a busy window's 100 already, so
        // busy at once, and out of tokens at first.
        assert!(step(&mut pace, 10, 100).is_some(), "busy: wait for a token");
        step(&mut pace, 80, 50);
        assert!(pace.busy, "still busy at the window's end");
        assert!(
            pace.allowed() <= 11,
            "{} starts allowed while busy",
            pace.allowed()
        );
        // A dip (nothing finished for 300 ms) does not end it.
        step(&mut pace, 300, 0);
        assert!(pace.busy, "a short dip keeps the pace");
        assert!(
            pace.allowed() <= 11,
            "{} starts allowed while busy",
            pace.allowed()
        );
        // A second without a busy window does.
        for _ in 0..10 {
            step(&mut pace, 100, 10);
        }
        assert!(!pace.busy, "a quiet second ends it");
        assert_eq!(step(&mut pace, 0, 0), None);
        assert_eq!(pace.allowed(), usize::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sender_is_held_behind_a_busy_queue_and_runs_free_after_a_quiet_second() {
        let cfg = WebhookConfig {
            busy_tasks_per_sec: 1_000,
            busy_deliveries_per_sec: 100,
            ..WebhookConfig::default()
        };
        let gate = Arc::new(Gate::default());
        let mut pacer = SenderPacer::new(&cfg, gate.clone(), 256);
        assert!(pacer.hold().is_none(), "a quiet queue: no wait");
        assert_eq!(pacer.batch(10_000), 256, "at most a batch at once");
        // 150 attempts finish within 10 ms: busy, and out of tokens at first.
        tokio::time::advance(Duration::from_millis(10)).await;
        for _ in 0..150 {
            gate.count_finished();
        }
        let started = tokio::time::Instant::now();
        let mut starts = 0;
        // Over the next second, the queue finishing 2,000 attempts per second, at most 100
        // deliveries start (plus the burst allowance of a tenth of a second).
        while started.elapsed() < Duration::from_secs(1) {
            for _ in 0..20 {
                gate.count_finished();
            }
            if let Some(wait) = pacer.hold() {
                wait.await;
                continue;
            }
            let n = pacer.batch(10_000);
            assert!((1..=11).contains(&n), "{n} starts at once while paced");
            pacer.started(n);
            starts += n;
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(
            (90..=111).contains(&starts),
            "{starts} starts in a busy second"
        );
        // A quiet second (nothing finishes) ends it.
        tokio::time::advance(Duration::from_millis(1_100)).await;
        assert!(pacer.hold().is_none(), "not paced");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(pacer.hold().is_none());
        assert_eq!(
            pacer.batch(10_000),
            256,
            "the backlog goes out at full speed"
        );
    }
}
