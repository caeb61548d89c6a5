//! The dispatcher's gate: pause and resume claiming on this node, and the count of attempts it
//! finished. It lives here, not in [`crate::queue`], because the webhook sender reads the count
//! too (see `webhooks::pace`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// Holds the dispatcher: while paused it claims nothing (running tasks still finish).
/// Operators use it to drain a node; tests use it to look at a queue that does not move.
#[derive(Debug, Default)]
pub struct Gate {
    paused: AtomicBool,
    changed: Notify,
    /// Attempts this node has finished (the webhook sender reads how busy the queue is).
    finished: AtomicU64,
}

impl Gate {
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Attempts this node's dispatcher has finished since it started.
    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// One more attempt finished (its outcome is recorded).
    pub(crate) fn count_finished(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns once the gate changed, at once if it is open. Checked after registering for the
    /// change, so a resume between the check and the wait is not missed.
    pub(crate) async fn changed_if_paused(&self) {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if self.is_paused() {
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resume_wakes_a_paused_waiter_and_an_open_gate_does_not_wait() {
        let gate = std::sync::Arc::new(Gate::default());
        gate.changed_if_paused().await;
        gate.pause();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.changed_if_paused().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.resume();
        waiter.await.expect("the waiter ends");
        gate.count_finished();
        assert_eq!(gate.finished(), 1);
    }
}
