//! The webhook outbox, on both stores: a delivery commits with its task's terminal status, is
//! claimed by one sender at a time, is retried, deferred or given up as recorded, survives a
//! crash, shows as delivered on the task, and goes when its task is purged.

use super::*;
use cloro::store::{WebhookJob, WebhookResult};

store_tests!(
    a_finished_webhook_task_has_one_delivery_claimed_once,
    failed_attempts_come_back_when_due_and_count,
    pending_deliveries_survive_a_crash,
    concurrent_claimers_never_get_the_same_delivery,
    purge_removes_deliveries_with_their_tasks,
    a_record_from_an_attempt_that_lost_the_delivery_changes_nothing,
    a_task_failed_at_pickup_for_credits_notifies_too,
    an_attempt_in_flight_when_the_process_dies_counts,
);

const URL: &str = "https://example.com/hook";
const LEASE: i64 = 60_000;

fn hooked(priority: u8) -> NewTask {
    NewTask {
        webhook_url: Some(URL.into()),
        ..task(priority, None)
    }
}

/// Runs every queued task to the outcome `o`.
async fn run_all(s: &dyn Store, o: impl Fn() -> Outcome) {
    loop {
        let claimed = s.claim(100).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        for t in &claimed {
            finish(s, t, o()).await;
        }
    }
}

async fn claim(s: &dyn Store) -> Vec<WebhookJob> {
    s.claim_webhooks(100, LEASE).await.expect("claim webhooks")
}

async fn a_finished_webhook_task_has_one_delivery_claimed_once(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![hooked(1), task(1, None)]).await;
    assert!(claim(s).await.is_empty(), "nothing before the task ends");
    run_all(s, completed).await;
    let jobs = claim(s).await;
    assert_eq!(jobs.len(), 1, "only the task with a webhook: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(
        (job.org, job.task_id, job.url.as_str(), job.attempt),
        (org, ids[0], URL, 1)
    );
    assert!(
        claim(s).await.is_empty(),
        "a claimed delivery is not handed out again"
    );
    let before = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(before.webhook_delivered_ms, None);
    s.record_webhook(job, WebhookResult::Delivered)
        .await
        .expect("record");
    let after = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert!(
        after
            .webhook_delivered_ms
            .is_some_and(|t| t >= after.finished_ms.unwrap_or(0))
    );
    assert!(claim(s).await.is_empty(), "delivered is final");
    // A FAILED task notifies too.
    let ids = submit(s, org, vec![hooked(1)]).await;
    run_all(s, || Outcome::Failed {
        error: json!({"error": {"code": "X", "message": "x"}}),
    })
    .await;
    let jobs = claim(s).await;
    assert_eq!(jobs.iter().map(|j| j.task_id).collect::<Vec<_>>(), ids);
}

async fn failed_attempts_come_back_when_due_and_count(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![hooked(1)]).await;
    run_all(s, completed).await;
    let job = claim(s).await.remove(0);
    assert_eq!(job.attempt, 1);
    s.record_webhook(&job, WebhookResult::Retry { delay_ms: 0 })
        .await
        .expect("record");
    let job = claim(s).await.remove(0);
    assert_eq!(job.attempt, 2, "a failed attempt counts");
    s.record_webhook(
        &job,
        WebhookResult::Retry {
            delay_ms: 3_600_000,
        },
    )
    .await
    .expect("record");
    assert!(claim(s).await.is_empty(), "not due for an hour");
    // Bring it back: a second delivery makes the point on the due order too.
    let later = submit(s, org, vec![hooked(1)]).await;
    run_all(s, completed).await;
    let job = claim(s).await.remove(0);
    assert_eq!(job.task_id, later[0]);
    s.record_webhook(&job, WebhookResult::Deferred { delay_ms: 0 })
        .await
        .expect("record");
    let job = claim(s).await.remove(0);
    assert_eq!(
        (job.task_id, job.attempt),
        (later[0], 1),
        "a deferred attempt does not count"
    );
    s.record_webhook(&job, WebhookResult::GaveUp)
        .await
        .expect("record");
    assert!(claim(s).await.is_empty(), "given up is final");
    let t = s.get_task(org, later[0]).await.expect("get").expect("task");
    assert_eq!(t.webhook_delivered_ms, None);
    let t = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(t.webhook_delivered_ms, None);
}

