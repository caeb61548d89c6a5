//! The dispatcher's time rules on a manual wall clock and Tokio's paused clock: the retry
//! schedule, the engine's time limit, the purge cutoff and the billing-cycle renewal, none of
//! which waits for real time.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use super::*;
use crate::domain::types::TaskType;
use crate::engines::{EngineOutput, EngineTask};

/// An engine whose every call fails (retryably) and that counts its calls.
#[derive(Default)]
struct Failing {
    calls: AtomicU32,
}

#[async_trait]
impl Engine for Failing {
    async fn execute(&self, _task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(EngineError::Retryable("the engine is down".into()))
    }
}

/// An engine that never answers.
struct Hanging;

#[async_trait]
impl Engine for Hanging {
    async fn execute(&self, _task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        std::future::pending().await
    }
}

fn claimed(attempt: u32) -> ClaimedTask {
    ClaimedTask {
        seq: 1,
        id: uuid::Uuid::new_v4(),
        org: 1,
        task_type: TaskType::Chatgpt,
        payload: r#"{"prompt":"p","country":"US"}"#.into(),
        attempt,
        credits_to_charge: 5,
        reserved: 5,
        usage: None,
        row_at: None,
    }
}

#[test]
fn the_max_retries_body_is_the_reference_envelope() {
    assert_eq!(
        max_retries_error().to_string(),
        r#"{"error":{"code":"INTERNAL_SERVER_ERROR","message":"Maximum retries exceeded"}}"#
    );
}

#[tokio::test]
async fn a_failing_task_is_due_again_base_times_two_to_the_n_minus_one_after_the_clock_s_now() {
    let clock = Clock::manual(1_700_000_000_000);
    let cfg = QueueConfig {
        retry_base_ms: 1_000,
        retry_jitter: Jitter::Off,
        max_attempts: 5,
        clock: clock.clone(),
        ..QueueConfig::default()
    };
    let engine = Failing::default();
    for attempt in 1..=4u32 {
        let now = clock.now_ms();
        let outcome = execute(&engine, &claimed(attempt), &cfg).await;
        let Outcome::Retry { run_after_ms } = outcome else {
            panic!("attempt {attempt}: {outcome:?}");
        };
        assert_eq!(
            run_after_ms - now,
            1_000 << (attempt - 1),
            "attempt {attempt}"
        );
        // The retry runs when it is due; the clock says when that is.
        clock.set(run_after_ms + 3);
    }
    let Outcome::Failed { error } = execute(&engine, &claimed(5), &cfg).await else {
        panic!("the last attempt fails the task");
    };
    assert_eq!(error, max_retries_error());
    assert_eq!(engine.calls.load(Ordering::SeqCst), 5);
    // An attempt above the maximum (its node died during the last one) is not run again.
    let Outcome::Failed { error } = execute(&engine, &claimed(6), &cfg).await else {
        panic!("an extra attempt fails the task");
    };
    assert_eq!(error, max_retries_error());
    assert_eq!(engine.calls.load(Ordering::SeqCst), 5);
}

