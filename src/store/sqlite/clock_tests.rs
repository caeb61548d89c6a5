//! Time-driven behaviour of the embedded store on a manual clock: retries, billing cycles,
//! retention and webhook retries, each moved past its due time instead of waited for.
//!
//! SQLite-only: the cluster store reads the time in SQL, so it cannot take a [`Clock`].

use std::path::Path;

use serde_json::json;

use super::{CYCLE_MS, SqliteStore, admin, result_log, schema};
use crate::clock::Clock;
use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
use crate::store::{
    ClaimedTask, Directory, NewTask, OrgKey, OrgSpec, Outbox, Outcome, TaskQueue, WebhookResult,
};

/// A fixed start, well inside an hour of the result log (so segments are predictable).
const T0: i64 = 1_800_000_000_000 + 60_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// A new database with one `business` organization (100 credits, concurrency 5) created at
/// the clock's time, and a store on that clock.
fn open(dir: &Path, clock: &Clock) -> (SqliteStore, OrgKey) {
    let path = dir.join("cloro.db");
    let conn = schema::open_admin(&path).expect("admin");
    let spec = OrgSpec {
        name: "acme".into(),
        plan: "business".into(),
        concurrency: Some(5),
        credits: Some(100),
        queue_limit: Some(100),
        rate_limit: None,
    };
    let org = admin::create_org(&conn, &spec, clock.now_ms())
        .expect("org")
        .org
        .key;
    drop(conn);
    let store = SqliteStore::open_with_clock(&path, clock.clone()).expect("store");
    (store, org)
}

fn task(webhook_url: Option<&str>) -> NewTask {
    NewTask {
        task_type: TaskType::Chatgpt,
        payload: json!({"prompt": "p", "country": "US"}),
        priority: 1,
        idempotency_key: None,
        webhook_url: webhook_url.map(str::to_owned),
        credits_to_charge: 5,
    }
}

async fn submit(s: &SqliteStore, org: OrgKey, n: usize, url: Option<&str>) -> Vec<uuid::Uuid> {
    let out = s
        .submit(org, (0..n).map(|_| task(url)).collect())
        .await
        .expect("store ok")
        .expect("under the queue limit");
    out.into_iter().map(|r| r.expect("accepted").id).collect()
}

async fn finish(s: &SqliteStore, t: &ClaimedTask, o: Outcome) {
    s.finish(&[(t, &o)]).await.expect("finish");
}

fn completed() -> Outcome {
    Outcome::Completed {
        result: json!({"text": "ok"}).to_string().into(),
        credits: 5,
    }
}

#[tokio::test]
async fn a_retry_two_minutes_out_is_claimable_only_once_the_clock_passes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let (s, org) = open(dir.path(), &clock);
    let ids = submit(&s, org, 1, None).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    let due = clock.now_ms() + 2 * MINUTE;
    finish(&s, &t, Outcome::Retry { run_after_ms: due }).await;
    assert_eq!(s.next_retry_ms(), Some(due));
    assert!(s.claim(1).await.expect("claim").is_empty(), "not due yet");
    clock.advance(2 * MINUTE - 1);
    assert!(s.claim(1).await.expect("claim").is_empty(), "1 ms early");
    clock.advance(1);
    let again = s.claim(1).await.expect("claim");
    assert_eq!(
        again.iter().map(|t| (t.id, t.attempt)).collect::<Vec<_>>(),
        vec![(ids[0], 2)],
        "due: it runs again, as the second attempt"
    );
    let rec = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(rec.started_ms, Some(T0), "started at the first pickup");
}

#[tokio::test]
async fn a_paid_cycle_renews_when_the_clock_passes_its_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let (s, org) = open(dir.path(), &clock);
    submit(&s, org, 1, None).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    finish(&s, &t, completed()).await;
    let before = s.org(org).await.expect("org");
    assert_eq!(before.credits, 95);
    assert_eq!(
        before.cycle_resets_ms,
        Some(T0 + CYCLE_MS),
        "a cycle from creation"
    );
    clock.advance(CYCLE_MS - 1);
    assert_eq!(s.renew_cycles(clock.now_ms()).await.expect("renew"), 0);
    assert_eq!(s.org(org).await.expect("org").credits, 95, "not yet");
    clock.advance(1);
    assert_eq!(s.renew_cycles(clock.now_ms()).await.expect("renew"), 1);
    let after = s.org(org).await.expect("org");
    assert_eq!(after.credits, 2_800_000, "the plan's credits, no rollover");
    assert_eq!(after.cycle_resets_ms, Some(T0 + 2 * CYCLE_MS));
    assert_eq!(
        s.renew_cycles(clock.now_ms()).await.expect("renew"),
        0,
        "once per cycle"
    );
}

#[tokio::test]
async fn purge_with_the_retention_removes_only_tasks_finished_before_the_cutoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let (s, org) = open(dir.path(), &clock);
    let retention = HOUR;
    let ids = submit(&s, org, 3, None).await;
    let claimed = s.claim(2).await.expect("claim");
    finish(&s, &claimed[0], completed()).await;
    clock.advance(2 * HOUR);
    finish(&s, &claimed[1], completed()).await;
    let old = s.get_task(org, ids[0]).await.expect("get").expect("old");
    let new = s.get_task(org, ids[1]).await.expect("get").expect("new");
    assert_eq!(
        (old.finished_ms, new.finished_ms),
        (Some(T0), Some(T0 + 2 * HOUR))
    );

    assert_eq!(s.purge(clock.now_ms() - retention).await.expect("purge"), 1);
    assert!(
        s.get_task(org, ids[0]).await.expect("get").is_none(),
        "purged"
    );
    let kept = s.get_task(org, ids[1]).await.expect("get").expect("kept");
    assert_eq!(
        kept.response,
        Some(json!({"text": "ok"})),
        "its response is kept"
    );
    let queued = s.get_task(org, ids[2]).await.expect("get").expect("queued");
    assert_eq!(
        queued.status,
        TaskStatus::Queued,
        "queued tasks are never purged"
    );
    // The old task's hour of the result log went with it; the new one's stays.
    let segments = std::fs::read_dir(result_log::dir_for(&dir.path().join("cloro.db")))
        .expect("result log")
        .count();
    assert_eq!(segments, 1);
}

#[tokio::test]
async fn a_webhook_retry_is_due_only_once_the_clock_passes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let (s, org) = open(dir.path(), &clock);
    let ids = submit(&s, org, 1, Some("https://example.com/hook")).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    finish(&s, &t, completed()).await;
    assert_eq!(s.next_webhook_ms(), Some(T0), "due at once");
    let job = s.claim_webhooks(10, MINUTE).await.expect("claim").remove(0);
    assert_eq!((job.task_id, job.attempt), (ids[0], 1));
    s.record_webhook(&job, WebhookResult::Retry { delay_ms: MINUTE })
        .await
        .expect("record");
    assert_eq!(s.next_webhook_ms(), Some(T0 + MINUTE));
    clock.advance(MINUTE - 1);
    assert!(
        s.claim_webhooks(10, MINUTE)
            .await
            .expect("claim")
            .is_empty()
    );
    clock.advance(1);
    let job = s.claim_webhooks(10, MINUTE).await.expect("claim").remove(0);
    assert_eq!(job.attempt, 2);
    s.record_webhook(&job, WebhookResult::Delivered)
        .await
        .expect("record");
    let rec = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(rec.webhook_delivered_ms, Some(T0 + MINUTE), "delivered now");
}
