//! The dispatcher: claims tasks from the store and runs them on engines.
//!
//! Protocol, in order:
//! 1. **Claim.** When this node has free worker capacity (`--workers`), the dispatcher asks the
//!    store for up to that many tasks, at most [`CLAIM_BATCH`] per claim, and for none while
//!    [`MAX_UNRECORDED`] finished attempts wait for their outcome to be written. The store
//!    decides which (priority, then FIFO, inside each organization's concurrency limit,
//!    organizations round-robin) and marks them PROCESSING durably before they are handed out
//!    (`attempts` grows by one).
//! 2. **Run.** Each claimed task runs on its own Tokio task under an engine time limit. An
//!    attempt number above the maximum (a task that was running when a process died during its
//!    last attempt) is not run again: it fails with "Maximum retries exceeded".
//! 3. **Finish.** The outcome is written durably: COMPLETED with its result and the credit
//!    charge in one transaction, or back to QUEUED for a retry after an exponential backoff
//!    (`retry_base_ms · 2^(attempt-1)` on average, drawn from half to one and a half times
//!    that so that tasks that failed together are not all due at once; holding no slot), or FAILED once every attempt failed
//!    (`{"error":{"code":"INTERNAL_SERVER_ERROR","message":"Maximum retries exceeded"}}`) or on a
//!    fatal engine error. A finish that cannot be written is retried until it is; the slot
//!    stays taken meanwhile, so a cap is never exceeded and never leaked.
//!
//!    **Panics.** A panic in an engine, or in deciding the outcome, is caught and counts as a
//!    retryable failure of the attempt (retried after the backoff, FAILED "Maximum retries
//!    exceeded" after the last one). A panic while the outcome is being written is caught too;
//!    the outcome written instead is that retryable failure (a result that makes the store
//!    panic would make it panic again), retried like an unwritable finish. Either way the
//!    task leaves PROCESSING and its organization's slot is freed; left uncaught, the panic
//!    would end the task's Tokio task with the row PROCESSING and the slot taken until the
//!    process exits.
//!
//!    **Fencing.** A cluster node that can no longer prove its lease gives its running attempts
//!    up ([`TaskQueue::abandoned`]): the attempt stops and nothing is recorded; the store
//!    returns the task to the queue (another node may already run it).
//! 4. **Wake-ups.** The dispatcher sleeps until new work is committed, a slot frees, the next
//!    retry is due, or shutdown; no polling of the database. Claiming, spawning, backing off
//!    and sleeping are the shared claim loop's ([`crate::worker::claim_loop`]); this module
//!    says what a task is, how it runs and when the next one is due.
//!
//! A purger deletes terminal tasks once their retention (default 24 h) has passed, and starts
//! the billing cycles that are due.
//!
//! Wall-clock times (a retry's due time, the purge cutoff, the cycle renewal) are read from
//! [`QueueConfig::clock`]; durations (the engine's time limit, back-offs, the purge interval)
//! are slept on `tokio::time`, so tests run both on a paused clock.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::engines::{Engine, EngineError, execute_stored};
use crate::metrics::{CallEnd, TaskEnd};
use crate::store::{ClaimedTask, Outcome, Store, TaskQueue, Usage};

pub mod engines;
pub(crate) mod sync;
use crate::worker::backoff::Doubling;
use crate::worker::claim_loop::{self, LoopConfig, Pacer, Source};
use engines::Member;
pub use engines::{EngineRoutes, Health};

pub(crate) use crate::worker::Gate;
pub use crate::worker::backoff::Jitter;