/// Issue 12, item 11: tasks that fail at the same instant (an engine outage) must not all be
/// due again at the same instant. Each delay is drawn from [0.5, 1.5) × the schedule's value,
/// whose mean the schedule stays (the mean itself is checked on a seeded generator in
/// `worker::backoff`).
#[tokio::test]
async fn retries_that_fail_together_are_spread_around_the_schedule() {
    let clock = Clock::manual(1_700_000_000_000);
    let cfg = QueueConfig {
        retry_base_ms: 1_000,
        clock: clock.clone(),
        ..QueueConfig::default()
    };
    let now = clock.now_ms();
    let mut delays = Vec::new();
    for _ in 0..200 {
        let Outcome::Retry { run_after_ms } = execute(&Failing::default(), &claimed(2), &cfg).await
        else {
            panic!("a retry");
        };
        delays.push(run_after_ms - now);
    }
    // Attempt 2 failed: the schedule says 2 s. Rounded to the millisecond, a draw just under
    // 1.5 × 2 s is 3,000 ms (`worker::backoff::spread`): about one run in twenty drew one.
    assert!(
        delays.iter().all(|d| (1_000..=3_000).contains(d)),
        "{delays:?}"
    );
    delays.sort_unstable();
    delays.dedup();
    assert!(
        delays.len() > 100,
        "only {} distinct due times",
        delays.len()
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_past_its_time_limit_is_a_retryable_failure_without_waiting() {
    let clock = Clock::manual(5_000);
    let cfg = QueueConfig {
        retry_base_ms: 250,
        retry_jitter: Jitter::Off,
        engine_timeout: Duration::from_secs(300),
        clock,
        ..QueueConfig::default()
    };
    let started = tokio::time::Instant::now();
    let outcome = execute(&Hanging, &claimed(2), &cfg).await;
    assert_eq!(started.elapsed(), Duration::from_secs(300));
    let Outcome::Retry { run_after_ms } = outcome else {
        panic!("{outcome:?}");
    };
    // Attempt 2 failed: due 2·base after the wall clock's now (which did not move).
    assert_eq!(run_after_ms, 5_000 + 500);
}

/// A SQLite store with one `business` organization and one COMPLETED task.
async fn store_with_a_finished_task() -> (
    Arc<dyn Store>,
    crate::store::OrgKey,
    uuid::Uuid,
    crate::testing::TestDb,
) {
    use crate::store::admin;
    use crate::store::{NewTask, OrgSpec};
    let db = crate::testing::TestDb::sqlite().expect("test database");
    let admin = admin::open(&db.database).await.expect("admin");
    let spec = OrgSpec {
        name: "org".into(),
        plan: "business".into(),
        concurrency: Some(5),
        credits: Some(1_000),
        queue_limit: Some(100),
        rate_limit: None,
    };
    let org = admin.create_org(&spec).await.expect("org").org.key;
    drop(admin);
    let crate::store::Database::Sqlite(path) = &db.database else {
        unreachable!("a SQLite test database")
    };
    let store: Arc<dyn Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(path).expect("store"));
    let task = NewTask {
        task_type: TaskType::Chatgpt,
        payload: json!({"prompt": "p", "country": "US"}),
        priority: 1,
        idempotency_key: None,
        webhook_url: None,
        credits_to_charge: 5,
    };
    let id = store
        .submit(org, vec![task])
        .await
        .expect("store ok")
        .expect("under the limit")
        .remove(0)
        .expect("accepted")
        .id;
    let t = store.claim(1).await.expect("claim").remove(0);
    let done = Outcome::Completed {
        result: json!({"text": "ok"}).to_string().into(),
        credits: 5,
    };
    store.finish(&[(&t, &done)]).await.expect("finish");
    (store, org, id, db)
}

#[tokio::test]
async fn the_purger_cuts_off_at_the_clock_s_now_minus_the_retention() {
    let (store, org, id, _db) = store_with_a_finished_task().await;
    let finished = store
        .get_task(org, id)
        .await
        .expect("get")
        .and_then(|t| t.finished_ms)
        .expect("finished");
    let clock = Clock::manual(0);
    let cfg = QueueConfig {
        retention_ms: 24 * 3600 * 1000,
        clock: clock.clone(),
        ..QueueConfig::default()
    };
    // A day later, less a minute: kept.
    clock.set(finished + cfg.retention_ms - 60_000);
    purge_once(&*store, &cfg).await;
    assert!(store.get_task(org, id).await.expect("get").is_some());
    // A day and a minute later: gone.
    clock.set(finished + cfg.retention_ms + 60_000);
    purge_once(&*store, &cfg).await;
    assert!(store.get_task(org, id).await.expect("get").is_none());
    store.close();
}

#[tokio::test]
async fn the_purger_starts_a_billing_cycle_once_the_clock_reaches_its_end() {
    let (store, org, _id, _db) = store_with_a_finished_task().await;
    let before = store.org(org).await.expect("org");
    let resets = before.cycle_resets_ms.expect("a paid plan has a cycle");
    let clock = Clock::manual(resets - 1);
    let cfg = QueueConfig {
        clock: clock.clone(),
        ..QueueConfig::default()
    };
    purge_once(&*store, &cfg).await;
    assert_eq!(store.org(org).await.expect("org"), before, "not due yet");
    clock.set(resets + 1);
    purge_once(&*store, &cfg).await;
    let after = store.org(org).await.expect("org");
    assert_eq!(after.cycle_resets_ms, Some(resets + crate::store::CYCLE_MS));
    assert_eq!(after.credits, after.per_cycle.expect("a paid plan"));
    store.close();
}

/// An engine whose every call fails as `error` says, billed `usage`.
struct BilledFailure {
    fatal: bool,
}

#[async_trait]
impl Engine for BilledFailure {
    async fn execute(&self, _task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let error = if self.fatal {
            EngineError::Fatal {
                code: "BAD_REQUEST".into(),
                message: "refused".into(),
            }
        } else {
            EngineError::Retryable("the run failed".into())
        };
        Err(EngineError::with_usage(
            error,
            Some(crate::store::Usage {
                input_tokens: Some(30),
                ..crate::store::Usage::default()
            }),
        ))
    }
}

#[tokio::test]
async fn a_billed_failure_is_decided_by_its_error_and_keeps_its_usage() {
    let cfg = QueueConfig {
        clock: Clock::manual(1_000),
        ..QueueConfig::default()
    };
    let billed = Some(crate::store::Usage {
        input_tokens: Some(30),
        ..crate::store::Usage::default()
    });
    let (outcome, usage) =
        execute_on(&BilledFailure { fatal: false }, None, &claimed(1), &cfg).await;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert_eq!(usage, billed);
    let (outcome, usage) =
        execute_on(&BilledFailure { fatal: true }, None, &claimed(1), &cfg).await;
    let Outcome::Failed { error } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        error,
        json!({"error": {"code": "BAD_REQUEST", "message": "refused"}})
    );
    assert_eq!(usage, billed);
    // The last attempt: failed, usage kept.
    let (outcome, usage) =
        execute_on(&BilledFailure { fatal: false }, None, &claimed(5), &cfg).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(usage, billed);
    // Nothing reported (a plain failure, a timeout): no usage.
    let (_, usage) = execute_on(&Failing::default(), None, &claimed(1), &cfg).await;
    assert_eq!(usage, None);
}

