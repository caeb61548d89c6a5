//! The store conformance suite: every case runs against each backend through the `Store`
//! trait. `store_tests!` expands a case into `sqlite_cases::<name>` and
//! `postgres_cases::<name>`; the PostgreSQL half needs `CLORO_TEST_PG` (see `cloro::testing`)
//! and says it was skipped without it.

use std::collections::HashSet;
use std::sync::Arc;

use cloro::domain::types::TaskType;
use cloro::store::admin;
use cloro::store::postgres::{PgConfig, PgStore};
use cloro::store::sqlite::SqliteStore;
use cloro::store::{
    ClaimedTask, Database, ItemError, NewTask, OrgKey, OrgSpec, Outcome, Store, SubmitError,
    TaskQueue, Usage,
};
use cloro::testing::TestDb;
use cloro::time_fmt::now_ms;
use serde_json::json;

#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

/// Cluster settings for store tests: a lease that outlasts any test (a node claims only while
/// its lease is provably current), and no heartbeat in the background. A test that wants a node
/// dead abandons it, ends its lease (`expire_lease`) and calls `reap` on another node.
fn test_cluster() -> PgConfig {
    PgConfig {
        lease_ms: 600_000,
        heartbeat_ms: 3_600_000,
        poll_ms: 1_000,
        pool_size: 8,
        ..PgConfig::default()
    }
}

/// A fresh store with organizations made from `(concurrency, credits, queue_limit)`.
struct Fixture {
    store: Arc<dyn Store>,
    /// The same store as its concrete PostgreSQL type, for the cluster hooks of the `testing`
    /// feature (`abandon`, `reap`, `node`); `None` on SQLite.
    pg: Option<Arc<PgStore>>,
    orgs: Vec<OrgKey>,
    db: TestDb,
}

/// Opens the store on `db`: the trait object and, on PostgreSQL, the concrete store.
async fn open_store(db: &Database) -> (Arc<dyn Store>, Option<Arc<PgStore>>) {
    match db {
        Database::Sqlite(path) => (
            Arc::new(SqliteStore::open(path).expect("store opens")),
            None,
        ),
        Database::Postgres(url) => {
            let pg = Arc::new(
                PgStore::open(url, test_cluster())
                    .await
                    .expect("store opens"),
            );
            (pg.clone(), Some(pg))
        }
    }
}

impl Fixture {
    async fn new(backend: &Backend, orgs: &[(u32, i64, i64)]) -> Fixture {
        let db = match backend {
            Backend::Sqlite => TestDb::sqlite().expect("test database"),
            Backend::Postgres(url) => TestDb::postgres(url).await.expect("test database"),
        };
        let admin = admin::open(&db.database).await.expect("admin");
        let mut keys = Vec::new();
        for (i, &(concurrency, credits, queue_limit)) in orgs.iter().enumerate() {
            let spec = OrgSpec {
                name: format!("org{i}"),
                plan: "business".into(),
                concurrency: Some(concurrency),
                credits: Some(credits),
                queue_limit: Some(queue_limit),
                rate_limit: None,
            };
            keys.push(admin.create_org(&spec).await.expect("org").org.key);
        }
        drop(admin);
        let (store, pg) = open_store(&db.database).await;
        Fixture {
            store,
            pg,
            orgs: keys,
            db,
        }
    }

    /// The process dies without finishing anything and a new one starts on the same data.
    /// (PostgreSQL: another node starts and takes over the dead node's tasks once its lease
    /// ran out.)
    async fn crash_and_restart(self) -> Fixture {
        let Fixture {
            store,
            pg,
            orgs,
            db,
        } = self;
        match &db.database {
            Database::Sqlite(_) => {
                store.close();
                drop(store);
                let (store, pg) = open_store(&db.database).await;
                Fixture {
                    store,
                    pg,
                    orgs,
                    db,
                }
            }
            Database::Postgres(url) => {
                let Some(old) = pg else {
                    unreachable!("a PostgreSQL fixture")
                };
                old.abandon();
                old.expire_lease().await.expect("expire");
                let new = Arc::new(
                    PgStore::open(url, test_cluster())
                        .await
                        .expect("second node"),
                );
                new.reap().await.expect("reap");
                Fixture {
                    store: new.clone(),
                    pg: Some(new),
                    orgs,
                    db,
                }
            }
        }
    }
}

