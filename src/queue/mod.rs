//! The dispatcher: claims tasks from the store and runs them on engines.
//!
//! Protocol, in order:
//! 1. **Claim.** When this node has free worker capacity (`--workers`), the dispatcher asks the
//!    store for up to that many tasks. The store decides which (priority, then FIFO, inside
//!    each organization's concurrency limit, organizations round-robin) and marks them
//!    PROCESSING durably before they are handed out (`attempts` grows by one).
//! 2. **Run.** Each claimed task runs on its own Tokio task under an engine time limit. An
//!    attempt number above the maximum (a task that was running when a process died during its
//!    last attempt) is not run again: it fails with "Maximum retries exceeded".
//! 3. **Finish.** The outcome is written durably: COMPLETED with its result and the credit
//!    charge in one transaction, or back to QUEUED for a retry after an exponential backoff
//!    (`retry_base_ms · 2^(attempt-1)`, holding no slot), or FAILED once every attempt failed
//!    (`{"error":{"code":"INTERNAL_SERVER_ERROR","message":"Maximum retries exceeded"}}`) or on a
//!    fatal engine error. A finish that cannot be written is retried until it is; the slot
//!    stays taken meanwhile, so a cap is never exceeded and never leaked.
//! 4. **Wake-ups.** The dispatcher sleeps until new work is committed, a slot frees, the next
//!    retry is due, or shutdown; no polling of the database.
//!
//! A purger deletes terminal tasks once their retention (default 24 h) has passed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engines::{Engine, EngineError, execute_stored};
use crate::store::{ClaimedTask, Outcome, Store};
use crate::time_fmt::now_ms;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Tasks this node runs at once, over all organizations.
    pub workers: usize,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    /// Longest an engine call may take before the attempt counts as failed.
    pub engine_timeout: Duration,
    /// How long terminal tasks are kept.
    pub retention_ms: i64,
    pub purge_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 256,
            max_attempts: 5,
            retry_base_ms: 1_000,
            engine_timeout: Duration::from_secs(300),
            retention_ms: 24 * 3600 * 1000,
            purge_interval: Duration::from_secs(60),
        }
    }
}

/// Backoff before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
pub fn backoff_ms(base: u64, attempt: u32) -> u64 {
    base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
}

/// The body of a task that failed every attempt.
pub fn max_retries_error() -> serde_json::Value {
    json!({"error": {"code": "INTERNAL_SERVER_ERROR", "message": "Maximum retries exceeded"}})
}

/// Holds the dispatcher: while paused it claims nothing (running tasks still finish).
/// Operators use it to drain a node; tests use it to look at a queue that does not move.
#[derive(Debug, Default)]
pub struct Gate {
    paused: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
    /// Attempts this node has finished (the webhook sender reads how busy the queue is).
    finished: std::sync::atomic::AtomicU64,
}

impl Gate {
    pub fn pause(&self) {
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }
    pub fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Attempts this node's dispatcher has finished since it started.
    pub fn finished(&self) -> u64 {
        self.finished.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs the dispatcher until `cancel` fires; running tasks are finished before it returns.
pub async fn run_dispatcher(
    store: Arc<dyn Store>,
    engine: Arc<dyn Engine>,
    cfg: QueueConfig,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(cfg.workers));
    let tracker = TaskTracker::new();
    let mut failures = 0u32;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        if gate.is_paused() {
            let changed = gate.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if gate.is_paused() {
                tokio::select! {
                    _ = &mut changed => {}
                    _ = cancel.cancelled() => break,
                }
            }
            continue;
        }
        let notified = store.work_notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let free = slots.available_permits();
        if free > 0 {
            match store.claim(free).await {
                Ok(tasks) => {
                    failures = 0;
                    let n = tasks.len();
                    for task in tasks {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::error!("Worker slot accounting is inconsistent");
                            break;
                        };
                        let (store, engine, cfg) = (store.clone(), engine.clone(), cfg.clone());
                        let gate = gate.clone();
                        tracker.spawn(async move {
                            let outcome = execute(&*engine, &task, &cfg).await;
                            finish_durably(&*store, task, outcome).await;
                            gate.finished
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            // The worker slot is free only once the outcome is recorded, so
                            // this node never has more than `workers` tasks PROCESSING.
                            drop(permit);
                            store.work_notify().notify_one();
                        });
                    }
                    if n == free {
                        continue;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "Claim failed; backing off");
                    let wait = Duration::from_millis(50u64 << failures.min(6));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        let wait = match store.next_retry_ms() {
            Some(due) => Duration::from_millis((due - now_ms()).clamp(0, 60_000) as u64),
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Runs one attempt and decides its outcome.
pub async fn execute(engine: &dyn Engine, task: &ClaimedTask, cfg: &QueueConfig) -> Outcome {
    if task.attempt > cfg.max_attempts {
        return Outcome::Failed {
            error: max_retries_error(),
        };
    }
    let call = execute_stored(engine, task.id, task.task_type, &task.payload, task.attempt);
    let result = match tokio::time::timeout(cfg.engine_timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(EngineError::Retryable("engine call timed out".into())),
    };
    match result {
        Ok(out) => Outcome::Completed {
            result: out.result,
            credits: task.credits_to_charge + out.extra_credits,
        },
        Err(EngineError::Retryable(reason)) if task.attempt < cfg.max_attempts => {
            tracing::debug!(task_id = %task.id, attempt = task.attempt, %reason, "Attempt failed; retrying");
            Outcome::Retry {
                run_after_ms: now_ms() + backoff_ms(cfg.retry_base_ms, task.attempt) as i64,
            }
        }
        Err(EngineError::Retryable(reason)) => {
            tracing::info!(task_id = %task.id, attempt = task.attempt, %reason, "Task failed after the last attempt");
            Outcome::Failed {
                error: max_retries_error(),
            }
        }
        Err(EngineError::Fatal { code, message }) => Outcome::Failed {
            error: json!({"error": {"code": code, "message": message}}),
        },
    }
}

/// Writes an outcome, retrying until the store takes it (its slot stays taken meanwhile).
async fn finish_durably(store: &dyn Store, task: ClaimedTask, outcome: Outcome) {
    let mut wait = Duration::from_millis(20);
    loop {
        match store.finish(&[(&task, &outcome)]).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(task_id = %task.id, %error, "Cannot record a task outcome; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Every `purge_interval` until `cancel` fires: deletes expired terminal tasks and starts new
/// billing cycles that are due.
pub async fn run_purger(store: Arc<dyn Store>, cfg: QueueConfig, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.purge_interval) => {}
            _ = cancel.cancelled() => return,
        }
        match store.purge(now_ms() - cfg.retention_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "Purged expired tasks"),
            Err(error) => tracing::warn!(%error, "Purge failed"),
        }
        match store.renew_cycles(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(organizations = n, "Started new billing cycles"),
            Err(error) => tracing::warn!(%error, "Billing cycle renewal failed"),
        }
    }
}

/// Waits until no task is queued or running (tests and `bench` use it to drain). Wakes on this
/// node's commits, and every 50 ms for work other nodes of a cluster finish.
pub async fn wait_idle(store: &dyn Store) {
    let mut changes = store.changes();
    loop {
        if matches!(store.totals().await, Ok((0, 0))) {
            return;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
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
}
