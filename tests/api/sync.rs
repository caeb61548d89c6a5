//! The synchronous monitor endpoints (`POST /v1/monitor/*`, issue 11): answers, charges,
//! the order of checks, slots shared with async tasks, retries, the budget, disconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cloro::engines::{
    Engine, EngineError, EngineOutput, EngineTask, LatencyRange, SimulatedEngine,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::helpers::{TestApp, chatgpt, spawn_post};

/// The simulator behind a gate: every call announces itself on `entered` and waits for a
/// permit of `release`; a call dropped before its permit (its client went away) is counted in
/// `cancelled`.
struct Gated {
    inner: SimulatedEngine,
    entered: Semaphore,
    release: Semaphore,
    cancelled: AtomicUsize,
    calls: AtomicUsize,
}

impl Gated {
    fn new() -> Arc<Gated> {
        Arc::new(Gated {
            inner: SimulatedEngine {
                latency: LatencyRange {
                    min_ms: 0,
                    max_ms: 0,
                },
                failure_rate: 0.0,
            },
            entered: Semaphore::new(0),
            release: Semaphore::new(0),
            cancelled: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        })
    }

    /// Waits until a call is inside the engine.
    async fn wait_entered(&self) {
        self.entered.acquire().await.expect("open").forget();
    }
}

/// Counts a call that was dropped before it was let through.
struct Abandoned<'a>(&'a AtomicUsize, bool);

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Engine for Gated {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut abandoned = Abandoned(&self.cancelled, false);
        self.entered.add_permits(1);
        self.release.acquire().await.expect("open").forget();
        abandoned.1 = true;
        self.inner.execute(task).await
    }
}

/// An engine whose every attempt fails (retryably) after `1` ms, counting them in `0`.
struct AlwaysFails(AtomicUsize, u64);

#[async_trait]
impl Engine for AlwaysFails {
    async fn execute(&self, _: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.1)).await;
        Err(EngineError::Retryable("upstream said 503".into()))
    }
}

fn prompt(p: &str) -> Value {
    json!({ "prompt": p, "country": "US" })
}

/// Posts `body` to `path` with the app's key: status, headers, JSON body.
async fn call(
    app: &TestApp,
    path: &str,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.key)
        .json(body)
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// `(limit, current, remaining)` of the `X-Concurrency-*` headers.
fn concurrency(h: &reqwest::header::HeaderMap) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        header(h, "x-concurrency-limit"),
        header(h, "x-concurrency-current"),
        header(h, "x-concurrency-remaining"),
    )
}