async fn pending_deliveries_survive_a_crash(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let org = f.orgs[0];
    let ids = submit(&*f.store, org, vec![hooked(1), hooked(1)]).await;
    run_all(&*f.store, completed).await;
    // One delivery is in flight when the process dies (its lease ends at once), one waits.
    let jobs = f.store.claim_webhooks(1, 0).await.expect("claim");
    assert_eq!(jobs.len(), 1);
    let f = f.crash_and_restart().await;
    let s = &*f.store;
    let mut jobs = claim(s).await;
    jobs.sort_by_key(|j| j.task_id);
    let mut want = ids.clone();
    want.sort();
    assert_eq!(jobs.iter().map(|j| j.task_id).collect::<Vec<_>>(), want);
    for j in &jobs {
        s.record_webhook(j, WebhookResult::Delivered)
            .await
            .expect("record");
        let t = s
            .get_task(org, j.task_id)
            .await
            .expect("get")
            .expect("task");
        assert!(t.webhook_delivered_ms.is_some());
    }
}

async fn concurrent_claimers_never_get_the_same_delivery(b: Backend) {
    let f = Fixture::new(&b, &[(100, 1_000_000, 10_000)]).await;
    let org = f.orgs[0];
    submit(&*f.store, org, (0..60).map(|_| hooked(1)).collect()).await;
    run_all(&*f.store, completed).await;
    // Two claimers: on PostgreSQL two nodes of the cluster, on SQLite two senders of a process.
    let other: Arc<dyn Store> = match &f.db.database {
        Database::Postgres(url) => {
            Arc::new(PgStore::open(url, test_cluster()).await.expect("node"))
        }
        Database::Sqlite(_) => f.store.clone(),
    };
    let mut handles = Vec::new();
    for s in [f.store.clone(), other.clone(), f.store.clone(), other] {
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = s.claim_webhooks(3, LEASE).await.expect("claim");
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.task_id));
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("claimer"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (60, 60));
}

async fn purge_removes_deliveries_with_their_tasks(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![hooked(1), hooked(1)]).await;
    run_all(s, completed).await;
    let job = s.claim_webhooks(1, LEASE).await.expect("claim").remove(0);
    s.record_webhook(&job, WebhookResult::Delivered)
        .await
        .expect("record");
    assert_eq!(s.purge(now_ms() + 1).await.expect("purge"), 2);
    for id in ids {
        assert!(s.get_task(org, id).await.expect("get").is_none());
    }
    assert!(
        claim(s).await.is_empty(),
        "the pending delivery went with its task"
    );
}

async fn a_record_from_an_attempt_that_lost_the_delivery_changes_nothing(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![hooked(1)]).await;
    run_all(s, completed).await;
    let first = claim(s).await.remove(0);
    s.record_webhook(&first, WebhookResult::Retry { delay_ms: 0 })
        .await
        .expect("record");
    // The same attempt recorded again (a late or repeated record): no effect.
    s.record_webhook(&first, WebhookResult::Delivered)
        .await
        .expect("record");
    let t = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(t.webhook_delivered_ms, None);
    let second = claim(s).await.remove(0);
    assert_eq!(second.attempt, 2);
    s.record_webhook(&first, WebhookResult::GaveUp)
        .await
        .expect("record");
    s.record_webhook(&second, WebhookResult::Delivered)
        .await
        .expect("record");
    let t = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert!(
        t.webhook_delivered_ms.is_some(),
        "the holder's record applies"
    );
}

