//! Database faults in cluster mode (PostgreSQL only; skipped without `CLORO_TEST_PG`): every
//! wait on the database is bounded. An organization's row someone keeps locked delays only that
//! organization, and only for `lock_timeout` per call (then `Unavailable`: 503 with
//! `Retry-After`); a silently dead connection costs one bounded call, not a hang; the lease is
//! renewed on a connection and task of its own throughout.

use std::time::{Duration, Instant};

use cloro::store::admin;
use cloro::store::postgres::{PgConfig, PgStore};
use cloro::store::{Error, OrgKey, OrgSpec, Outcome, TaskQueue};
use cloro::testing::TestDb;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::proxy::{Proxy, pg_target};
use super::task;

/// Longest a test waits for something the store must do within its bounds.
const PATIENCE: Duration = Duration::from_secs(10);

/// A live node: heartbeats every 50 ms, a short lock timeout and operation bound.
fn live_node() -> PgConfig {
    PgConfig {
        lease_ms: 3_000,
        heartbeat_ms: 50,
        poll_ms: 1_000,
        pool_size: 4,
        lock_timeout_ms: 300,
        db_timeout_ms: 1_000,
    }
}

/// A node that never heartbeats; the test kills it (`abandon`, then `expire_lease`: a node
/// claims only while its lease is provably current).
fn dead_node() -> PgConfig {
    PgConfig {
        lease_ms: 600_000,
        heartbeat_ms: 3_600_000,
        ..PgConfig::default()
    }
}

/// A fresh database with `n` organizations (concurrency 10, 1000 credits); `None` without
/// `CLORO_TEST_PG`.
async fn database(n: usize) -> Option<(TestDb, String, Vec<OrgKey>)> {
    let Some(admin_url) = cloro::testing::pg_admin_url() else {
        cloro::testing::announce_pg_skipped();
        return None;
    };
    let db = TestDb::postgres(&admin_url).await.expect("test database");
    let cloro::store::Database::Postgres(url) = db.database.clone() else {
        unreachable!("a PostgreSQL database")
    };
    let directory = admin::open(&db.database).await.expect("admin");
    let mut orgs = Vec::new();
    for i in 0..n {
        let spec = OrgSpec {
            name: format!("org{i}"),
            plan: "business".into(),
            concurrency: Some(10),
            credits: Some(1_000),
            queue_limit: Some(100),
            rate_limit: None,
        };
        orgs.push(directory.create_org(&spec).await.expect("org").org.key);
    }
    Some((db, url, orgs))
}

/// A plain connection of the test's own (not through any proxy).
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connects");
    tokio::spawn(connection);
    client
}

/// Holds `SELECT … FOR UPDATE` on organization `org`'s row until `ROLLBACK`.
async fn lock_org(url: &str, org: OrgKey) -> tokio_postgres::Client {
    let locker = connect(url).await;
    locker.batch_execute("BEGIN").await.expect("begin");
    locker
        .execute("SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE", &[&org])
        .await
        .expect("row locked");
    locker
}

/// `node`'s lease end (`nodes.alive_until_ms`), if it has a row.
async fn alive_until(watcher: &tokio_postgres::Client, node: Uuid) -> Option<i64> {
    watcher
        .query_opt("SELECT alive_until_ms FROM nodes WHERE id = $1", &[&node])
        .await
        .expect("nodes")
        .map(|r| r.get(0))
}

/// Waits (bounded by [`PATIENCE`]) until `node` has renewed its lease `times` more times.
async fn renewals(watcher: &tokio_postgres::Client, node: Uuid, times: usize) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = alive_until(watcher, node).await;
    let mut seen = 0;
    while seen < times {
        assert!(
            Instant::now() < deadline,
            "the node renewed its lease {seen} times in {PATIENCE:?}, not {times}"
        );
        // A real fault takes real time: poll the lease with a bounded deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = alive_until(watcher, node).await;
        if now > last {
            seen += 1;
            last = now;
        }
    }
}