/// Waits until the organization's `concurrency.used` is `n` (polling the API: a freed sync slot
/// is not a queue change anyone is notified of).
async fn wait_used(app: &TestApp, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = app.status().await;
        if st["concurrency"]["used"] == json!(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "concurrency.used never became {n}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_sync_call_answers_the_result_and_charges_the_price_plus_two() {
    let app = TestApp::builder().concurrency(3).spawn().await;
    let before = app.credits().await;
    let (s, h, b) = call(&app, "/v1/monitor/chatgpt", &prompt("best running shoes")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["success"], true);
    assert!(
        b["result"]["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{b}"
    );
    assert_eq!(b["result"]["model"], "simulated");
    // ChatGPT costs 5, and a sync call 2 more.
    assert_eq!(header(&h, "x-credits-charged"), Some(7));
    assert_eq!(header(&h, "x-credits-remaining"), Some(before - 7));
    assert_eq!(concurrency(&h), (Some(3), Some(1), Some(2)));
    assert!(h.get("x-ratelimit-limit").is_some());
    assert_eq!(app.credits().await, before - 7);
    // The slot is free again, and no task was made.
    wait_used(&app, 0).await;
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn every_monitor_endpoint_answers_its_engines_result_at_its_price() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/v1/monitor/chatgpt", prompt("a"), "text", 7),
        ("/v1/monitor/gemini", prompt("a"), "text", 6),
        ("/v1/monitor/grok", prompt("a"), "text", 6),
        ("/v1/monitor/copilot", prompt("a"), "text", 7),
        ("/v1/monitor/perplexity", prompt("a"), "text", 6),
        ("/v1/monitor/aimode", prompt("a"), "text", 6),
        (
            "/v1/monitor/google",
            json!({ "query": "a", "country": "US" }),
            "organicResults",
            5,
        ),
        (
            "/v1/monitor/google/news",
            json!({ "query": "a", "country": "US", "pages": 2 }),
            "newsResults",
            7,
        ),
    ];
    for (path, body, field, price) in cases {
        let before = app.credits().await;
        let (s, h, b) = call(&app, path, &body).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert!(b["result"].get(field).is_some(), "{path}: {b}");
        assert_eq!(header(&h, "x-credits-charged"), Some(price), "{path}");
        assert_eq!(app.credits().await, before - price, "{path}");
    }
}

#[tokio::test]
async fn an_invalid_body_is_a_400_without_concurrency_headers_and_costs_nothing() {
    let app = TestApp::spawn().await;
    let before = app.credits().await;
    for body in [
        json!({ "prompt": "a", "country": "US", "surprise": 1 }),
        json!({ "country": "US" }),
        json!({ "prompt": "a", "country": "us" }),
        json!(["not", "an", "object"]),
        // An async task's envelope is not a sync body.
        chatgpt("a"),
    ] {
        let (s, h, b) = call(&app, "/v1/monitor/chatgpt", &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
        assert!(b["error"]["details"].is_array(), "{b}");
        assert_eq!(concurrency(&h), (None, None, None));
    }
    let (s, _, b) = call(
        &app,
        "/v1/monitor/chatgpt",
        &json!({ "prompt": "a", "country": "US", "x": 1 }),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["details"][0]["field"], "x", "{b}");
    // Without a key: 401, before anything else.
    let resp = app
        .client
        .post(app.url("/v1/monitor/chatgpt"))
        .json(&json!({}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.credits().await, before);
}

#[tokio::test]
async fn too_few_credits_is_a_403_with_the_concurrency_headers_and_nothing_runs() {
    let engine = Gated::new();
    // 6 credits: a ChatGPT task (5) would fit, a sync call (7) does not.
    let app = TestApp::builder()
        .credits(6)
        .concurrency(2)
        .engine(engine.clone())
        .spawn()
        .await;
    let (s, h, b) = call(&app, "/v1/monitor/chatgpt", &prompt("a")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error"]["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(concurrency(&h), (Some(2), Some(0), Some(2)));
    assert!(h.get("x-credits-charged").is_none());
    assert_eq!(engine.calls.load(Ordering::SeqCst), 0);
    assert_eq!(app.credits().await, 6);
}

#[tokio::test]
async fn a_call_beyond_the_limit_is_a_429_at_once_and_the_slot_is_shared_with_tasks() {
    let engine = Gated::new();
    let app = TestApp::builder()
        .concurrency(1)
        .engine(engine.clone())
        .spawn()
        .await;
    let before = app.credits().await;
    // A sync call holds the organization's only slot...
    let first = spawn_post(
        &app,
        app.client.clone(),
        "/v1/monitor/gemini",
        prompt("first"),
    );
    engine.wait_entered().await;
    // ...so another is refused at once, with the numbers...
    let (s, h, b) = call(&app, "/v1/monitor/chatgpt", &prompt("second")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], "CONCURRENCY_LIMIT_EXCEEDED");
    assert_eq!(b["error"]["details"], json!({ "limit": 1 }));
    assert_eq!(concurrency(&h), (Some(1), Some(2), Some(0)));
    assert!(h.get("retry-after").is_none());
    // ...the status shows the slot in use but no task processing...
    let st = app.status().await;
    assert_eq!(st["concurrency"], json!({ "used": 1, "max": 1 }), "{st}");
    assert_eq!(st["processingTasks"], 0);
    // ...and an async task waits for it.
    let (s, b) = app.create_task(&chatgpt("queued")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    assert_eq!(app.get_task(&id).await.1["task"]["status"], "QUEUED");
    assert_eq!(engine.calls.load(Ordering::SeqCst), 1);
    // The sync call ends: charged once (Gemini 4 + 2); the task runs next.
    engine.release.add_permits(1);
    let resp = first.await.expect("joined").expect("answered");
    assert_eq!(resp.status(), StatusCode::OK);
    engine.wait_entered().await;
    engine.release.add_permits(1);
    app.drain().await;
    assert_eq!(app.get_task(&id).await.1["task"]["status"], "COMPLETED");
    assert_eq!(app.credits().await, before - 6 - 5);
}

#[tokio::test]
async fn a_processing_task_takes_the_slot_a_sync_call_needs() {
    let engine = Gated::new();
    let app = TestApp::builder()
        .concurrency(1)
        .engine(engine.clone())
        .spawn()
        .await;
    assert_eq!(app.create_task(&chatgpt("task")).await.0, StatusCode::OK);
    engine.wait_entered().await;
    let (s, h, b) = call(&app, "/v1/monitor/chatgpt", &prompt("sync")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], "CONCURRENCY_LIMIT_EXCEEDED");
    assert_eq!(concurrency(&h), (Some(1), Some(2), Some(0)));
    engine.release.add_permits(1);
    app.drain().await;
    engine.release.add_permits(1);
    let (s, h, _) = call(&app, "/v1/monitor/chatgpt", &prompt("sync")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(concurrency(&h), (Some(1), Some(1), Some(0)));
}

#[tokio::test]
async fn a_client_that_goes_away_frees_the_slot_cancels_the_attempt_and_pays_nothing() {
    let engine = Gated::new();
    let app = TestApp::builder()
        .concurrency(1)
        .engine(engine.clone())
        .spawn()
        .await;
    let before = app.credits().await;
    // A client of its own: aborting the call closes its connection.
    let call = spawn_post(
        &app,
        reqwest::Client::new(),
        "/v1/monitor/chatgpt",
        prompt("gone"),
    );
    engine.wait_entered().await;
    wait_used(&app, 1).await;
    // The client goes away mid-call: its connection closes.
    call.abort();
    let _ = call.await;
    wait_used(&app, 0).await;
    assert_eq!(
        engine.cancelled.load(Ordering::SeqCst),
        1,
        "the attempt in flight was cancelled"
    );
    assert_eq!(app.credits().await, before, "nothing charged");
    // The slot is really free: the next call gets it.
    engine.release.add_permits(1);
    let (s, _, b) = call_ok(&app).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.credits().await, before - 7);
}

async fn call_ok(app: &TestApp) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    call(app, "/v1/monitor/chatgpt", &prompt("next")).await
}

#[tokio::test]
async fn all_attempts_failing_is_a_500_maximum_retries_and_nothing_is_charged() {
    let engine = Arc::new(AlwaysFails(AtomicUsize::new(0), 0));
    let app = TestApp::builder()
        .concurrency(2)
        .engine(engine.clone())
        .spawn()
        .await;
    let before = app.credits().await;
    let (s, h, b) = call(&app, "/v1/monitor/perplexity", &prompt("a")).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    assert_eq!(b["error"]["code"], "INTERNAL_SERVER_ERROR");
    assert_eq!(b["error"]["message"], "Maximum retries exceeded");
    assert_eq!(engine.0.load(Ordering::SeqCst), 5, "five attempts");
    assert_eq!(concurrency(&h), (Some(2), Some(1), Some(1)));
    assert!(h.get("x-credits-charged").is_none());
    assert_eq!(app.credits().await, before);
    wait_used(&app, 0).await;
}

#[tokio::test]
async fn no_attempt_starts_after_the_budget() {
    // Each attempt takes 300 ms and fails; the budget is 100 ms: the first attempt runs (it
    // started in time), the second would start after the budget.
    let engine = Arc::new(AlwaysFails(AtomicUsize::new(0), 300));
    let app = TestApp::builder()
        .engine(engine.clone())
        .sync_budget(Duration::from_millis(100))
        .spawn()
        .await;
    let before = app.credits().await;
    let (s, _, b) = call(&app, "/v1/monitor/grok", &prompt("a")).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    assert_eq!(
        b["error"]["message"],
        "Maximum timeout (5 minutes) exceeded"
    );
    assert_eq!(engine.0.load(Ordering::SeqCst), 1);
    assert_eq!(app.credits().await, before);
}

#[tokio::test]
async fn an_html_result_links_to_a_page_cloro_serves() {
    let app = TestApp::spawn().await;
    let body = json!({ "prompt": "a", "country": "US", "include": { "html": true } });
    let (s, _, b) = call(&app, "/v1/monitor/chatgpt", &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let link = b["result"]["html"].as_str().expect("html link").to_owned();
    assert!(link.starts_with(&app.base), "{link}");
    let page = app.client.get(&link).send().await.expect("answered");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("text");
    assert!(html.contains("<html"), "{html}");
}

/// The simulator (a few ms per call), counting the calls in flight and the most at once.
struct Counting {
    inner: SimulatedEngine,
    now: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Engine for Counting {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        struct Out<'a>(&'a AtomicUsize);
        impl Drop for Out<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        let _out = Out(&self.now);
        self.inner.execute(task).await
    }
}

#[tokio::test]
async fn sync_calls_async_tasks_and_disconnects_never_exceed_the_limit_nor_leak_a_slot() {
    const LIMIT: u32 = 3;
    let engine = Arc::new(Counting {
        inner: SimulatedEngine {
            latency: LatencyRange {
                min_ms: 1,
                max_ms: 8,
            },
            failure_rate: 0.0,
        },
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let app = TestApp::builder()
        .concurrency(LIMIT)
        .engine(engine.clone())
        .spawn()
        .await;
    let before = app.credits().await;
    // 20 tasks queued in one batch, and 60 sync calls from 12 clients at once; every fifth
    // call's client goes away mid-call. (Whether a call finds a free slot depends on timing:
    // answered and refused calls are both fine; the invariants below are what must hold.)
    const TASKS: i64 = 20;
    let tasks: Vec<Value> = (0..TASKS).map(|i| chatgpt(&format!("task {i}"))).collect();
    assert_eq!(app.batch(&json!(tasks)).await.0, StatusCode::OK);
    let mut clients = Vec::new();
    for c in 0..12 {
        let (url, key) = (app.url("/v1/monitor/chatgpt"), app.key.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut refused) = (0i64, 0i64);
            for i in 0..5 {
                let send = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&prompt(&format!("call {c}/{i}")))
                    .send();
                if (c * 5 + i) % 5 == 4 {
                    // Gone after at most 3 ms: sometimes before, sometimes during the call.
                    let _ = tokio::time::timeout(Duration::from_millis(3), send).await;
                    continue;
                }
                let resp = send.await.expect("answered");
                match resp.status() {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => refused += 1,
                    other => panic!("unexpected {other}"),
                }
            }
            (ok, refused)
        }));
    }
    let mut ok = 0;
    for c in clients {
        ok += c.await.expect("client").0;
    }
    app.drain().await;
    wait_used(&app, 0).await;
    let most = engine.most.load(Ordering::SeqCst);
    assert!(
        most <= LIMIT as usize,
        "{most} calls at once, limit {LIMIT}"
    );
    let st = app.status().await;
    assert_eq!(st["queuedTasks"], 0);
    assert_eq!(st["processingTasks"], 0);
    // Charged: every answered sync call (7) and every task (5); the calls whose client left
    // may have been answered before it did (then charged) or not: the balance says which.
    let spent = before - app.credits().await;
    let left = spent - TASKS * 5 - ok * 7;
    assert!(
        left >= 0 && left % 7 == 0 && left <= 12 * 7,
        "spent {spent}, ok {ok}"
    );
}