fn task(priority: u8, key: Option<&str>) -> NewTask {
    NewTask {
        task_type: TaskType::Chatgpt,
        payload: json!({ "prompt": format!("p{priority}"), "country": "US" }),
        priority,
        idempotency_key: key.map(str::to_owned),
        webhook_url: None,
        credits_to_charge: 5,
    }
}

async fn submit(store: &dyn Store, org: OrgKey, tasks: Vec<NewTask>) -> Vec<uuid::Uuid> {
    let out = store
        .submit(org, tasks)
        .await
        .expect("store ok")
        .expect("under the queue limit");
    out.into_iter().map(|r| r.expect("accepted").id).collect()
}

fn completed() -> Outcome {
    Outcome::Completed {
        result: json!({ "text": "ok" }).to_string().into(),
        credits: 5,
    }
}

async fn finish(store: &dyn Store, t: &ClaimedTask, o: Outcome) {
    store.finish(&[(t, &o)]).await.expect("finish");
}

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite_cases {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres_cases {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match cloro::testing::pg_admin_url() {
                        Some(url) => super::$name(super::Backend::Postgres(url)).await,
                        None => cloro::testing::announce_pg_skipped(),
                    }
                }
            )*
        }
    };
}

mod directory;
mod fencing;
mod health;
mod ids;
mod lanes;
mod pg_faults;
mod proxy;
mod sync;
mod tls;
mod webhooks;

store_tests!(
    priority_first_then_fifo,
    caps_hold_and_finishing_frees_the_slot,
    no_task_is_claimed_twice_by_concurrent_claimers,
    a_new_organization_waits_for_at_most_one_slot,
    a_small_claim_reaches_a_free_slot_behind_organizations_at_their_cap,
    retries_hold_no_slot_and_come_back_when_due,
    a_due_retry_goes_before_newer_tasks_of_its_priority,
    a_second_finish_of_the_same_attempt_changes_nothing,
    a_finish_applies_to_its_own_task_whatever_the_claim_remembered_of_its_row,
    the_queue_limit_refuses_whole_submissions,
    idempotency_keys_are_unique_per_organization,
    clearing_takes_queued_and_retrying_tasks_only,
    purge_deletes_old_terminal_tasks_and_frees_their_keys,
    completion_charges_once_and_failure_is_free,
    credits_are_rechecked_at_pickup,
    running_tasks_run_again_after_a_crash,
    a_closing_store_commits_its_outcomes_and_stops_promptly,
    a_new_billing_cycle_restores_the_plan_credits,
    usage_is_summed_over_every_attempt_of_a_task,
    add_ons_are_reserved_at_pickup_and_the_rest_released_at_finish,
    a_restarted_store_reserves_the_add_ons_of_the_tasks_it_restores,
);

fn usage(input: Option<u64>, output: Option<u64>, searches: Option<u64>) -> Option<Usage> {
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        searches,
    })
}