/// `f` answers within [`PATIENCE`]; panics with `what` if it hangs.
async fn answers<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {PATIENCE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_org_row_bounds_that_orgs_submissions_and_spares_the_rest_and_the_leases() {
    let Some((_db, url, orgs)) = database(2).await else {
        return;
    };
    let (a, b) = (orgs[0], orgs[1]);
    // A dead node holds a task of `a`: reaping it must update `a`'s row.
    let dead = PgStore::open(&url, dead_node()).await.expect("dead node");
    super::submit(&dead, a, vec![task(1, None)]).await;
    assert_eq!(dead.claim(1).await.expect("claim").len(), 1);
    dead.abandon();
    dead.expire_lease().await.expect("expire");

    let locker = lock_org(&url, a).await;
    let live = PgStore::open(&url, live_node()).await.expect("live node");
    let watcher = connect(&url).await;

    // Another organization's submissions go through.
    let out = answers("b's submission", live.submit(b, vec![task(1, None)])).await;
    assert!(matches!(out, Ok(Ok(_))), "b's submission: {out:?}");

    // `a`'s answer Unavailable (503 with Retry-After) after the lock timeout, not never.
    let started = Instant::now();
    let out = answers("a's submission", live.submit(a, vec![task(1, None)])).await;
    assert!(
        matches!(out, Err(Error::Unavailable(_))),
        "a's submission: {out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The lease keeps being renewed while the reaper cannot take `a`'s row.
    renewals(&watcher, live.node(), 3).await;

    // Claims skip the locked organization: `b`'s task starts.
    let claimed = answers("a claim", live.claim(10)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].org, b);
    let done = Outcome::Completed {
        result: serde_json::json!({ "text": "ok" }).to_string().into(),
        credits: 5,
    };
    answers("b's finish", live.finish(&[(&claimed[0], &done)]))
        .await
        .expect("b's finish");

    // The lock goes: everything resumes. The reaper gives the dead node's task back...
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    drop(locker);
    super::submit(&live, a, vec![task(1, None)]).await;
    let deadline = Instant::now() + PATIENCE;
    let mut started = Vec::new();
    while started.len() < 2 {
        assert!(Instant::now() < deadline, "a's tasks did not come back");
        let mut changes = live.changes();
        started.extend(live.claim(10).await.expect("claim"));
        if started.len() < 2 {
            // The reaper's commit changes the store.
            let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        }
    }
    assert!(started.iter().all(|t| t.org == a));
    for t in &started {
        live.finish(&[(t, &done)]).await.expect("a's finish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_that_needs_a_held_org_row_fails_in_bounded_time_alone_and_commits_after() {
    let Some((_db, url, orgs)) = database(2).await else {
        return;
    };
    let (a, b) = (orgs[0], orgs[1]);
    let live = PgStore::open(&url, live_node()).await.expect("live node");
    super::submit(&live, a, vec![task(1, None), task(1, None), task(1, None)]).await;
    super::submit(&live, b, vec![task(1, None)]).await;
    let mut claimed = live.claim(4).await.expect("claim");
    claimed.extend(live.claim(4).await.expect("claim"));
    assert_eq!(claimed.len(), 4);
    let (mut of_a, of_b): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|t| t.org == a);
    let (a1, a2, a3, b1) = (of_a.remove(0), of_a.remove(0), of_a.remove(0), &of_b[0]);
    let locker = lock_org(&url, a).await;

    // A retry puts its task back in `a`'s queue counts: it needs the row. The finisher gives
    // up after the lock timeout (the dispatcher retries the finish) instead of stalling, and
    // `b`'s outcome, sent meanwhile (so grouped with one of `a`'s retries), still commits.
    let retry = Outcome::Retry { run_after_ms: 0 };
    let done = Outcome::Completed {
        result: serde_json::json!({ "text": "ok" }).to_string().into(),
        credits: 5,
    };
    let (f1, fb, f2) = ([(&a1, &retry)], [(b1, &done)], [(&a2, &retry)]);
    let started = Instant::now();
    let (r1, rb, r2) = answers("the finishes", async {
        tokio::join!(live.finish(&f1), live.finish(&fb), live.finish(&f2))
    })
    .await;
    assert!(matches!(r1, Err(Error::Unavailable(_))), "{r1:?}");
    assert!(matches!(r2, Err(Error::Unavailable(_))), "{r2:?}");
    rb.expect("b's finish commits while a's row is held");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A terminal outcome does not touch the row: it commits meanwhile.
    answers("a completion", live.finish(&[(&a3, &done)]))
        .await
        .expect("completion");

    locker.batch_execute("ROLLBACK").await.expect("unlock");
    live.finish(&[(&a1, &retry), (&a2, &retry)])
        .await
        .expect("retries");
    let mut again: Vec<_> = live
        .claim(4)
        .await
        .expect("claim")
        .iter()
        .map(|t| t.id)
        .collect();
    again.sort();
    let mut want = vec![a1.id, a2.id];
    want.sort();
    assert_eq!(again, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_connection_costs_bounded_calls_and_the_lease_is_renewed() {
    let Some((_db, url, orgs)) = database(1).await else {
        return;
    };
    let a = orgs[0];
    let proxy = Proxy::start(pg_target(&url).await).await;
    let live = PgStore::open(&proxy.pg_url(&url), live_node())
        .await
        .expect("node through the proxy");
    let watcher = connect(&url).await;
    super::submit(&live, a, vec![task(1, None)]).await;
    renewals(&watcher, live.node(), 1).await;

    // Every connection open now goes silent (pool, lease renewal, LISTEN).
    proxy.stall();

    // The lease renewal gives up on its silent connection and reconnects.
    renewals(&watcher, live.node(), 3).await;

    // A claim on a silent pooled connection fails within its bound; that connection leaves
    // the pool, so the claims that follow get fresh ones and the task starts.
    let deadline = Instant::now() + PATIENCE * 2;
    let claimed = loop {
        assert!(Instant::now() < deadline, "no claim succeeded");
        let started = Instant::now();
        match answers("a claim", live.claim(1)).await {
            Ok(tasks) if !tasks.is_empty() => break tasks,
            Ok(_) => {}
            Err(Error::Unavailable(_)) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{:?}",
                    started.elapsed()
                );
            }
            Err(e) => panic!("claim: {e}"),
        }
    };
    assert_eq!(claimed[0].org, a);
    let done = Outcome::Completed {
        result: serde_json::json!({ "text": "ok" }).to_string().into(),
        credits: 5,
    };
    let deadline = Instant::now() + PATIENCE * 2;
    while let Err(e) = answers("a finish", live.finish(&[(&claimed[0], &done)])).await {
        assert!(Instant::now() < deadline, "no finish succeeded: {e}");
    }
    drop(proxy);
}

/// A submission draws its seqs before it locks its organization's row (only its last
/// statement does): it may commit after a claim walked the organization's queue past the
/// seqs it drew. Its commit brings the claim cursors back down to its own tasks, so they are
/// claimed. Here the cursors are set beyond every seq, as such a claim would leave them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_committed_behind_the_claim_cursors_is_still_claimed() {
    let Some((_db, url, orgs)) = database(1).await else {
        return;
    };
    let a = orgs[0];
    let live = PgStore::open(&url, live_node()).await.expect("live node");
    let sql = connect(&url).await;
    let beyond = (1..=10)
        .map(|p| format!("c{p} = 9000000000000000"))
        .collect::<Vec<_>>()
        .join(", ");
    sql.execute(&format!("UPDATE orgs SET {beyond} WHERE id = $1"), &[&a])
        .await
        .expect("cursors moved on");
    let ids = super::submit(&live, a, vec![task(1, None), task(7, None)]).await;
    let cursors = sql
        .query_one("SELECT c1, c7, c2 FROM orgs WHERE id = $1", &[&a])
        .await
        .expect("cursors");
    let (c1, c7, c2): (i64, i64, i64) = (cursors.get(0), cursors.get(1), cursors.get(2));
    assert!(c1 < 9_000_000_000_000_000 && c7 < 9_000_000_000_000_000);
    assert_eq!(c2, 9_000_000_000_000_000, "no task of priority 2 came");
    let mut claimed: Vec<_> = live
        .claim(10)
        .await
        .expect("claim")
        .iter()
        .map(|t| t.id)
        .collect();
    claimed.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(claimed, want);
}

/// A batch's rows are laid out grouped by priority (the groups in the order the batch first
/// names them, seq order within each), whatever the request's order; each task keeps its own
/// id, priority and FIFO seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_grouped_by_priority() {
    let Some((_db, url, orgs)) = database(1).await else {
        return;
    };
    let a = orgs[0];
    let live = PgStore::open(&url, live_node()).await.expect("live node");
    let sql = connect(&url).await;
    let priorities = [1u8, 7, 3, 7, 10, 1, 5, 3];
    let ids = super::submit(
        &live,
        a,
        priorities.iter().map(|&p| task(p, None)).collect(),
    )
    .await;
    assert_eq!(ids.len(), priorities.len());
    // Each id is the request's task at that position: its priority, seqs in request order.
    let mut seqs = Vec::new();
    for (id, p) in ids.iter().zip(priorities) {
        let row = sql
            .query_one("SELECT priority, seq FROM tasks WHERE id = $1", &[id])
            .await
            .expect("the task's row");
        assert_eq!(row.get::<_, i16>(0), i16::from(p));
        seqs.push(row.get::<_, i64>(1));
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs in request order: {seqs:?}"
    );
    let layout: Vec<i64> = sql
        .query("SELECT seq FROM tasks ORDER BY ctid", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Priority 1 (positions 0, 5), then 7 (1, 3), 3 (2, 7), 10 (4), 5 (6).
    let want: Vec<i64> = [0, 5, 1, 3, 2, 7, 4, 6].iter().map(|&i| seqs[i]).collect();
    assert_eq!(layout, want, "rows grouped by priority on the heap");
}

/// The queue limit holds for the whole cluster although a submission inserts its rows before
/// it takes room: when the queue fills up while the submission inserts, its room is refused
/// under the organization's row lock and none of its rows stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_the_queue_filled_up_under_is_refused_and_leaves_nothing() {
    let Some((_db, url, orgs)) = database(1).await else {
        return;
    };
    let a = orgs[0];
    let patient = PgConfig {
        lock_timeout_ms: 10_000,
        db_timeout_ms: 20_000,
        ..live_node()
    };
    let live = PgStore::open(&url, patient).await.expect("live node");
    // Another node filled the queue (limit 100) and has not committed yet: the submission's
    // check reads the queue empty.
    let other = lock_org(&url, a).await;
    other
        .execute("UPDATE orgs SET q3 = q3 + 99 WHERE id = $1", &[&a])
        .await
        .expect("filled");
    let submitting = tokio::spawn(async move {
        let out = live.submit(a, vec![task(5, None), task(5, None)]).await;
        (live, out)
    });
    // Wait (bounded) until the submission waits for the row: its rows are inserted by then.
    let watcher = connect(&url).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                  AND query LIKE 'UPDATE orgs SET q1%'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the submission never waited for the row"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    other.batch_execute("COMMIT").await.expect("commit");
    let (_live, out) = answers("the submission", async {
        submitting.await.expect("joined")
    })
    .await;
    assert!(
        matches!(out, Ok(Err(cloro::store::SubmitError::QueueLimit(100)))),
        "{out:?}"
    );
    let left: i64 = watcher
        .query_one("SELECT count(*) FROM tasks WHERE org = $1", &[&a])
        .await
        .expect("tasks")
        .get(0);
    assert_eq!(left, 0, "no row of the refused batch stays");
    let queued: i64 = watcher
        .query_one("SELECT q3 + q5 FROM orgs WHERE id = $1", &[&a])
        .await
        .expect("counts")
        .get(0);
    assert_eq!(queued, 99, "only the other node's count");
}