/// A task queue whose first `panics` finishes panic (then it is `inner`).
struct PanicsOnFinish {
    inner: Arc<dyn Store>,
    panics: AtomicU32,
}

#[async_trait]
impl TaskQueue for PanicsOnFinish {
    async fn submit(
        &self,
        org: crate::store::OrgKey,
        tasks: Vec<crate::store::NewTask>,
    ) -> crate::store::Result<
        Result<
            Vec<Result<crate::store::TaskRecord, crate::store::ItemError>>,
            crate::store::SubmitError,
        >,
    > {
        self.inner.submit(org, tasks).await
    }
    async fn get_task(
        &self,
        org: crate::store::OrgKey,
        id: uuid::Uuid,
    ) -> crate::store::Result<Option<crate::store::TaskRecord>> {
        self.inner.get_task(org, id).await
    }
    async fn status(
        &self,
        org: crate::store::OrgKey,
    ) -> crate::store::Result<crate::store::QueueStatus> {
        self.inner.status(org).await
    }
    async fn clear_queue(&self, org: crate::store::OrgKey) -> crate::store::Result<u64> {
        self.inner.clear_queue(org).await
    }
    async fn claim_in(
        &self,
        max: usize,
        lanes: &crate::store::Lanes,
    ) -> crate::store::Result<Vec<ClaimedTask>> {
        self.inner.claim_in(max, lanes).await
    }
    async fn take_lane_starts(
        &self,
        lane: &str,
        want: u32,
        per_minute: u32,
        now_ms: i64,
    ) -> crate::store::Result<crate::store::LaneStarts> {
        self.inner
            .take_lane_starts(lane, want, per_minute, now_ms)
            .await
    }
    async fn return_lane_starts(
        &self,
        lane: &str,
        n: u32,
        per_minute: u32,
    ) -> crate::store::Result<()> {
        self.inner.return_lane_starts(lane, n, per_minute).await
    }
    async fn sync_enter(
        &self,
        org: crate::store::OrgKey,
        task_type: TaskType,
        cost: i64,
    ) -> crate::store::Result<crate::store::SyncAdmission> {
        self.inner.sync_enter(org, task_type, cost).await
    }
    async fn sync_lane_enter(
        &self,
        lanes: &crate::store::Lanes,
        task_type: TaskType,
    ) -> crate::store::Result<bool> {
        self.inner.sync_lane_enter(lanes, task_type).await
    }
    async fn sync_lane_leave(&self, task_type: TaskType) -> crate::store::Result<()> {
        self.inner.sync_lane_leave(task_type).await
    }
    async fn sync_leave(
        &self,
        slot: &crate::store::SyncSlot,
        done: Option<&crate::store::SyncDone>,
    ) -> crate::store::Result<()> {
        self.inner.sync_leave(slot, done).await
    }
    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> crate::store::Result<()> {
        if self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1))
            .is_ok()
        {
            panic!("the finish panics (test)");
        }
        self.inner.finish(outcomes).await
    }
    async fn purge(&self, cutoff_ms: i64) -> crate::store::Result<u64> {
        self.inner.purge(cutoff_ms).await
    }
    async fn renew_cycles(&self, now_ms: i64) -> crate::store::Result<u64> {
        self.inner.renew_cycles(now_ms).await
    }
    fn next_retry_ms(&self) -> Option<i64> {
        self.inner.next_retry_ms()
    }
    fn work_notify(&self) -> &tokio::sync::Notify {
        self.inner.work_notify()
    }
    async fn totals(&self) -> crate::store::Result<(u64, u64)> {
        self.inner.totals().await
    }

    async fn overview(&self) -> crate::store::Result<crate::store::Overview> {
        self.inner.overview().await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
}