/// `serve --workers` when not given (and the benchmark's default): tasks one node runs at once. A worker is a place, not
/// a thread: a task waiting on its engine costs no CPU, organizations' and engines' limits
/// still apply, claims stay at most [`CLAIM_BATCH`] tasks and memory is bounded by
/// [`MAX_UNRECORDED`]. So the default is the number of slow calls (a 2 s engine) issue 14 asks
/// one node to keep in flight; with 256, a node with a 2 s engine did at most 128 tasks/s, and
/// a 0 ms drain ran half as fast on both stores, its slots held while their outcomes were
/// committed (docs/PERFORMANCE.md, "Many in flight").
pub const DEFAULT_WORKERS: u32 = 20_000;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Tasks this node runs at once, over all organizations.
    pub workers: usize,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    /// How a retry's delay is spread around `retry_base_ms · 2^(attempt-1)` (uniformly, with
    /// that as the mean, unless a test needs the exact schedule): tasks that failed together
    /// are not all due again at once.
    pub retry_jitter: Jitter,
    /// Longest an engine call may take before the attempt counts as failed.
    pub engine_timeout: Duration,
    /// No attempt of a sync call (`POST /v1/monitor/*`) starts after this long (reference
    /// §1.3: 5 minutes; tests shorten it).
    pub sync_budget: Duration,
    /// How long terminal tasks are kept.
    pub retention_ms: i64,
    pub purge_interval: Duration,
    /// The wall clock retry due times, the purge cutoff and billing cycles are read from.
    pub clock: Clock,
    /// The base of the result-page links engines put in results (`serve --public-url`; set by
    /// `app::start`).
    pub public_url: crate::pages::PublicUrl,
    /// Where task outcomes, engine calls and store errors are counted (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: DEFAULT_WORKERS as usize,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_jitter: Jitter::Uniform,
            engine_timeout: Duration::from_secs(300),
            sync_budget: sync::SYNC_BUDGET,
            retention_ms: 24 * 3600 * 1000,
            purge_interval: Duration::from_secs(60),
            clock: Clock::system(),
            public_url: crate::pages::PublicUrl::default(),
            metrics: Default::default(),
        }
    }
}

/// Wait after a failed claim: 100 ms, doubling per consecutive failure up to 3.2 s.
const CLAIM_BACKOFF: Doubling = Doubling {
    first: Duration::from_millis(100),
    max: Duration::from_millis(3_200),
};

/// Wait while an outcome cannot be recorded: 20 ms, doubling up to 5 s.
const FINISH_RETRY: Doubling = Doubling {
    first: Duration::from_millis(20),
    max: Duration::from_secs(5),
};

/// The body of a task that failed every attempt.
pub(crate) fn max_retries_error() -> serde_json::Value {
    json!({"error": {"code": "INTERNAL_SERVER_ERROR", "message": "Maximum retries exceeded"}})
}

/// What the dispatcher's claim loop claims and runs: tasks, on their engines.
struct Dispatcher {
    store: Arc<dyn Store>,
    /// Runs the task types the routes do not list.
    engine: Arc<dyn Engine>,
    routes: Arc<EngineRoutes>,
    cfg: QueueConfig,
    gate: Arc<Gate>,
    /// Attempts whose engine call ended and whose outcome is not recorded yet
    /// ([`MAX_UNRECORDED`]).
    unrecorded: Arc<AtomicUsize>,
}

impl Dispatcher {
    /// A claim within the engines' limits and health (see [`engines`]): rate tokens are taken
    /// from the store first, and the ones the claim did not use are given back.
    async fn claim_within_engines(&self, n: usize) -> crate::store::Result<Vec<ClaimedTask>> {
        let now = self.cfg.clock.now_ms();
        let (mut lanes, owners) = self.routes.lanes(n, now);
        if lanes.lanes.is_empty() {
            return self.store.claim(n).await;
        }
        let members = self.routes.members();
        let cap = u32::try_from(n).unwrap_or(u32::MAX);
        let mut taken = vec![0u32; lanes.lanes.len()];
        let mut failure = None;
        for (l, lane) in lanes.lanes.iter_mut().enumerate() {
            let Some(per_minute) = members[owners[l]].per_minute else {
                continue;
            };
            let want = lane.starts.unwrap_or(cap).min(cap);
            if want == 0 || failure.is_some() {
                lane.starts = Some(0);
                continue;
            }
            match self
                .store
                .take_lane_starts(&lane.name, want, per_minute, now)
                .await
            {
                Ok(got) => {
                    taken[l] = got.granted;
                    lane.starts = Some(got.granted);
                    self.routes.set_tokens_open(
                        owners[l],
                        (got.granted < want).then_some(got.next_ms).flatten(),
                    );
                }
                Err(e) => {
                    lane.starts = Some(0);
                    failure = Some(e);
                }
            }
        }
        let claimed = match failure {
            Some(e) => Err(e),
            None => self.store.claim_in(n, &lanes).await,
        };
        let started = match &claimed {
            Ok(tasks) => self
                .routes
                .count_started(tasks.iter().map(|t| &t.task_type)),
            Err(_) => vec![0; members.len()],
        };
        for (l, lane) in lanes.lanes.iter().enumerate() {
            let unused =
                taken[l].saturating_sub(u32::try_from(started[owners[l]]).unwrap_or(u32::MAX));
            if let (true, Some(per_minute)) = (unused > 0, members[owners[l]].per_minute)
                && let Err(error) = self
                    .store
                    .return_lane_starts(&lane.name, unused, per_minute)
                    .await
            {
                tracing::warn!(engine = %lane.name, %error, "Cannot give back unused rate tokens");
            }
        }
        self.routes.started(&started, now);
        claimed
    }
}

