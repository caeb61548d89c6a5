//! Engine lanes and the requeue outcome, on both stores: a full lane blocks nothing else and
//! its tasks keep their place, a lane's `starts` caps one claim, start tokens are shared and
//! can be given back, a requeued attempt is not spent and goes back to the head, and (cluster)
//! a lane's `max_in_flight` holds across two nodes claiming at once.

use super::*;
use cloro::domain::task::TaskStatus;
use cloro::store::{Lane, Lanes};

store_tests!(
    a_full_lane_blocks_nothing_else_and_keeps_its_tasks_in_place,
    a_lanes_starts_cap_one_claim_and_zero_pauses_it,
    lane_start_tokens_follow_the_rate_and_can_be_returned,
    a_requeued_task_keeps_its_attempt_and_its_place_and_is_not_charged,
);

/// CHATGPT (position 4 in `TaskType::ALL`) on lane 0 "openai".
fn openai(max_in_flight: Option<u32>, starts: Option<u32>) -> Lanes {
    let mut l = Lanes::default();
    l.lane_of[4] = Some(0);
    l.lanes.push(Lane {
        name: "openai".into(),
        max_in_flight,
        starts,
    });
    l
}

fn typed(task_type: TaskType, priority: u8) -> NewTask {
    NewTask {
        task_type,
        ..task(priority, None)
    }
}

