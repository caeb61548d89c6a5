//! Sync calls (`POST /v1/monitor/*`, issue 11) on both stores: a call holds one of its
//! organization's slots, shared with PROCESSING tasks, and claims count it; admissions refuse
//! with the right numbers; reservations count against the balance; a charge is exact and
//! durable and a kept result is a COMPLETED task that the purge removes; lane places are shared
//! with claims; and (cluster) a dead node's slots come back with its lease, and two nodes
//! admitting at once never exceed the cap.

use super::*;
use cloro::domain::task::TaskStatus;
use cloro::store::{Error, Lane, Lanes, SyncAdmission, SyncDone, SyncRecord, SyncSlot};

store_tests!(
    a_sync_call_holds_a_slot_that_claims_count,
    admissions_check_reserved_credits_then_slots,
    a_charge_is_exact_and_durable_and_a_kept_result_is_a_completed_task,
    sync_attempts_share_a_lanes_max_in_flight_with_claims,
);

async fn enter(s: &dyn Store, org: OrgKey, cost: i64) -> SyncAdmission {
    s.sync_enter(org, TaskType::Chatgpt, cost)
        .await
        .expect("sync_enter")
}

async fn admitted(s: &dyn Store, org: OrgKey, cost: i64) -> SyncSlot {
    match enter(s, org, cost).await {
        SyncAdmission::Admitted(slot) => slot,
        other => panic!("expected an admission, got {other:?}"),
    }
}

async fn leave(s: &dyn Store, slot: &SyncSlot) {
    s.sync_leave(slot, None).await.expect("sync_leave");
}