impl Source for Dispatcher {
    type Item = ClaimedTask;
    type Error = crate::store::Error;

    fn wake(&self) -> &tokio::sync::Notify {
        self.store.work_notify()
    }

    async fn claim(&self, n: usize) -> crate::store::Result<Vec<ClaimedTask>> {
        if self.routes.members().is_empty() {
            return self.store.claim(n).await;
        }
        self.claim_within_engines(n).await
    }

    async fn run(&self, mut task: ClaimedTask) {
        tracing::debug!(task_id = %task.id, org = task.org, attempt = task.attempt, "Task PROCESSING");
        let started = std::time::Instant::now();
        let _busy = self.cfg.metrics.activity().busy();
        let task_type = task.task_type.as_str();
        if task.attempt == 1 {
            // A task id's UUIDv7 prefix is its submission time.
            let submitted_ms = task.id.get_timestamp().map_or(0, |t| {
                let (s, n) = t.to_unix();
                (s * 1000 + u64::from(n / 1_000_000)) as i64
            });
            let waited = self.cfg.clock.now_ms().saturating_sub(submitted_ms).max(0);
            self.cfg
                .metrics
                .started(task_type, Duration::from_millis(waited as u64));
            self.cfg.metrics.activity().started(task.org, waited as u64);
        }
        let member = self.routes.member_of(task.task_type);
        let engine = member.map_or(&*self.engine, |m| &*m.engine);
        let run = AssertUnwindSafe(execute_on(engine, member, &task, &self.cfg)).catch_unwind();
        let ran = tokio::select! {
            ran = run => ran,
            () = self.store.abandoned(&task) => {
                // Fencing (a cluster node that lost its lease): another node may run the task.
                tracing::warn!(task_id = %task.id, attempt = task.attempt, "Gave up a running task: this node's lease is no longer current");
                return;
            }
        };
        // From here until the outcome is recorded, the attempt holds its result in memory.
        let _unrecorded = Unrecorded::count(&self.unrecorded);
        let (outcome, usage) = match ran {
            Ok(done) => done,
            Err(panic) => {
                let panic = crate::worker::panic_message(&*panic);
                tracing::error!(task_id = %task.id, %panic, "Deciding a task's outcome panicked");
                (panicked(&task, &self.cfg), None)
            }
        };
        task.usage = usage;
        let (id, org, state) = (task.id, task.org, state_after(&outcome));
        let end = match &outcome {
            Outcome::Completed { .. } => TaskEnd::Completed,
            Outcome::Failed { .. } => TaskEnd::Failed,
            Outcome::Retry { .. } => TaskEnd::Retried,
            Outcome::Requeue => TaskEnd::Requeued,
        };
        // Counted before it is recorded (recording retries until the store takes it): once the
        // store shows the outcome, the metrics do too.
        self.cfg.metrics.finished(task_type, end, started.elapsed());
        let error = match &outcome {
            Outcome::Failed { error } => Some(error),
            _ => None,
        };
        self.cfg
            .metrics
            .activity()
            .finished(org, id, task_type, end, error);
        finish_durably(&*self.store, task, outcome, &self.cfg).await;
        tracing::debug!(task_id = %id, org, "Task {state}");
        // Counted once the outcome is recorded; the worker slot is freed right after, so this
        // node never has more than `workers` tasks PROCESSING.
        self.gate.count_finished();
    }