async fn a_full_lane_blocks_nothing_else_and_keeps_its_tasks_in_place(b: Backend) {
    let f = Fixture::new(&b, &[(10, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(
        s,
        org,
        vec![
            typed(TaskType::Chatgpt, 10),
            typed(TaskType::Chatgpt, 10),
            typed(TaskType::Gemini, 1),
            typed(TaskType::Gemini, 1),
        ],
    )
    .await;
    let lanes = openai(Some(1), None);
    let first = s.claim_in(10, &lanes).await.expect("claim");
    let got: HashSet<_> = first.iter().map(|t| t.id).collect();
    assert_eq!(got, HashSet::from([ids[0], ids[2], ids[3]]));
    assert!(s.claim_in(10, &lanes).await.expect("claim").is_empty());
    // The skipped task is still QUEUED.
    let st = s.status(org).await.expect("status");
    assert_eq!((st.queued, st.processing), (1, 3));
    let chat = first.iter().find(|t| t.id == ids[0]).expect("chatgpt");
    finish(s, chat, completed()).await;
    // A newer task of a higher priority does not pass it either (same priority: FIFO).
    let later = submit(s, org, vec![typed(TaskType::Chatgpt, 10)]).await;
    let next = s.claim_in(10, &lanes).await.expect("claim");
    assert_eq!(next.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[1]]);
    for t in first.iter().filter(|t| t.id != ids[0]).chain(&next) {
        finish(s, t, completed()).await;
    }
    let last = s.claim_in(10, &lanes).await.expect("claim");
    assert_eq!(last.iter().map(|t| t.id).collect::<Vec<_>>(), later);
    // Without lanes nothing is held back.
    finish(s, &last[0], completed()).await;
    submit(
        s,
        org,
        (0..3).map(|_| typed(TaskType::Chatgpt, 1)).collect(),
    )
    .await;
    assert_eq!(s.claim(10).await.expect("claim").len(), 3);
}

async fn a_lanes_starts_cap_one_claim_and_zero_pauses_it(b: Backend) {
    let f = Fixture::new(&b, &[(50, 1_000_000, 1000), (50, 1_000_000, 1000)]).await;
    let s = &*f.store;
    for &org in &f.orgs {
        submit(
            s,
            org,
            (0..5).map(|_| typed(TaskType::Chatgpt, 5)).collect(),
        )
        .await;
        submit(s, org, vec![typed(TaskType::Google, 1)]).await;
    }
    let paused = openai(None, Some(0));
    let got = s.claim_in(10, &paused).await.expect("claim");
    assert_eq!(
        got.len(),
        2,
        "only the GOOGLE tasks run while openai is paused"
    );
    assert!(got.iter().all(|t| t.id != uuid::Uuid::nil()));
    let budget = openai(None, Some(3));
    let mut sizes = Vec::new();
    for _ in 0..5 {
        sizes.push(s.claim_in(10, &budget).await.expect("claim").len());
    }
    assert_eq!(sizes, vec![3, 3, 3, 1, 0]);
}

async fn lane_start_tokens_follow_the_rate_and_can_be_returned(b: Backend) {
    let f = Fixture::new(&b, &[(1, 1_000, 10)]).await;
    let s = &*f.store;
    let now = 1_000_000;
    // 600 a minute: one every 100 ms, a burst of 10.
    let g = s
        .take_lane_starts("serp", 50, 600, now)
        .await
        .expect("take");
    assert_eq!((g.granted, g.next_ms), (10, Some(now + 100)));
    let g = s
        .take_lane_starts("serp", 5, 600, now + 50)
        .await
        .expect("take");
    assert_eq!((g.granted, g.next_ms), (0, Some(now + 100)));
    // Another lane has its own schedule.
    let other = s
        .take_lane_starts("openai", 3, 60, now)
        .await
        .expect("take");
    assert_eq!(other.granted, 1);
    s.return_lane_starts("serp", 4, 600).await.expect("return");
    let g = s
        .take_lane_starts("serp", 10, 600, now + 50)
        .await
        .expect("take");
    assert_eq!(g.granted, 4);
    let g = s
        .take_lane_starts("serp", 10, 600, now + 150)
        .await
        .expect("take");
    assert_eq!(g.granted, 1);
    // Nothing asked, nothing granted.
    let g = s
        .take_lane_starts("serp", 0, 600, now + 150)
        .await
        .expect("take");
    assert_eq!((g.granted, g.next_ms), (0, None));
}

async fn a_requeued_task_keeps_its_attempt_and_its_place_and_is_not_charged(b: Backend) {
    let f = Fixture::new(&b, &[(1, 100, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![task(5, None), task(5, None), task(5, None)]).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((t.id, t.attempt), (ids[0], 1));
    let woken = s.work_notify().notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    finish(s, &t, Outcome::Requeue).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), woken)
        .await
        .expect("a requeue wakes the dispatcher");
    let rec = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(rec.status, TaskStatus::Queued);
    assert_eq!(rec.started_ms, None, "no attempt counted: not started");
    let st = s.status(org).await.expect("status");
    assert_eq!((st.queued, st.processing), (3, 0));
    // Back at the head of its priority, with the attempt not spent.
    let again = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((again.id, again.attempt), (ids[0], 1));
    // A second attempt requeued keeps the first one counted and its start time.
    let retry_at = now_ms() - 1;
    finish(
        s,
        &again,
        Outcome::Retry {
            run_after_ms: retry_at,
        },
    )
    .await;
    let third = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((third.id, third.attempt), (ids[0], 2));
    let started = s
        .get_task(org, ids[0])
        .await
        .expect("get")
        .expect("task")
        .started_ms;
    assert!(started.is_some());
    finish(s, &third, Outcome::Requeue).await;
    let rec = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(rec.started_ms, started);
    let fourth = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((fourth.id, fourth.attempt), (ids[0], 2));
    // Nothing was charged for the requeued attempts; a late finish of one changes nothing.
    finish(s, &t, completed()).await;
    assert_eq!(s.org(org).await.expect("org").credits, 100);
    finish(s, &fourth, completed()).await;
    assert_eq!(s.org(org).await.expect("org").credits, 95);
}

/// PostgreSQL only: two nodes claiming at the same time never have more than the lane's
/// `max_in_flight` tasks PROCESSING between them, and finishes on either node free room for
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_lanes_max_in_flight_holds_across_nodes() {
    let Some(url) = cloro::testing::pg_admin_url() else {
        return cloro::testing::announce_pg_skipped();
    };
    let f = Fixture::new(
        &Backend::Postgres(url),
        &[(50, 1_000_000, 10_000), (50, 1_000_000, 10_000)],
    )
    .await;
    let Database::Postgres(db_url) = &f.db.database else {
        unreachable!("a PostgreSQL database")
    };
    let a = f.store.clone();
    let b: Arc<dyn Store> = Arc::new(
        PgStore::open(db_url, test_cluster())
            .await
            .expect("second node"),
    );
    for &org in &f.orgs {
        submit(
            &*a,
            org,
            (0..40).map(|_| typed(TaskType::Chatgpt, 3)).collect(),
        )
        .await;
        submit(
            &*a,
            org,
            (0..5).map(|_| typed(TaskType::Gemini, 1)).collect(),
        )
        .await;
    }
    let lanes = openai(Some(4), None);
    let mut running: Vec<(usize, ClaimedTask)> = Vec::new();
    let mut done = 0;
    for round in 0..60 {
        let (ra, rb) = tokio::join!(a.claim_in(3, &lanes), b.claim_in(3, &lanes));
        for (node, got) in [(0, ra), (1, rb)] {
            running.extend(got.expect("claim").into_iter().map(|t| (node, t)));
        }
        let chat = running
            .iter()
            .filter(|(_, t)| t.task_type() == TaskType::Chatgpt)
            .count();
        assert!(chat <= 4, "round {round}: {chat} CHATGPT tasks in flight");
        // Finish one or two, alternately on each node.
        for _ in 0..(1 + round % 2) {
            if running.is_empty() {
                break;
            }
            let (node, t) = running.remove(round % running.len());
            let s = if node == 0 { &a } else { &b };
            finish(&**s, &t, completed()).await;
            done += 1;
        }
    }
    assert!(done >= 40, "work kept flowing: {done} finished");
    b.close();
}
