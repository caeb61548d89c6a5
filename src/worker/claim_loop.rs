//! The claim loop: the one scheduler the dispatcher and the webhook sender both run.
//!
//! Protocol, one round at a time, until the cancellation token fires:
//! 1. **Hold.** The [`Pacer`] may hold the loop off (the dispatcher's [`super::Gate`] is
//!    paused; the sender is paced behind a busy task queue). The loop waits for what the pacer
//!    says, then starts the round again.
//! 2. **Register for the wake-up** before looking at anything: the source's notify (new work
//!    committed, a retry scheduled), which the loop also signals when an item ends (a place is
//!    free), so that a wake-up arriving while the loop claims is not lost.
//! 3. **Claim.** With `free` places left under [`LoopConfig::max_in_flight`], the pacer says how
//!    many to ask for ([`Pacer::batch`]) and the source claims up to that many. Each item runs on
//!    its own Tokio task ([`Source::run`]); its place is taken until that future ends (the
//!    dispatcher's run ends only once the outcome is durably recorded, so a slot is never freed
//!    early nor leaked). A claim that returned as many as asked is followed at once by another.
//!    A run that panics is caught and logged, and its place is freed like any other: a bug in
//!    one item never shrinks the loop for good (the dispatcher catches its own panics first, so
//!    that the task's outcome is recorded and its organization's slot freed too).
//! 4. **Back off.** A claim that fails (the store is unavailable) is retried after
//!    [`LoopConfig::claim_backoff`] (doubling per consecutive failure); nothing is polled
//!    meanwhile.
//! 5. **Sleep** until the source's notify (an item ending included), the next due time
//!    ([`Source::next_due_ms`], read against [`LoopConfig::clock`], at most [`MAX_IDLE`] away) or
//!    cancellation. There is no polling of the database.
//!
//! On cancellation the loop claims nothing more and returns once every running item ended.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Doubling;
use crate::clock::Clock;

/// Longest the loop sleeps without a wake-up: nothing due is known (or it is further away).
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(60);

/// What the loop claims and runs (the store side of it). Shared with the running items.
pub(crate) trait Source: Send + Sync + 'static {
    /// One claimed piece of work.
    type Item: Send + 'static;
    /// Why a claim failed (the store's error).
    type Error: Send;

    /// Notified when new work may be claimable (committed, scheduled); the loop signals it too
    /// when one of its items ends. The loop is its only waiter.
    fn wake(&self) -> &Notify;

    /// Claims up to `n` items that are due now.
    fn claim(&self, n: usize) -> impl Future<Output = Result<Vec<Self::Item>, Self::Error>> + Send;

    /// Runs one claimed item to its recorded end (spawned; holds a place until it ends).
    fn run(&self, item: Self::Item) -> impl Future<Output = ()> + Send + '_;

    /// Earliest wall-clock time (epoch ms) an item not claimable now becomes due, if known.
    fn next_due_ms(&self) -> Option<i64>;

    /// Says that claiming failed (`failures` in a row); the loop backs off after it.
    fn claim_failed(&self, error: &Self::Error, failures: u32);
}

/// How fast the loop may go (the caller side of it): owned by the loop, not shared.
pub(crate) trait Pacer: Send {
    /// `Some`: the loop must wait for this future before it looks again (paused, paced).
    fn hold(&mut self) -> Option<impl Future<Output = ()> + Send + '_>;

    /// Of `free` places, how many to claim now; 0: none until the next wake-up (an item
    /// ending, new work, a due time).
    fn batch(&mut self, free: usize) -> usize {
        free
    }

    /// `n` items were claimed and are starting.
    fn started(&mut self, _n: usize) {}
}

/// The loop's limits and clock.
#[derive(Debug, Clone)]
pub(crate) struct LoopConfig {
    /// Items running (or waiting inside their run) at once.
    pub(crate) max_in_flight: usize,
    /// Wait after a failed claim (per consecutive failure).
    pub(crate) claim_backoff: Doubling,
    /// The wall clock due times are compared with.
    pub(crate) clock: Clock,
}

/// Runs the claim loop until `cancel` fires; running items end before it returns.
pub(crate) async fn run<S: Source, P: Pacer>(
    source: Arc<S>,
    mut pacer: P,
    cfg: LoopConfig,
    cancel: CancellationToken,
) {
    // Places taken by running items.
    let taken = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let mut failures = 0u32;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        if let Some(hold) = pacer.hold() {
            tokio::select! {
                _ = hold => {}
                _ = cancel.cancelled() => break,
            }
            continue;
        }
        let woken = source.wake().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let free = cfg
            .max_in_flight
            .saturating_sub(taken.load(Ordering::SeqCst));
        let want = if free > 0 {
            pacer.batch(free).min(free)
        } else {
            0
        };
        if want > 0 {
            match source.claim(want).await {
                Ok(items) => {
                    failures = 0;
                    let got = items.len();
                    pacer.started(got);
                    for item in items {
                        if taken.fetch_add(1, Ordering::SeqCst) >= cfg.max_in_flight {
                            taken.fetch_sub(1, Ordering::SeqCst);
                            tracing::error!("The store handed out more than was claimed");
                            break;
                        }
                        let (source, taken) = (source.clone(), taken.clone());
                        tracker.spawn(async move {
                            if let Err(panic) = AssertUnwindSafe(source.run(item)).catch_unwind().await
                            {
                                let panic = super::panic_message(&*panic);
                                tracing::error!(%panic, "A claimed item's run panicked; its place is freed");
                            }
                            taken.fetch_sub(1, Ordering::SeqCst);
                            source.wake().notify_one();
                        });
                    }
                    if got == want {
                        continue;
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    source.claim_failed(&error, failures);
                    tokio::select! {
                        _ = tokio::time::sleep(cfg.claim_backoff.after(failures)) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        let wait = match source.next_due_ms() {
            Some(due) => Duration::from_millis(
                (due - cfg.clock.now_ms()).clamp(0, MAX_IDLE.as_millis() as i64) as u64,
            ),
            None => MAX_IDLE,
        };
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
#[path = "claim_loop_tests.rs"]
mod tests;