    fn next_due_ms(&self) -> Option<i64> {
        match (self.store.next_retry_ms(), self.routes.next_open_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn claim_failed(&self, error: &crate::store::Error, _failures: u32) {
        self.cfg.metrics.store_error("claim");
        tracing::warn!(%error, "Claim failed; backing off");
    }
}

/// Most tasks one claim asks for. With many free workers (`--workers 20000`, a slow engine),
/// a claim of every free slot at once would be one write of thousands of rows that every task
/// waits for, and would start them all in lockstep; claims of at most this many follow each
/// other at once instead (the claim loop claims again when a claim came back full), so the
/// first tasks start while the next are claimed. It is also the batch the 0 ms drain works
/// in (docs/PERFORMANCE.md, "Many in flight").
pub(crate) const CLAIM_BATCH: usize = 4096;

/// Most attempts whose engine call has ended but whose outcome is not recorded yet, before
/// the dispatcher stops claiming. When the store records outcomes more slowly than the engines
/// produce them (a slow store, a busy machine, thousands of calls ending together), more
/// claims would only lengthen that queue: each waiting outcome holds its result's JSON text
/// ([`Outcome::Completed`]) and its worker. So the node claims again once the store has caught
/// up (every recorded outcome wakes the claim loop): its memory stays bounded by what the store
/// absorbs, whatever `--workers` is. Four claim batches: a batch that ends together never stops
/// the claims by itself, and with a 2 s engine at 20,000 in flight the node claims on while a
/// wave of outcomes is written (87% of the ideal instead of 85% with two, for 3 MiB more;
/// docs/PERFORMANCE.md, "Many in flight"). The embedded store writes a claim ahead of the
/// outcomes already waiting, so the slots those free are taken again while the rest are written.
pub(crate) const MAX_UNRECORDED: usize = 4 * CLAIM_BATCH;

/// The dispatcher claims nothing while its gate is paused or while [`MAX_UNRECORDED`]
/// outcomes wait to be recorded, and at most [`CLAIM_BATCH`] tasks per claim.
struct GatePacer {
    gate: Arc<Gate>,
    /// Attempts whose engine call ended and whose outcome is not recorded yet.
    unrecorded: Arc<AtomicUsize>,
}

impl Pacer for GatePacer {
    fn hold(&mut self) -> Option<impl Future<Output = ()> + Send + '_> {
        self.gate.is_paused().then(|| self.gate.changed_if_paused())
    }

    fn batch(&mut self, free: usize) -> usize {
        // 0: the claim loop waits for its next wake-up, which every recorded outcome is.
        if self.unrecorded.load(Ordering::SeqCst) >= MAX_UNRECORDED {
            return 0;
        }
        free.min(CLAIM_BATCH)
    }
}

/// Counts an attempt as unrecorded ([`MAX_UNRECORDED`]) until dropped (a panic included).
struct Unrecorded<'a>(&'a AtomicUsize);

impl<'a> Unrecorded<'a> {
    fn count(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Unrecorded(n)
    }
}

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the dispatcher until `cancel` fires; running tasks are finished before it returns.
pub(crate) async fn run_dispatcher(
    store: Arc<dyn Store>,
    engine: Arc<dyn Engine>,
    routes: Arc<EngineRoutes>,
    cfg: QueueConfig,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) {
    let limits = LoopConfig {
        max_in_flight: cfg.workers,
        claim_backoff: CLAIM_BACKOFF,
        clock: cfg.clock.clone(),
    };
    // The engines' health goes to the database from a task of its own (never the claim loop).
    let health = CancellationToken::new();
    let writer = (!routes.members().is_empty()).then(|| {
        tokio::spawn(engines::write_health(
            routes.clone(),
            store.clone(),
            cfg.clock.clone(),
            health.clone(),
        ))
    });
    let unrecorded = Arc::new(AtomicUsize::new(0));
    let dispatcher = Arc::new(Dispatcher {
        store,
        engine,
        routes,
        cfg,
        gate: gate.clone(),
        unrecorded: unrecorded.clone(),
    });
    let pacer = GatePacer { gate, unrecorded };
    claim_loop::run(dispatcher, pacer, limits, cancel).await;
    // The running tasks have finished: write their last health changes, then stop.
    health.cancel();
    if let Some(writer) = writer {
        let _ = writer.await;
    }
}