#[tokio::test]
async fn a_finish_that_panics_records_a_failed_attempt_instead_and_frees_the_slot() {
    use crate::domain::task::TaskStatus;
    let (store, org, _, _db) = store_with_a_finished_task().await;
    let task = crate::store::NewTask {
        task_type: TaskType::Chatgpt,
        payload: json!({"prompt": "p", "country": "US"}),
        priority: 1,
        idempotency_key: None,
        webhook_url: None,
        credits_to_charge: 5,
    };
    let id = store
        .submit(org, vec![task])
        .await
        .expect("store ok")
        .expect("under the limit")
        .remove(0)
        .expect("accepted")
        .id;
    let claimed = store.claim(1).await.expect("claim").remove(0);
    assert_eq!(store.status(org).await.expect("status").concurrency_used, 1);
    let queue = PanicsOnFinish {
        inner: store.clone(),
        panics: AtomicU32::new(1),
    };
    let done = Outcome::Completed {
        result: json!({"text": "makes the store panic"}).to_string().into(),
        credits: 5,
    };
    let cfg = QueueConfig::default();
    tokio::time::timeout(
        Duration::from_secs(60),
        finish_durably(&queue, claimed, done, &cfg),
    )
    .await
    .expect("the finish ends");
    let st = store.status(org).await.expect("status");
    assert_eq!((st.processing, st.concurrency_used), (0, 0));
    let record = store.get_task(org, id).await.expect("get").expect("exists");
    assert_eq!(record.status, TaskStatus::Queued, "retried, not completed");
    assert_eq!(record.attempts, 1);
}
