//! The dispatcher with configured engines, on a real embedded store: an engine's
//! `max_in_flight` holds, a saturated engine blocks nothing else, a 429 pauses the engine and
//! costs no attempt, a refused key keeps the queue QUEUED and probes once a minute.
//!
//! Synchronisation is by the store's change feed and the engines' own counters, never by
//! sleeping; the engines' pauses run on a manual wall clock that the tests move.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::engines::Member;
use super::*;
use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
use crate::engines::{EngineOutput, EngineTask};
use crate::store::{NewTask, OrgKey, OrgSpec};

/// An engine that answers from a script (then succeeds), counts calls, tracks the most calls
/// in flight at once, and can hold every call until the test lets it go.
struct Scripted {
    script: StdMutex<Vec<EngineError>>,
    calls: AtomicU32,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
    /// `Some`: every call takes a permit first (the test adds permits to let calls end).
    hold: Option<Semaphore>,
    started: tokio::sync::Notify,
}

impl Scripted {
    fn new(script: Vec<EngineError>, hold: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: StdMutex::new(script.into_iter().rev().collect()),
            calls: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            most_in_flight: AtomicU32::new(0),
            hold: hold.then(|| Semaphore::new(0)),
            started: tokio::sync::Notify::new(),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` calls have started (failing the test after 20 s).
    async fn until_calls(&self, n: u32) {
        within(async {
            loop {
                let started = self.started.notified();
                if self.calls() >= n {
                    return;
                }
                started.await;
            }
        })
        .await
    }
}

#[async_trait]
impl Engine for Scripted {
    async fn execute(&self, _task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        self.started.notify_waiters();
        if let Some(hold) = &self.hold
            && let Ok(permit) = hold.acquire().await
        {
            permit.forget();
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let next = self.script.lock().ok().and_then(|mut s| s.pop());
        match next {
            Some(e) => Err(e),
            None => Ok(EngineOutput {
                result: crate::engines::ResultText::of(&json!({"text": "answer"})),
                extra_credits: 0,
                usage: None,
            }),
        }
    }
}

/// Runs `f`, failing the test if it takes more than 20 s (a broken rule must fail, not hang).
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), f)
        .await
        .expect("timed out waiting for the dispatcher")
}

struct Rig {
    store: Arc<dyn Store>,
    routes: Arc<EngineRoutes>,
    org: OrgKey,
    clock: Clock,
    cancel: CancellationToken,
    dispatcher: tokio::task::JoinHandle<()>,
    _db: crate::testing::TestDb,
}

/// A SQLite store on a manual clock with one organization of concurrency `concurrency`, and
/// a dispatcher running `routes` (unrouted types on an instant simulator).
async fn rig(concurrency: u32, routes: EngineRoutes) -> Rig {
    rig_with(concurrency, routes, 64).await
}

/// [`rig`] with `workers` workers.
async fn rig_with(concurrency: u32, routes: EngineRoutes, workers: usize) -> Rig {
    let db = crate::testing::TestDb::sqlite().expect("test database");
    let admin = crate::store::admin::open(&db.database)
        .await
        .expect("admin");
    let spec = OrgSpec {
        name: "org".into(),
        plan: "business".into(),
        concurrency: Some(concurrency),
        credits: Some(1_000_000),
        queue_limit: Some(100_000),
        rate_limit: None,
    };
    let org = admin.create_org(&spec).await.expect("org").org.key;
    drop(admin);
    let crate::store::Database::Sqlite(path) = &db.database else {
        unreachable!("a SQLite test database")
    };
    let clock = Clock::manual(1_700_000_000_000);
    let store: Arc<dyn Store> = Arc::new(
        crate::store::sqlite::SqliteStore::open_with_clock(path, clock.clone()).expect("store"),
    );
    let cancel = CancellationToken::new();
    let cfg = QueueConfig {
        workers,
        clock: clock.clone(),
        ..QueueConfig::default()
    };
    let default: Arc<dyn Engine> = Arc::new(crate::engines::SimulatedEngine {
        latency: crate::engines::LatencyRange {
            min_ms: 0,
            max_ms: 0,
        },
        failure_rate: 0.0,
    });
    let routes = Arc::new(routes);
    let dispatcher = tokio::spawn(run_dispatcher(
        store.clone(),
        default,
        routes.clone(),
        cfg,
        Arc::new(Gate::default()),
        cancel.clone(),
    ));
    Rig {
        store,
        routes,
        org,
        clock,
        cancel,
        dispatcher,
        _db: db,
    }
}

impl Rig {
    async fn submit(&self, task_type: TaskType, priority: u8, n: usize) -> Vec<uuid::Uuid> {
        let payload = match task_type {
            TaskType::Gemini | TaskType::Chatgpt => json!({"prompt": "p", "country": "US"}),
            _ => json!({"query": "q", "country": "US"}),
        };
        let tasks = (0..n)
            .map(|_| NewTask {
                task_type,
                payload: payload.clone(),
                priority,
                idempotency_key: None,
                webhook_url: None,
                credits_to_charge: 1,
            })
            .collect();
        self.store
            .submit(self.org, tasks)
            .await
            .expect("store ok")
            .expect("under the limit")
            .into_iter()
            .map(|r| r.expect("accepted").id)
            .collect()
    }

    async fn task(&self, id: uuid::Uuid) -> crate::store::TaskRecord {
        self.store
            .get_task(self.org, id)
            .await
            .expect("get")
            .expect("exists")
    }

    /// Waits until every task in `ids` is terminal (failing the test after 20 s).
    async fn until_done(&self, ids: &[uuid::Uuid]) {
        self.until(|r| async move {
            let mut done = true;
            for id in ids {
                done &= r.task(*id).await.status.is_terminal();
            }
            done
        })
        .await
    }

    /// Waits, on the store's change feed, until `test` holds (failing the test after 20 s).
    async fn until<'a, F, Fut>(&'a self, test: F)
    where
        F: Fn(&'a Rig) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut changes = self.store.changes();
        within(async {
            while !test(self).await {
                changes.changed().await.expect("the store is open");
            }
        })
        .await
    }

    /// Waits, on the health writer's writes, until the database's health of `engine` is
    /// `(health, message)` (failing the test after 20 s).
    async fn until_health(&self, engine: &str, health: &str, message: Option<&str>) {
        within(async {
            loop {
                let mut writes = self.routes.health_writes();
                let rows = self.store.engine_health().await.expect("health");
                if rows.iter().any(|r| {
                    r.name == engine && r.health == health && r.message.as_deref() == message
                }) {
                    return;
                }
                writes.changed().await.expect("the routes are alive");
            }
        })
        .await
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.dispatcher.await;
        self.store.close();
    }
}

fn route(members: Vec<Member>, pairs: &[(TaskType, usize)]) -> EngineRoutes {
    let mut route = [None; 8];
    for (t, m) in pairs {
        let i = TaskType::ALL
            .iter()
            .position(|x| x == t)
            .expect("a task type");
        route[i] = Some(*m);
    }
    EngineRoutes::new(members, route)
}

#[tokio::test]
async fn max_in_flight_holds_and_a_saturated_engine_blocks_nothing_else() {
    let slow = Scripted::new(Vec::new(), true);
    let members = vec![Member::new(
        "slow",
        "openai-responses",
        None,
        slow.clone(),
        Some(2),
        None,
    )];
    let r = rig(20, route(members, &[(TaskType::Chatgpt, 0)])).await;
    // Ten high-priority tasks on the saturated engine, then low-priority ones on another.
    let chat = r.submit(TaskType::Chatgpt, 10, 10).await;
    slow.until_calls(2).await;
    let gemini = r.submit(TaskType::Gemini, 1, 5).await;
    r.until_done(&gemini).await;
    assert_eq!(slow.calls(), 2, "no third call while two are in flight");
    for id in &chat[2..] {
        assert_eq!(r.task(*id).await.status, TaskStatus::Queued);
    }
    // Let every call end: the rest run, never more than two at once.
    if let Some(hold) = &slow.hold {
        hold.add_permits(10);
    }
    r.until_done(&chat).await;
    assert_eq!(slow.calls(), 10);
    assert_eq!(slow.most_in_flight.load(Ordering::SeqCst), 2);
    for id in &chat {
        assert_eq!(r.task(*id).await.status, TaskStatus::Completed);
    }
    r.stop().await;
}

#[tokio::test]
async fn a_429_pauses_the_engine_until_its_reset_and_costs_no_attempt() {
    let engine = Scripted::new(
        vec![EngineError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(30)),
            message: "Rate limit reached for requests".into(),
        }],
        false,
    );
    let members = vec![Member::new(
        "openai",
        "openai-responses",
        None,
        engine.clone(),
        None,
        None,
    )];
    let r = rig(5, route(members, &[(TaskType::Chatgpt, 0)])).await;
    let id = r.submit(TaskType::Chatgpt, 5, 1).await[0];
    engine.until_calls(1).await;
    // The 429 is recorded (the task back to QUEUED with its attempt given back).
    r.until(|r| async move {
        let t = r.task(id).await;
        t.status == TaskStatus::Queued && t.attempts == 0
    })
    .await;
    // Paused: other work runs, this engine is not called again before the reset.
    let other = r.submit(TaskType::Gemini, 1, 1).await;
    r.until_done(&other).await;
    assert_eq!(engine.calls(), 1);
    // The reset passes: the task runs, and completes on its first counted attempt.
    r.clock.advance(30_000);
    let poke = r.submit(TaskType::Gemini, 1, 1).await;
    r.until_done(&poke).await;
    r.until_done(&[id]).await;
    let t = r.task(id).await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.attempts, 1, "the 429 cost no attempt");
    assert_eq!(engine.calls(), 2);
    r.stop().await;
}

#[tokio::test]
async fn a_refused_key_keeps_the_queue_queued_and_probes_once_a_minute() {
    let refused = || EngineError::Unauthorized {
        message: "Incorrect API key provided".into(),
    };
    let engine = Scripted::new((0..20).map(|_| refused()).collect(), false);
    let members = vec![Member::new(
        "openai",
        "openai-responses",
        None,
        engine.clone(),
        None,
        None,
    )];
    let routes = route(members, &[(TaskType::Chatgpt, 0)]);
    let r = rig(3, routes).await;
    let ids = r.submit(TaskType::Chatgpt, 5, 100).await;
    engine.until_calls(1).await;
    // Once the refusals are recorded, the dispatcher goes on with other work only.
    r.until(|r| async move {
        let st = r.store.status(r.org).await.expect("status");
        st.processing == 0 && st.queued == 100
    })
    .await;
    let other = r.submit(TaskType::Gemini, 1, 3).await;
    r.until_done(&other).await;
    let first_round = engine.calls();
    assert!(
        (1..=3).contains(&first_round),
        "at most the organization's 3 slots met the refusal: {first_round}"
    );
    for id in &ids {
        let t = r.task(*id).await;
        assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 0));
    }
    // Within the minute: still nothing. After it: exactly one probe.
    r.clock.advance(59_000);
    let poke = r.submit(TaskType::Gemini, 1, 1).await;
    r.until_done(&poke).await;
    assert_eq!(engine.calls(), first_round);
    r.clock.advance(1_000);
    let poke = r.submit(TaskType::Gemini, 1, 1).await;
    r.until_done(&poke).await;
    engine.until_calls(first_round + 1).await;
    r.until(|r| async move { r.store.status(r.org).await.expect("status").processing == 0 })
        .await;
    let poke = r.submit(TaskType::Gemini, 1, 1).await;
    r.until_done(&poke).await;
    assert_eq!(engine.calls(), first_round + 1, "one probe, refused");
    assert_eq!(r.store.status(r.org).await.expect("status").queued, 100);
    r.stop().await;
}

#[tokio::test]
async fn health_changes_are_written_to_the_database() {
    let engine = Scripted::new(
        vec![EngineError::Unauthorized {
            message: "Incorrect API key provided".into(),
        }],
        false,
    );
    let members = vec![
        Member::new(
            "openai",
            "openai-responses",
            None,
            engine.clone(),
            None,
            None,
        ),
        Member::new("idle", "gemini", None, engine.clone(), None, None),
    ];
    let routes = route(members, &[(TaskType::Chatgpt, 0), (TaskType::Gemini, 1)]);
    let r = rig(3, routes).await;
    let start = r.clock.now_ms();
    // At start-up every configured engine is written `ok` (clearing an earlier run's state).
    r.until_health("openai", "ok", None).await;
    r.until_health("idle", "ok", None).await;
    // A refused key: `failing`, with the upstream's message, since the refusal.
    let id = r.submit(TaskType::Chatgpt, 5, 1).await[0];
    engine.until_calls(1).await;
    r.until_health("openai", "failing", Some("Incorrect API key provided"))
        .await;
    let rows = r.store.engine_health().await.expect("health");
    let openai = rows.iter().find(|h| h.name == "openai").expect("a row");
    assert_eq!(openai.since_ms, start);
    assert_eq!(openai.node, None, "the embedded store has no node id");
    let idle = rows.iter().find(|h| h.name == "idle").expect("a row");
    assert_eq!(idle.health, "ok", "only the refused engine changed");
    // The probe a minute later succeeds: `ok` again, since then.
    r.clock.advance(60_000);
    let poke = r.submit(TaskType::Google, 1, 1).await;
    r.until_done(&poke).await;
    r.until_done(&[id]).await;
    assert_eq!(r.task(id).await.status, TaskStatus::Completed);
    r.until_health("openai", "ok", None).await;
    let rows = r.store.engine_health().await.expect("health");
    let openai = rows.iter().find(|h| h.name == "openai").expect("a row");
    assert_eq!(openai.since_ms, start + 60_000);
    r.stop().await;
}

#[test]
fn a_claim_asks_for_at_most_a_claim_batch() {
    let unrecorded = Arc::new(AtomicUsize::new(0));
    let mut pacer = GatePacer {
        gate: Arc::new(Gate::default()),
        unrecorded: unrecorded.clone(),
    };
    assert_eq!(pacer.batch(10), 10);
    assert_eq!(pacer.batch(CLAIM_BATCH), CLAIM_BATCH);
    assert_eq!(pacer.batch(20_000), CLAIM_BATCH);
    // Outcomes waiting to be recorded stop the claims until the store catches up.
    unrecorded.store(MAX_UNRECORDED, Ordering::SeqCst);
    assert_eq!(pacer.batch(20_000), 0);
    unrecorded.store(MAX_UNRECORDED - 1, Ordering::SeqCst);
    assert_eq!(pacer.batch(20_000), CLAIM_BATCH);
}

#[tokio::test]
async fn more_free_workers_than_a_claim_batch_are_all_filled() {
    // Claims of at most CLAIM_BATCH follow each other until every queued task runs.
    let held = Scripted::new(Vec::new(), true);
    let members = vec![Member::new(
        "held",
        "openai-responses",
        None,
        held.clone(),
        None,
        None,
    )];
    let n = CLAIM_BATCH + 100;
    let r = rig_with(
        n as u32 + 10,
        route(members, &[(TaskType::Chatgpt, 0)]),
        n + 10,
    )
    .await;
    let ids = r.submit(TaskType::Chatgpt, 5, n).await;
    held.until_calls(n as u32).await;
    assert_eq!(held.most_in_flight.load(Ordering::SeqCst), n as u32);
    if let Some(hold) = &held.hold {
        hold.add_permits(n);
    }
    within(wait_idle(&*r.store)).await;
    assert_eq!(r.task(ids[n - 1]).await.status, TaskStatus::Completed);
    r.stop().await;
}