async fn a_sync_call_holds_a_slot_that_claims_count(b: Backend) {
    let f = Fixture::new(&b, &[(2, 1_000_000, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    submit(s, org, (0..4).map(|_| task(1, None)).collect()).await;
    let first = admitted(s, org, 5).await;
    assert_eq!((first.limit, first.current, first.org), (2, 1, org));
    // One slot left for tasks.
    let claimed = s.claim(10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        enter(s, org, 5).await,
        SyncAdmission::ConcurrencyLimit {
            limit: 2,
            current: 3
        }
    );
    let st = s.status(org).await.expect("status");
    assert_eq!((st.processing, st.concurrency_used), (1, 2));
    assert_eq!(
        s.totals().await.expect("totals").1,
        1,
        "totals count tasks only"
    );
    finish(s, &claimed[0], completed()).await;
    // Two sync calls: no task starts.
    let second = admitted(s, org, 5).await;
    assert_eq!(second.current, 2);
    assert!(s.claim(10).await.expect("claim").is_empty());
    let st = s.status(org).await.expect("status");
    assert_eq!((st.processing, st.concurrency_used), (0, 2));
    // A call leaves: one task starts.
    leave(s, &first).await;
    let claimed = s.claim(10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    leave(s, &second).await;
    finish(s, &claimed[0], completed()).await;
    let st = s.status(org).await.expect("status");
    assert_eq!(
        (st.processing, st.concurrency_used),
        (0, 0),
        "no slot leaked"
    );
    f.store.close();
}

async fn admissions_check_reserved_credits_then_slots(b: Backend) {
    let f = Fixture::new(&b, &[(2, 20, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    submit(s, org, vec![task(1, None)]).await;
    // The task reserves 5 of 20.
    let t = s.claim(1).await.expect("claim").remove(0);
    let slot = admitted(s, org, 10).await;
    // 20 - 5 - 10 = 5 left: a call costing 6 is refused for credits, before the slots
    // (which are all taken too).
    assert_eq!(enter(s, org, 6).await, SyncAdmission::InsufficientCredits);
    finish(s, &t, completed()).await;
    // Charged 5: 15 - 10 reserved = 5 left.
    assert_eq!(enter(s, org, 6).await, SyncAdmission::InsufficientCredits);
    let small = admitted(s, org, 5).await;
    assert_eq!(small.current, 2);
    leave(s, &small).await;
    leave(s, &slot).await;
    // Nothing charged by leaving without an answer: 15 left, all of it free.
    assert_eq!(s.org(org).await.expect("org").credits, 15);
    let all = admitted(s, org, 15).await;
    leave(s, &all).await;
    f.store.close();
}

async fn a_charge_is_exact_and_durable_and_a_kept_result_is_a_completed_task(b: Backend) {
    let f = Fixture::new(&b, &[(3, 100, 100)]).await;
    let org = f.orgs[0];
    let (kept_id, plain_id);
    {
        let s = &*f.store;
        let kept = admitted(s, org, 12).await;
        let plain = admitted(s, org, 12).await;
        let wrong = admitted(s, org, 12).await;
        (kept_id, plain_id) = (kept.id, plain.id);
        assert_ne!(kept.id, plain.id);
        let result = json!({ "text": "answer", "html": "https://example.test/page" });
        let done = SyncDone {
            credits: 9,
            keep: Some(SyncRecord {
                id: kept.id,
                payload: json!({ "prompt": "hi", "country": "US" }),
                result: result.clone(),
                attempts: 2,
                credits_to_charge: 7,
            }),
        };
        s.sync_leave(&kept, Some(&done)).await.expect("leave kept");
        s.sync_leave(
            &plain,
            Some(&SyncDone {
                credits: 4,
                keep: None,
            }),
        )
        .await
        .expect("leave charged");
        // A record under another id is refused: nothing charged, the slot freed all the same.
        let bad = SyncDone {
            credits: 50,
            keep: Some(SyncRecord {
                id: uuid::Uuid::new_v4(),
                payload: json!({}),
                result: json!({}),
                attempts: 1,
                credits_to_charge: 12,
            }),
        };
        assert!(matches!(
            s.sync_leave(&wrong, Some(&bad)).await,
            Err(Error::Conflict(_))
        ));
        assert_eq!(s.org(org).await.expect("org").credits, 100 - 9 - 4);
        let t = s
            .get_task(org, kept.id)
            .await
            .expect("get")
            .expect("the kept result is a task");
        assert_eq!(t.id, kept.id);
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.response, Some(result));
        assert_eq!(t.credits_charged, Some(9));
        assert_eq!(t.created_ms, kept.started_ms);
        assert_eq!(t.started_ms, Some(kept.started_ms));
        assert!(t.finished_ms.is_some_and(|f| f >= kept.started_ms));
        assert!(s.get_task(org, plain.id).await.expect("get").is_none());
        assert!(s.get_task(org + 1, kept.id).await.expect("get").is_none());
        let st = s.status(org).await.expect("status");
        assert_eq!((st.queued, st.processing, st.concurrency_used), (0, 0, 0));
    }
    // Durable: a fresh handle on the database reads the balance, and a restarted store (a new
    // node on PostgreSQL) still has the record.
    let dir = admin::open(&f.db.database).await.expect("admin");
    assert_eq!(dir.org(org).await.expect("org").credits, 100 - 9 - 4);
    drop(dir);
    let f = f.crash_and_restart().await;
    let s = &*f.store;
    assert_eq!(s.org(org).await.expect("org").credits, 100 - 9 - 4);
    assert!(s.get_task(org, kept_id).await.expect("get").is_some());
    assert!(s.get_task(org, plain_id).await.expect("get").is_none());
    // The purge removes it after the retention like any terminal task.
    assert_eq!(s.purge(now_ms() - 60_000).await.expect("purge"), 0);
    assert_eq!(s.purge(now_ms() + 1).await.expect("purge"), 1);
    assert!(s.get_task(org, kept_id).await.expect("get").is_none());
    f.store.close();
}

/// CHATGPT (position 4 in `TaskType::ALL`) on lane 0 "openai", capped at `max`.
fn openai(max: u32) -> Lanes {
    let mut l = Lanes::default();
    l.lane_of[4] = Some(0);
    l.lanes.push(Lane {
        name: "openai".into(),
        max_in_flight: Some(max),
        starts: None,
    });
    l
}

async fn sync_attempts_share_a_lanes_max_in_flight_with_claims(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let lanes = openai(2);
    submit(s, org, (0..3).map(|_| task(1, None)).collect()).await;
    assert!(
        s.sync_lane_enter(&lanes, TaskType::Chatgpt)
            .await
            .expect("lane")
    );
    assert_eq!(s.claim_in(10, &lanes).await.expect("claim").len(), 1);
    // One task and one sync attempt: the lane is full for both.
    assert!(
        !s.sync_lane_enter(&lanes, TaskType::Chatgpt)
            .await
            .expect("lane")
    );
    assert!(s.claim_in(10, &lanes).await.expect("claim").is_empty());
    s.sync_lane_leave(TaskType::Chatgpt).await.expect("leave");
    assert_eq!(s.claim_in(10, &lanes).await.expect("claim").len(), 1);
    assert!(
        !s.sync_lane_enter(&lanes, TaskType::Chatgpt)
            .await
            .expect("lane")
    );
    // A type without a capped lane always has room, and gives its place back.
    assert!(
        s.sync_lane_enter(&lanes, TaskType::Gemini)
            .await
            .expect("lane")
    );
    s.sync_lane_leave(TaskType::Gemini).await.expect("leave");
    f.store.close();
}

/// Cluster: a node dies holding a sync slot and a lane place; another node gets them back
/// once it reaped the dead one (its lease ran out), and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dead_nodes_sync_slots_come_back_with_its_lease() {
    let Some(url) = cloro::testing::pg_admin_url() else {
        return cloro::testing::announce_pg_skipped();
    };
    let f = Fixture::new(&Backend::Postgres(url), &[(1, 1_000_000, 100)]).await;
    let org = f.orgs[0];
    let Database::Postgres(db_url) = &f.db.database else {
        unreachable!("a PostgreSQL database")
    };
    let a = f.pg.clone().expect("a PostgreSQL fixture");
    let _slot = admitted(&*a, org, 5).await;
    let lanes = openai(1);
    assert!(
        a.sync_lane_enter(&lanes, TaskType::Chatgpt)
            .await
            .expect("lane")
    );
    let b = PgStore::open(db_url, test_cluster())
        .await
        .expect("second node");
    assert_eq!(
        enter(&b, org, 5).await,
        SyncAdmission::ConcurrencyLimit {
            limit: 1,
            current: 2
        }
    );
    assert!(
        !b.sync_lane_enter(&lanes, TaskType::Chatgpt)
            .await
            .expect("lane")
    );
    a.abandon();
    b.reap().await.expect("reap");
    let slot = admitted(&b, org, 5).await;
    assert!(
        b.sync_lane_enter(&lanes, TaskType::Chatgpt)
            .await
            .expect("lane")
    );
    assert_eq!(b.status(org).await.expect("status").concurrency_used, 1);
    b.sync_leave(&slot, None).await.expect("leave");
    b.sync_lane_leave(TaskType::Chatgpt)
        .await
        .expect("lane leave");
    b.close();
}

/// Cluster: two nodes admitting many calls at once never hold more slots than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_admitting_at_once_never_exceed_the_cap() {
    let Some(url) = cloro::testing::pg_admin_url() else {
        return cloro::testing::announce_pg_skipped();
    };
    let f = Fixture::new(&Backend::Postgres(url), &[(3, 1_000_000, 100)]).await;
    let org = f.orgs[0];
    let Database::Postgres(db_url) = &f.db.database else {
        unreachable!("a PostgreSQL database")
    };
    let a: Arc<dyn Store> = f.store.clone();
    let b: Arc<dyn Store> = Arc::new(PgStore::open(db_url, test_cluster()).await.expect("node b"));
    let mut calls = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move {
            (s.clone(), s.sync_enter(org, TaskType::Chatgpt, 1).await)
        }));
    }
    let mut slots = Vec::new();
    for c in calls {
        let (s, r) = c.await.expect("task");
        match r.expect("sync_enter") {
            SyncAdmission::Admitted(slot) => slots.push((s, slot)),
            SyncAdmission::ConcurrencyLimit { limit, current } => {
                assert_eq!(limit, 3);
                assert!(current >= 4);
            }
            SyncAdmission::InsufficientCredits => panic!("credits suffice"),
        }
    }
    assert_eq!(slots.len(), 3, "exactly the cap was admitted");
    assert_eq!(a.status(org).await.expect("status").concurrency_used, 3);
    for (s, slot) in &slots {
        s.sync_leave(slot, None).await.expect("leave");
    }
    assert_eq!(b.status(org).await.expect("status").concurrency_used, 0);
    b.close();
    a.close();
}