/// Runs one attempt on an engine no route names and decides its outcome.
#[cfg(test)]
pub(crate) async fn execute(engine: &dyn Engine, task: &ClaimedTask, cfg: &QueueConfig) -> Outcome {
    execute_on(engine, None, task, cfg).await.0
}

/// Runs one attempt and decides its outcome; also returns what the upstream reported it used
/// (an answer's usage, or what a failed run was billed: [`EngineError::Billed`]), which
/// [`Store::finish`] adds to the task's sum whatever the outcome. On a configured engine
/// (`member`), an upstream's 429 or refused key is the engine's trouble, not the task's: the
/// engine pauses (see [`engines`]) and the task goes back to the head of its priority without
/// spending the attempt. Without one (the default engine) they are retried like any transient
/// failure.
pub(crate) async fn execute_on(
    engine: &dyn Engine,
    member: Option<&Member>,
    task: &ClaimedTask,
    cfg: &QueueConfig,
) -> (Outcome, Option<Usage>) {
    if task.attempt > cfg.max_attempts {
        let outcome = Outcome::Failed {
            error: max_retries_error(),
        };
        return (outcome, None);
    }
    // A fresh page token per attempt: only the links of the attempt that completes are stored.
    let pages = crate::pages::PageLinks::new(&cfg.public_url, task.org, task.id);
    let call = execute_stored(
        engine,
        task.id,
        task.task_type,
        &task.payload,
        task.attempt,
        &pages,
    );
    let call = AssertUnwindSafe(call).catch_unwind();
    let in_flight = cfg
        .metrics
        .engine_call(member.map_or("simulated", |m| m.name.as_str()));
    let ended = tokio::time::timeout(cfg.engine_timeout, call).await;
    in_flight.end(match &ended {
        Ok(Err(_)) => CallEnd::Panic,
        Ok(Ok(Ok(_))) => CallEnd::Ok,
        Ok(Ok(Err(e))) => match e.billed_ref() {
            EngineError::RateLimited { .. } => CallEnd::RateLimited,
            EngineError::Unauthorized { .. } => CallEnd::Unauthorized,
            _ => CallEnd::Error,
        },
        Err(_) => CallEnd::Timeout,
    });
    let (result, usage) = match ended {
        Ok(Err(panic)) => {
            let panic = crate::worker::panic_message(&*panic);
            tracing::error!(task_id = %task.id, attempt = task.attempt, %panic, "The engine panicked");
            (
                Err(EngineError::Retryable("the engine panicked".into())),
                None,
            )
        }
        Ok(Ok(Ok(out))) => {
            let usage = out.usage.and_then(Usage::nonempty);
            (Ok(out), usage)
        }
        Ok(Ok(Err(e))) => {
            let (e, usage) = e.billed();
            (Err(e), usage.and_then(Usage::nonempty))
        }
        Err(_) => (
            Err(EngineError::Retryable("engine call timed out".into())),
            None,
        ),
    };
    (decide(member, task, cfg, result), usage)
}