async fn usage_is_summed_over_every_attempt_of_a_task(b: Backend) {
    let f = Fixture::new(&b, &[(2, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![task(1, None), task(1, None), task(1, None)]).await;
    let usage_of = |id| async move {
        s.get_task(org, id)
            .await
            .expect("get")
            .expect("exists")
            .usage
    };
    // Task 0: a billed retry (tokens only), a requeue that reports searches only, an attempt
    // with none, then a completion with everything.
    let mut t = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(t.id, ids[0]);
    assert_eq!(t.usage, None, "a claim carries no usage");
    t.usage = usage(Some(100), Some(0), None);
    let retry = Outcome::Retry {
        run_after_ms: now_ms() - 1,
    };
    finish(s, &t, retry.clone()).await;
    assert_eq!(usage_of(ids[0]).await, usage(Some(100), Some(0), None));
    let mut t = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((t.id, t.attempt), (ids[0], 2));
    t.usage = usage(None, None, Some(2));
    finish(s, &t, Outcome::Requeue).await;
    assert_eq!(usage_of(ids[0]).await, usage(Some(100), Some(0), Some(2)));
    let t = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((t.id, t.attempt), (ids[0], 2));
    finish(s, &t, retry.clone()).await;
    assert_eq!(
        usage_of(ids[0]).await,
        usage(Some(100), Some(0), Some(2)),
        "an attempt without usage changes nothing"
    );
    let mut t = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((t.id, t.attempt), (ids[0], 3));
    t.usage = usage(Some(20), Some(7), Some(1));
    finish(s, &t, completed()).await;
    // A second finish of the same attempt adds nothing.
    finish(s, &t, completed()).await;
    assert_eq!(usage_of(ids[0]).await, usage(Some(120), Some(7), Some(3)));
    // Task 1: failed, with usage. Task 2: completed without any (the simulator's case).
    let mut t1 = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(t1.id, ids[1]);
    t1.usage = usage(None, None, Some(4));
    let t2 = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(t2.id, ids[2]);
    s.finish(&[
        (&t1, &Outcome::Failed { error: json!({}) }),
        (&t2, &completed()),
    ])
    .await
    .expect("finish");
    assert_eq!(usage_of(ids[1]).await, usage(None, None, Some(4)));
    assert_eq!(usage_of(ids[2]).await, None);
}

async fn priority_first_then_fifo(b: Backend) {
    let f = Fixture::new(&b, &[(1, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(
        s,
        org,
        [1, 5, 10, 5, 1, 10]
            .into_iter()
            .map(|p| task(p, None))
            .collect(),
    )
    .await;
    let mut order = Vec::new();
    loop {
        let claimed = s.claim(10).await.expect("claim");
        assert!(claimed.len() <= 1, "concurrency 1");
        let Some(t) = claimed.into_iter().next() else {
            break;
        };
        order.push(t.id);
        finish(s, &t, completed()).await;
    }
    assert_eq!(order, vec![ids[2], ids[5], ids[1], ids[3], ids[0], ids[4]]);
}

async fn caps_hold_and_finishing_frees_the_slot(b: Backend) {
    let f = Fixture::new(&b, &[(3, 1_000_000, 1000)]).await;
    let s = &*f.store;
    submit(s, f.orgs[0], (0..10).map(|_| task(1, None)).collect()).await;
    let first = s.claim(100).await.expect("claim");
    assert_eq!(first.len(), 3);
    assert!(s.claim(100).await.expect("claim").is_empty());
    assert_eq!(s.status(f.orgs[0]).await.expect("status").processing, 3);
    finish(s, &first[0], completed()).await;
    assert_eq!(s.claim(100).await.expect("claim").len(), 1);
    let st = s.status(f.orgs[0]).await.expect("status");
    assert_eq!((st.queued, st.processing, st.concurrency_used), (6, 3, 3));
}

async fn no_task_is_claimed_twice_by_concurrent_claimers(b: Backend) {
    let f = Fixture::new(&b, &[(50, 1_000_000, 10_000), (50, 1_000_000, 10_000)]).await;
    for &org in &f.orgs {
        submit(
            &*f.store,
            org,
            (0..500).map(|i| task((i % 10) as u8 + 1, None)).collect(),
        )
        .await;
    }
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = f.store.clone();
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let batch = store.claim(7).await.expect("claim");
                if batch.is_empty() && store.totals().await.expect("totals").0 == 0 {
                    return seen;
                }
                for t in batch {
                    let (_, processing) = store.totals().await.expect("totals");
                    assert!(
                        processing <= 100,
                        "node-wide processing {processing} above the caps"
                    );
                    seen.push(t.id);
                    store.finish(&[(&t, &completed())]).await.expect("finish");
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("claimer"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 1000);
    assert_eq!(unique.len(), 1000);
    assert_eq!(f.store.totals().await.expect("totals"), (0, 0));
}

async fn a_new_organization_waits_for_at_most_one_slot(b: Backend) {
    let f = Fixture::new(&b, &[(100, 1_000_000, 100_000), (100, 1_000_000, 100_000)]).await;
    let s = &*f.store;
    submit(s, f.orgs[0], (0..2000).map(|_| task(10, None)).collect()).await;
    // The node runs 4 at a time and is busy with org 0.
    let mut running = s.claim(4).await.expect("claim");
    assert!(running.iter().all(|t| t.org == f.orgs[0]));
    let late = submit(s, f.orgs[1], vec![task(1, None)]).await[0];
    // The next free slot goes to the new organization.
    let done = running.remove(0);
    finish(s, &done, completed()).await;
    let next = s.claim(1).await.expect("claim");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, late);
}

async fn a_small_claim_reaches_a_free_slot_behind_organizations_at_their_cap(b: Backend) {
    // Twenty organizations at their cap, all served longer ago than the twenty-first, which has
    // a free slot: a claim of one still finds it (on PostgreSQL a claim of one locks at most 18
    // organizations, least recently served first; those at their cap must not fill them).
    let f = Fixture::new(&b, &[(1, 1_000_000, 1000); 21]).await;
    let s = &*f.store;
    for &org in &f.orgs[..20] {
        submit(s, org, vec![task(1, None), task(1, None)]).await;
    }
    let busy = s.claim(20).await.expect("claim");
    assert_eq!(busy.len(), 20, "one task of each of the twenty");
    let last = f.orgs[20];
    let ids = submit(s, last, vec![task(1, None), task(1, None)]).await;
    let first = s.claim(1).await.expect("claim");
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[0]]);
    finish(s, &first[0], completed()).await;
    let next = s.claim(1).await.expect("claim");
    assert_eq!(
        next.iter().map(|t| t.id).collect::<Vec<_>>(),
        [ids[1]],
        "the free slot is found behind the organizations at their cap"
    );
    assert_eq!(s.totals().await.expect("totals"), (20, 21));
}

async fn retries_hold_no_slot_and_come_back_when_due(b: Backend) {
    let f = Fixture::new(&b, &[(1, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let ids = submit(s, f.orgs[0], vec![task(1, None), task(1, None)]).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((t.id, t.attempt), (ids[0], 1));
    // Retry far in the future: the slot is free and the other task runs meanwhile.
    finish(
        s,
        &t,
        Outcome::Retry {
            run_after_ms: now_ms() + 3_600_000,
        },
    )
    .await;
    let st = s.status(f.orgs[0]).await.expect("status");
    assert_eq!((st.queued, st.processing), (2, 0));
    let other = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(other.id, ids[1]);
    finish(s, &other, completed()).await;
    assert!(
        s.claim(1).await.expect("claim").is_empty(),
        "the retry is not due yet"
    );
    assert!(s.next_retry_ms().is_some_and(|due| due > now_ms()));
    // A retry that is due runs again with the next attempt number.
    let ids2 = submit(s, f.orgs[0], vec![task(1, None)]).await;
    let t2 = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(t2.id, ids2[0]);
    finish(
        s,
        &t2,
        Outcome::Retry {
            run_after_ms: now_ms() - 1,
        },
    )
    .await;
    let again = s.claim(1).await.expect("claim").remove(0);
    assert_eq!((again.id, again.attempt), (ids2[0], 2));
}

async fn a_due_retry_goes_before_newer_tasks_of_its_priority(b: Backend) {
    let f = Fixture::new(&b, &[(2, 1_000_000, 1000)]).await;
    let s = &*f.store;
    let ids = submit(s, f.orgs[0], vec![task(5, None), task(5, None)]).await;
    let both = s.claim(2).await.expect("claim");
    assert_eq!(both.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    // The first comes back (due at once) after the claims moved past it; the second ends.
    finish(
        s,
        &both[0],
        Outcome::Retry {
            run_after_ms: now_ms() - 1,
        },
    )
    .await;
    finish(s, &both[1], completed()).await;
    let newer = submit(s, f.orgs[0], vec![task(5, None)]).await;
    let next = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(
        (next.id, next.attempt),
        (ids[0], 2),
        "FIFO: the older task first"
    );
    let last = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(last.id, newer[0]);
}

async fn a_second_finish_of_the_same_attempt_changes_nothing(b: Backend) {
    let f = Fixture::new(&b, &[(2, 100, 1000)]).await;
    let s = &*f.store;
    let id = submit(s, f.orgs[0], vec![task(1, None)]).await[0];
    let t = s.claim(1).await.expect("claim").remove(0);
    finish(s, &t, completed()).await;
    finish(s, &t, completed()).await;
    finish(s, &t, Outcome::Failed { error: json!({}) }).await;
    let rec = s
        .get_task(f.orgs[0], id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(rec.credits_charged, Some(5));
    assert_eq!(s.org(f.orgs[0]).await.expect("org").credits, 95);
    assert_eq!(s.status(f.orgs[0]).await.expect("status").processing, 0);
}

/// PostgreSQL finds a finishing task by the address its claim left (`ClaimedTask::row_at`);
/// an address that is missing, invalid or another task's must still finish the right task,
/// by its `seq`, and never the task at that address.
async fn a_finish_applies_to_its_own_task_whatever_the_claim_remembered_of_its_row(b: Backend) {
    let f = Fixture::new(&b, &[(4, 1_000, 1000)]).await;
    let s = &*f.store;
    let ids = submit(s, f.orgs[0], (0..4).map(|_| task(1, None)).collect()).await;
    let mut t = s.claim(4).await.expect("claim");
    assert_eq!(t.len(), 4);
    if f.pg.is_some() {
        assert!(
            t.iter().all(|c| c.row_at().is_some()),
            "the claim keeps the rows' addresses"
        );
    }
    // t[0] carries t[1]'s address, t[1] carries an invalid one, t[2] none, t[3] its own.
    let other = t[1].row_at().map(str::to_owned);
    t[0].set_row_at(other.as_deref());
    t[1].set_row_at(Some("(0,0)"));
    t[2].set_row_at(None);
    let text = |i: usize| Outcome::Completed {
        result: json!({ "text": format!("answer {i}") }).to_string().into(),
        credits: 5,
    };
    // One finish call for all of them, so they are written by the same statements.
    let outcomes: Vec<Outcome> = (0..4).map(text).collect();
    let pairs: Vec<(&ClaimedTask, &Outcome)> = t.iter().zip(outcomes.iter()).collect();
    s.finish(&pairs).await.expect("finish");
    for (c, o) in t.iter().zip(0..) {
        let rec = s
            .get_task(f.orgs[0], c.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            rec.response,
            Some(json!({ "text": format!("answer {o}") })),
            "task {o} has its own answer"
        );
        assert_eq!(rec.credits_charged, Some(5));
    }
    assert!(ids.iter().all(|id| t.iter().any(|c| c.id == *id)));
    assert_eq!(s.status(f.orgs[0]).await.expect("status").processing, 0);
    assert_eq!(s.org(f.orgs[0]).await.expect("org").credits, 980);
}

async fn the_queue_limit_refuses_whole_submissions(b: Backend) {
    let f = Fixture::new(&b, &[(1, 1_000_000, 5)]).await;
    let s = &*f.store;
    submit(s, f.orgs[0], (0..3).map(|_| task(1, None)).collect()).await;
    let r = s
        .submit(f.orgs[0], (0..3).map(|_| task(1, None)).collect())
        .await
        .expect("store ok");
    assert_eq!(r.err(), Some(SubmitError::QueueLimit(5)));
    assert_eq!(s.status(f.orgs[0]).await.expect("status").queued, 3);
    submit(s, f.orgs[0], (0..2).map(|_| task(1, None)).collect()).await;
    // Running tasks do not count toward the limit.
    let _running = s.claim(1).await.expect("claim");
    submit(s, f.orgs[0], vec![task(1, None)]).await;
}

async fn idempotency_keys_are_unique_per_organization(b: Backend) {
    let f = Fixture::new(&b, &[(1, 1_000_000, 100), (1, 1_000_000, 100)]).await;
    let s = &*f.store;
    submit(s, f.orgs[0], vec![task(1, Some("k"))]).await;
    let r = s
        .submit(
            f.orgs[0],
            vec![task(1, Some("k")), task(1, Some("j")), task(1, Some("j"))],
        )
        .await;
    let items = r.expect("ok").expect("under limit");
    assert_eq!(
        items[0].as_ref().err(),
        Some(&ItemError::DuplicateKey("k".into()))
    );
    assert!(items[1].is_ok());
    assert_eq!(
        items[2].as_ref().err(),
        Some(&ItemError::DuplicateKey("j".into()))
    );
    submit(s, f.orgs[1], vec![task(1, Some("k"))]).await;
    // Concurrent duplicates: exactly one wins.
    let mut handles = Vec::new();
    for _ in 0..10 {
        let store = f.store.clone();
        let org = f.orgs[1];
        handles.push(tokio::spawn(async move {
            store
                .submit(org, vec![task(1, Some("race"))])
                .await
                .expect("ok")
                .expect("limit")[0]
                .is_ok()
        }));
    }
    let mut wins = 0;
    for h in handles {
        wins += usize::from(h.await.expect("task"));
    }
    assert_eq!(wins, 1);
}

async fn clearing_takes_queued_and_retrying_tasks_only(b: Backend) {
    let f = Fixture::new(&b, &[(1, 1_000_000, 100), (1, 1_000_000, 100)]).await;
    let s = &*f.store;
    let (a, b) = (f.orgs[0], f.orgs[1]);
    let ids = submit(s, a, (0..4).map(|_| task(1, None)).collect()).await;
    let first = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(first.id, ids[0]);
    finish(
        s,
        &first,
        Outcome::Retry {
            run_after_ms: now_ms() + 3_600_000,
        },
    )
    .await;
    let running = s.claim(1).await.expect("claim").remove(0);
    assert_eq!(running.id, ids[1]);
    submit(s, b, vec![task(1, None)]).await;

    assert_eq!(s.clear_queue(a).await.expect("clear"), 3);
    let st = s.status(a).await.expect("status");
    assert_eq!((st.queued, st.processing), (0, 1));
    for gone in [ids[0], ids[2], ids[3]] {
        assert!(s.get_task(a, gone).await.expect("get").is_none());
    }
    assert_eq!(s.status(b).await.expect("status").queued, 1);
    // The retry timer of a cleared task does not bring it back.
    assert!(s.claim(10).await.expect("claim").iter().all(|t| t.org == b));
    finish(s, &running, completed()).await;
    let done = s.get_task(a, ids[1]).await.expect("get").expect("kept");
    assert_eq!(done.status, cloro::domain::task::TaskStatus::Completed);
    assert_eq!(s.clear_queue(a).await.expect("clear"), 0);
}

async fn purge_deletes_old_terminal_tasks_and_frees_their_keys(b: Backend) {
    let f = Fixture::new(&b, &[(5, 1_000_000, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![task(1, Some("a")), task(1, Some("b"))]).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    finish(s, &t, completed()).await;
    assert_eq!(
        s.purge(now_ms() - 60_000).await.expect("purge"),
        0,
        "too recent"
    );
    assert_eq!(s.purge(now_ms() + 1).await.expect("purge"), 1);
    assert!(s.get_task(org, ids[0]).await.expect("get").is_none());
    assert!(
        s.get_task(org, ids[1]).await.expect("get").is_some(),
        "queued tasks are never purged"
    );
    submit(s, org, vec![task(1, Some("a"))]).await;
    // Embedded store: responses of purged tasks go with their whole hour's segment of the
    // result log.
    if let Database::Sqlite(path) = &f.db.database {
        let segments = || {
            std::fs::read_dir(cloro::store::sqlite::result_log::dir_for(path))
                .expect("result log dir")
                .count()
        };
        assert_eq!(segments(), 1);
        s.purge(now_ms() + 2 * cloro::store::sqlite::result_log::SEGMENT_SPAN_MS)
            .await
            .expect("purge");
        assert_eq!(segments(), 0);
    }
    assert!(s.get_task(org, ids[1]).await.expect("get").is_some());
}

async fn completion_charges_once_and_failure_is_free(b: Backend) {
    let f = Fixture::new(&b, &[(5, 100, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![task(1, None), task(1, None)]).await;
    let claimed = s.claim(2).await.expect("claim");
    for t in &claimed {
        let o = if t.id == ids[0] {
            completed()
        } else {
            Outcome::Failed {
                error: json!({"error": {}}),
            }
        };
        finish(s, t, o).await;
    }
    assert_eq!(s.org(org).await.expect("org").credits, 95);
    let a = s.get_task(org, ids[0]).await.expect("get").expect("a");
    let b = s.get_task(org, ids[1]).await.expect("get").expect("b");
    assert_eq!((a.credits_charged, b.credits_charged), (Some(5), Some(0)));
    // The charge is durable: a restarted store sees the same balance.
    drop(claimed);
    let f = f.crash_and_restart().await;
    assert_eq!(f.store.org(org).await.expect("org").credits, 95);
}

async fn credits_are_rechecked_at_pickup(b: Backend) {
    let f = Fixture::new(&b, &[(5, 8, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    // Two separate submissions each fit the balance (there is no reservation at submission).
    let mut ids = submit(s, org, vec![task(1, None)]).await;
    ids.extend(submit(s, org, vec![task(1, None)]).await);
    let claimed = s.claim(5).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ids[0]);
    let b = s.get_task(org, ids[1]).await.expect("get").expect("b");
    assert_eq!(b.status, cloro::domain::task::TaskStatus::Failed);
    assert_eq!(b.started_ms, None);
    assert_eq!(b.latency_ms(), None);
    assert_eq!(b.credits_charged, Some(0));
    assert_eq!(
        b.response.as_ref().map(|r| r["error"]["code"].clone()),
        Some(json!("INSUFFICIENT_CREDITS"))
    );
}

async fn running_tasks_run_again_after_a_crash(b: Backend) {
    let f = Fixture::new(&b, &[(5, 1_000_000, 100)]).await;
    let org = f.orgs[0];
    let ids = submit(&*f.store, org, vec![task(3, None), task(1, None)]).await;
    let claimed = f.store.claim(1).await.expect("claim");
    assert_eq!(claimed[0].id, ids[0]);
    // The process dies: nothing is finished.
    let f = f.crash_and_restart().await;
    let s = &*f.store;
    let st = s.status(org).await.expect("status");
    assert_eq!((st.queued, st.processing), (2, 0));
    let again = s.claim(5).await.expect("claim");
    assert_eq!(
        again.iter().map(|t| (t.id, t.attempt)).collect::<Vec<_>>(),
        vec![(ids[0], 2), (ids[1], 1)]
    );
}

async fn a_new_billing_cycle_restores_the_plan_credits(b: Backend) {
    // The fixture's plan is `business` (2,800,000 credits per cycle) with an explicit balance.
    let f = Fixture::new(&b, &[(5, 100, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    submit(s, org, vec![task(1, None)]).await;
    let t = s.claim(1).await.expect("claim").remove(0);
    finish(s, &t, completed()).await;
    let before = s.org(org).await.expect("org");
    assert_eq!(before.credits, 95);
    let resets = before.cycle_resets_ms.expect("a paid plan has a cycle");
    assert_eq!(
        s.renew_cycles(resets - 1).await.expect("renew"),
        0,
        "not due yet"
    );
    assert_eq!(s.renew_cycles(resets + 1).await.expect("renew"), 1);
    let after = s.org(org).await.expect("org");
    assert_eq!(after.credits, 2_800_000);
    assert_eq!(
        after.cycle_resets_ms,
        Some(resets + cloro::store::sqlite::CYCLE_MS)
    );
    // The new balance is what submissions and pickups see.
    submit(s, org, vec![task(1, None)]).await;
    assert_eq!(s.claim(1).await.expect("claim").len(), 1);
}

async fn a_closing_store_commits_its_outcomes_and_stops_promptly(b: Backend) {
    let f = Fixture::new(&b, &[(5, 1_000_000, 100)]).await;
    let Fixture {
        store,
        pg,
        orgs,
        db,
    } = f;
    let org = orgs[0];
    let ids = submit(
        &*store,
        org,
        vec![task(5, None), task(5, None), task(5, None)],
    )
    .await;
    let claimed = store.claim(2).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let outcomes: Vec<Outcome> = claimed.iter().map(|_| completed()).collect();
    let pairs: Vec<(&ClaimedTask, &Outcome)> = claimed.iter().zip(outcomes.iter()).collect();
    store.finish(&pairs).await.expect("finish");
    let node = pg.map(|pg| pg.node());
    // A graceful stop: its background work ends on its own (the bound only turns a hang into a
    // failure).
    store.close();
    tokio::time::timeout(std::time::Duration::from_secs(20), store.closed())
        .await
        .expect("the store's background work stops once it is closed");
    drop(store);
    if let (Database::Postgres(url), Some(node)) = (&db.database, node) {
        // The node left the cluster: no row of its own is left for others to reap.
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let rows: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM nodes WHERE id = $1)
                      + (SELECT count(*) FROM org_nodes WHERE node = $1)",
                &[&node],
            )
            .await
            .expect("query")
            .get(0);
        assert_eq!(rows, 0, "the stopped node still has rows");
    }
    // Nothing was lost: a new store sees two finished tasks and one queued, nothing running.
    let (store, _) = open_store(&db.database).await;
    let st = store.status(org).await.expect("status");
    assert_eq!((st.queued, st.processing), (1, 0));
    for id in &ids[..2] {
        let t = store
            .get_task(org, *id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(t.status, cloro::domain::task::TaskStatus::Completed);
    }
    store.close();
}

/// PostgreSQL only: a node's task times (`createdAt`, `startedAt`, `completedAt`) come from the
/// clock the store was opened with, not from the system's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_task_times_come_from_the_stores_clock() {
    let Some(url) = cloro::testing::pg_admin_url() else {
        return cloro::testing::announce_pg_skipped();
    };
    let db = TestDb::postgres(&url).await.expect("test database");
    let admin = admin::open(&db.database).await.expect("admin");
    let spec = OrgSpec {
        name: "org0".into(),
        plan: "business".into(),
        concurrency: Some(5),
        credits: Some(1_000_000),
        queue_limit: Some(100),
        rate_limit: None,
    };
    let org = admin.create_org(&spec).await.expect("org").org.key;
    drop(admin);
    let Database::Postgres(db_url) = &db.database else {
        unreachable!("a PostgreSQL database")
    };
    let clock = cloro::clock::Clock::manual(1_000_000_000);
    let store = PgStore::open_with_clock(db_url, test_cluster(), clock.clone())
        .await
        .expect("store opens");
    let id = submit(&store, org, vec![task(1, None)]).await[0];
    clock.advance(5_000);
    let claimed = store.claim(1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    clock.advance(250);
    finish(&store, &claimed[0], completed()).await;
    let t = store.get_task(org, id).await.expect("get").expect("task");
    assert_eq!(
        (t.created_ms, t.started_ms, t.finished_ms),
        (1_000_000_000, Some(1_000_005_000), Some(1_000_005_250))
    );
    store.close();
}

/// An AI Mode task with `expandProducts`: price 4, and up to 6 more after the run.
fn aimode_with_products() -> NewTask {
    NewTask {
        task_type: TaskType::Aimode,
        payload: json!({ "prompt": "espresso", "gl": "us", "country": "US", "device": "desktop",
                         "include": { "expandProducts": true } }),
        priority: 1,
        idempotency_key: None,
        webhook_url: None,
        credits_to_charge: 4,
    }
}

async fn add_ons_are_reserved_at_pickup_and_the_rest_released_at_finish(b: Backend) {
    let f = Fixture::new(&b, &[(5, 12, 100)]).await;
    let s = &*f.store;
    let org = f.orgs[0];
    let ids = submit(s, org, vec![aimode_with_products(), aimode_with_products()]).await;
    // 12 credits hold one task's price and add-ons (4 + 6), not two.
    let claimed = s.claim(5).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let second = s.get_task(org, ids[1]).await.expect("get").expect("second");
    assert_eq!(second.status, cloro::domain::task::TaskStatus::Failed);
    assert_eq!(
        second.response.as_ref().map(|r| r["error"]["code"].clone()),
        Some(json!("INSUFFICIENT_CREDITS"))
    );
    // It completes with 3 products: charged 7, and the 3 reserved beyond that are free again.
    let done = Outcome::Completed {
        result: json!({ "text": "ok" }).to_string().into(),
        credits: 7,
    };
    finish(s, &claimed[0], done).await;
    assert_eq!(s.org(org).await.expect("org").credits, 5);
    let first = s.get_task(org, ids[0]).await.expect("get").expect("first");
    assert_eq!(first.credits_charged, Some(7));
    let chat = submit(s, org, vec![task(1, None)]).await;
    let claimed = s.claim(5).await.expect("claim");
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), chat);
    finish(s, &claimed[0], completed()).await;
    assert_eq!(s.org(org).await.expect("org").credits, 0);
}

async fn a_restarted_store_reserves_the_add_ons_of_the_tasks_it_restores(b: Backend) {
    // 9 credits: the price of the task (4), not its price and add-ons (10).
    let f = Fixture::new(&b, &[(5, 9, 100)]).await;
    let org = f.orgs[0];
    let ids = submit(&*f.store, org, vec![aimode_with_products()]).await;
    let f = f.crash_and_restart().await;
    let s = &*f.store;
    assert!(s.claim(5).await.expect("claim").is_empty());
    let t = s.get_task(org, ids[0]).await.expect("get").expect("task");
    assert_eq!(t.status, cloro::domain::task::TaskStatus::Failed);
    assert_eq!(s.org(org).await.expect("org").credits, 9);
}