/// An engine that panics.
struct Panics;

#[async_trait]
impl Engine for Panics {
    async fn execute(&self, _: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        panic!("engine bug");
    }
}

#[tokio::test]
async fn an_engine_that_panics_is_a_500_and_the_slot_comes_back() {
    let app = TestApp::builder()
        .concurrency(1)
        .engine(Arc::new(Panics))
        .spawn()
        .await;
    let before = app.credits().await;
    for _ in 0..3 {
        // Each call gets the one slot: the previous call's slot came back.
        let (s, _, b) = call(&app, "/v1/monitor/chatgpt", &prompt("a")).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
        assert_eq!(b["error"]["code"], "INTERNAL_SERVER_ERROR");
        wait_used(&app, 0).await;
    }
    assert_eq!(app.credits().await, before);
}

#[tokio::test]
async fn the_rate_limit_comes_before_validation_and_has_no_concurrency_headers() {
    let app = TestApp::builder().rate_limit(1).spawn().await;
    let (s, _, b) = call(&app, "/v1/monitor/chatgpt", &prompt("a")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The same second: the bucket of this route is empty, even for a bad body...
    let (s, h, b) = call(&app, "/v1/monitor/chatgpt", &json!({"bad": true})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(concurrency(&h), (None, None, None));
    assert_eq!(header(&h, "x-ratelimit-remaining"), Some(0));
    // ...while another monitor route has a bucket of its own.
    let (s, _, b) = call(&app, "/v1/monitor/gemini", &prompt("a")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