async fn a_task_failed_at_pickup_for_credits_notifies_too(b: Backend) {
    let f = Fixture::new(&b, &[(5, 8, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    // Two submissions each fit the balance; at pickup only the first still does.
    let mut ids = submit(s, org, vec![hooked(1)]).await;
    ids.extend(submit(s, org, vec![hooked(1)]).await);
    let claimed = s.claim(5).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let jobs = claim(s).await;
    assert_eq!(
        jobs.iter().map(|j| j.task_id).collect::<Vec<_>>(),
        vec![ids[1]],
        "the task FAILED at pickup has its delivery"
    );
}

/// Issue 12 item 8: an attempt is counted before it is sent, so a process that dies during
/// every attempt (a receiver whose answer crashes it, say) still ends the delivery: after the
/// fifth, the sixth claim is handed out only to be recorded as given up.
async fn an_attempt_in_flight_when_the_process_dies_counts(b: Backend) {
    let mut f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let org = f.orgs[0];
    let ids = submit(&*f.store, org, vec![hooked(1)]).await;
    run_all(&*f.store, completed).await;
    for attempt in 1..=6 {
        // Lease 0: on PostgreSQL the delivery is due again as soon as its node is reaped.
        let jobs = f.store.claim_webhooks(10, 0).await.expect("claim");
        assert_eq!(
            jobs.iter()
                .map(|j| (j.task_id, j.attempt))
                .collect::<Vec<_>>(),
            vec![(ids[0], attempt)],
            "the attempt in flight when the process died counted"
        );
        if attempt == 6 {
            f.store
                .record_webhook(&jobs[0], WebhookResult::GaveUp)
                .await
                .expect("record");
            break;
        }
        f = f.crash_and_restart().await;
    }
    assert!(claim(&*f.store).await.is_empty(), "given up is final");
    let t = f
        .store
        .get_task(org, ids[0])
        .await
        .expect("get")
        .expect("task");
    assert_eq!(t.webhook_delivered_ms, None);
}

/// SQLite only: a database written before the delivery state moved into the task rows (schema
/// version 3, with its `webhook_deliveries` table) keeps every delivery through the migration:
/// a pending one is due again with its attempt count, a delivered one keeps `deliveredAt`, and
/// a task without a webhook gets no delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deliveries_written_by_schema_3_survive_the_migration() {
    let f = Fixture::new(&Backend::Sqlite, &[(10, 1_000_000, 1000)]).await;
    let org = f.orgs[0];
    let ids = submit(
        &*f.store,
        org,
        vec![hooked(1), hooked(1), hooked(1), task(1, None)],
    )
    .await;
    run_all(&*f.store, completed).await;
    let mut jobs = claim(&*f.store).await;
    assert_eq!(jobs.len(), 3);
    jobs.sort_by_key(|j| ids.iter().position(|id| *id == j.task_id));
    let s = &*f.store;
    s.record_webhook(&jobs[0], WebhookResult::Delivered)
        .await
        .expect("record");
    s.record_webhook(&jobs[1], WebhookResult::Retry { delay_ms: 0 })
        .await
        .expect("record");
    // jobs[2] is never recorded: in flight when the process stops.
    let delivered_ms = s
        .get_task(org, ids[0])
        .await
        .expect("get")
        .expect("task")
        .webhook_delivered_ms
        .expect("delivered");
    f.store.close();
    let Fixture { store, db, .. } = f;
    drop(store);
    let Database::Sqlite(path) = &db.database else {
        unreachable!("a SQLite fixture")
    };

    // Rewrite the file as schema 3 had it: the outbox table, no delivery columns on tasks, every
    // URL in its task's row, no usage column. Schema 3 counted an attempt only once recorded
    // and had no claimed state (3): the claimed delivery is pending with no attempt counted.
    {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.execute_batch(
            "UPDATE tasks SET webhook_url = (SELECT url FROM webhook_urls u WHERE u.id = tasks.webhook_id)
                 WHERE webhook_id IS NOT NULL;
             ALTER TABLE tasks DROP COLUMN webhook_id;
             DROP TABLE webhook_urls;
             CREATE TABLE webhook_deliveries (
                 seq INTEGER PRIMARY KEY, org INTEGER NOT NULL, url TEXT NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
                 delivered_ms INTEGER, state INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);
             CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_ms);
             INSERT INTO webhook_deliveries(seq, org, url, attempts, next_at, delivered_ms, state, created_ms)
                 SELECT seq, org, webhook_url, COALESCE(wh_attempts, 0) - (wh_state = 3),
                        COALESCE(wh_next_at, finished_ms), wh_delivered_ms,
                        CASE wh_state WHEN 3 THEN 0 ELSE wh_state END, finished_ms
                 FROM tasks WHERE wh_state IS NOT NULL;
             ALTER TABLE tasks DROP COLUMN wh_state;
             ALTER TABLE tasks DROP COLUMN wh_attempts;
             ALTER TABLE tasks DROP COLUMN wh_next_at;
             ALTER TABLE tasks DROP COLUMN wh_delivered_ms;
             ALTER TABLE tasks DROP COLUMN usage;
             PRAGMA user_version = 3;",
        )
        .expect("rewrite as schema 3");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM webhook_deliveries", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 3, "the old file has the three deliveries");
    }

    let (s, _) = open_store(&db.database).await;
    let mut jobs = claim(&*s).await;
    jobs.sort_by_key(|j| ids.iter().position(|id| *id == j.task_id));
    assert_eq!(
        jobs.iter()
            .map(|j| (j.task_id, j.attempt))
            .collect::<Vec<_>>(),
        vec![(ids[1], 2), (ids[2], 1)],
        "pending deliveries are due again, with their attempts"
    );
    let t = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(t.webhook_delivered_ms, Some(delivered_ms));
    s.record_webhook(&jobs[0], WebhookResult::Delivered)
        .await
        .expect("record");
    let t = s.get_task(org, ids[1]).await.expect("get").expect("task");
    assert!(t.webhook_delivered_ms.is_some());
    s.close();
}

/// SQLite only: a URL that recurs is stored once and referenced by its tasks (migration 0005);
/// every delivery still gets its own task's URL, before and after a purge deletes the URLs no
/// task uses any more (the writer must then forget their ids, or new tasks would point at a
/// deleted URL and their deliveries would be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_recurring_urls_are_stored_once_and_survive_a_purge() {
    const OTHER: &str = "https://example.org/other";
    let f = Fixture::new(&Backend::Sqlite, &[(10, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let other = NewTask {
        webhook_url: Some(OTHER.into()),
        ..task(1, None)
    };
    let url_of = |ids: &[uuid::Uuid], jobs: &[WebhookJob]| {
        ids.iter()
            .map(|id| {
                jobs.iter()
                    .find(|j| j.task_id == *id)
                    .map(|j| j.url.clone())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    let ids = submit(s, org, vec![hooked(1), hooked(1), other.clone(), hooked(1)]).await;
    run_all(s, completed).await;
    let jobs = claim(s).await;
    assert_eq!(url_of(&ids, &jobs), vec![URL, URL, OTHER, URL]);
    for id in &ids {
        let t = s.get_task(org, *id).await.expect("get").expect("task");
        assert!(t.webhook_url.is_some_and(|u| u == URL || u == OTHER));
    }
    let Database::Sqlite(path) = &f.db.database else {
        unreachable!("a SQLite fixture")
    };
    let count = |sql: &str| -> i64 {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.query_row(sql, [], |r| r.get(0)).expect("count")
    };
    assert_eq!(
        count("SELECT count(*) FROM webhook_urls"),
        1,
        "URL recurred, OTHER did not"
    );
    assert_eq!(
        count("SELECT count(*) FROM tasks WHERE webhook_id IS NOT NULL"),
        2
    );
    for j in &jobs {
        s.record_webhook(j, WebhookResult::Delivered)
            .await
            .expect("record");
    }

    // Purge everything: the URL no task uses goes, and the writer forgets its id.
    s.purge(now_ms() + 1_000).await.expect("purge");
    assert_eq!(count("SELECT count(*) FROM webhook_urls"), 0);
    let ids = submit(s, org, vec![hooked(1), hooked(1), hooked(1)]).await;
    run_all(s, completed).await;
    let jobs = claim(s).await;
    assert_eq!(url_of(&ids, &jobs), vec![URL, URL, URL], "{jobs:?}");
    s.close();
}