/// The outcome of an attempt that ended with `result`.
fn decide(
    member: Option<&Member>,
    task: &ClaimedTask,
    cfg: &QueueConfig,
    result: Result<crate::engines::EngineOutput, EngineError>,
) -> Outcome {
    if let Some(member) = member {
        // A change wakes the health writer (see `engines::write_health`).
        let message = member.record_attempt(&result, cfg.clock.now_ms());
        if let Err(EngineError::RateLimited { .. } | EngineError::Unauthorized { .. }) = &result {
            tracing::debug!(task_id = %task.id, engine = %member.name, %message,
                            "The engine paused; the task goes back to the head of its priority");
            return Outcome::Requeue;
        }
    }
    match result {
        Ok(out) => Outcome::Completed {
            result: out.result.text().clone(),
            credits: charge(task, out.extra_credits),
        },
        // Taken apart by `execute_on`; a nested one is treated as what it wraps.
        Err(EngineError::Billed { error, .. }) => decide(member, task, cfg, Err(*error)),
        Err(
            EngineError::Retryable(reason)
            | EngineError::RateLimited {
                message: reason, ..
            }
            | EngineError::Unauthorized { message: reason },
        ) if task.attempt < cfg.max_attempts => {
            tracing::debug!(task_id = %task.id, attempt = task.attempt, %reason, "Attempt failed; retrying");
            Outcome::Retry {
                run_after_ms: cfg.clock.now_ms().saturating_add(
                    cfg.retry_jitter
                        .retry_ms(cfg.retry_base_ms, task.attempt)
                        .min(i64::MAX as u64) as i64,
                ),
            }
        }
        Err(
            EngineError::Retryable(reason)
            | EngineError::RateLimited {
                message: reason, ..
            }
            | EngineError::Unauthorized { message: reason },
        ) => {
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

/// What a completed attempt costs: its price plus what the engine added, never more than the
/// pickup reserved for it (an engine reporting more add-ons than its task type allows is
/// charged the most it allows), so the balance cannot go below zero.
pub(crate) fn charge(task: &ClaimedTask, extra_credits: i64) -> i64 {
    let most = (task.reserved - task.credits_to_charge).max(0);
    task.credits_to_charge + extra_credits.clamp(0, most)
}

/// The outcome of an attempt that panicked: a retryable failure (a retry after the backoff, or
/// FAILED "Maximum retries exceeded" after the last attempt).
fn panicked(task: &ClaimedTask, cfg: &QueueConfig) -> Outcome {
    if task.attempt < cfg.max_attempts {
        Outcome::Retry {
            run_after_ms: cfg.clock.now_ms().saturating_add(
                cfg.retry_jitter
                    .retry_ms(cfg.retry_base_ms, task.attempt)
                    .min(i64::MAX as u64) as i64,
            ),
        }
    } else {
        Outcome::Failed {
            error: max_retries_error(),
        }
    }
}

/// The task's state once `outcome` is recorded, for the log.
fn state_after(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed { .. } => "COMPLETED",
        Outcome::Failed { .. } => "FAILED",
        Outcome::Retry { .. } => "QUEUED (retry)",
        Outcome::Requeue => "QUEUED (requeued)",
    }
}

/// Writes an outcome, retrying until the store takes it (its slot stays taken meanwhile). A
/// panic while writing it is caught: the outcome becomes the attempt's retryable failure
/// ([`panicked`]), which is retried the same way, so the slot is still freed.
pub(crate) async fn finish_durably(
    store: &dyn TaskQueue,
    task: ClaimedTask,
    mut outcome: Outcome,
    cfg: &QueueConfig,
) {
    let mut failures = 0;
    loop {
        let one = [(&task, &outcome)];
        let finish = AssertUnwindSafe(store.finish(&one)).catch_unwind().await;
        match finish {
            Ok(Ok(())) => return,
            Err(panic) => {
                let panic = crate::worker::panic_message(&*panic);
                tracing::error!(task_id = %task.id, %panic, "Recording a task outcome panicked; recording a failed attempt instead");
                outcome = panicked(&task, cfg);
                failures += 1;
                tokio::time::sleep(FINISH_RETRY.after(failures)).await;
            }
            Ok(Err(error)) => {
                cfg.metrics.store_error("finish");
                tracing::warn!(task_id = %task.id, %error, "Cannot record a task outcome; retrying");
                failures += 1;
                tokio::time::sleep(FINISH_RETRY.after(failures)).await;
            }
        }
    }
}

/// Every `purge_interval` until `cancel` fires: deletes expired terminal tasks and starts new
/// billing cycles that are due.
pub(crate) async fn run_purger(store: Arc<dyn Store>, cfg: QueueConfig, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.purge_interval) => {}
            _ = cancel.cancelled() => return,
        }
        purge_once(&*store, &cfg).await;
    }
}

/// One round of the purger, at the clock's now.
async fn purge_once(store: &dyn Store, cfg: &QueueConfig) {
    let now = cfg.clock.now_ms();
    match store.purge(now.saturating_sub(cfg.retention_ms)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "Purged expired tasks"),
        Err(error) => tracing::warn!(%error, "Purge failed"),
    }
    match store.renew_cycles(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(organizations = n, "Started new billing cycles"),
        Err(error) => tracing::warn!(%error, "Billing cycle renewal failed"),
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
mod dispatch_tests;
#[cfg(test)]
mod tests;
