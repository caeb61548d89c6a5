//! Real adapters through the HTTP API: an engines file points every task type at a local fake
//! upstream that answers with the providers' documented fixtures (each fixture names its
//! source in its `_source` field, see `src/engines/*/fixtures/`). Runs on both stores.
//!
//! Waits are on the server's change feed (a task state changed) and on the fake's own counters,
//! never on elapsed time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode as AxStatus, Uri};
use axum::response::{IntoResponse, Response};
use cloro::queue::EngineRoutes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const OPENAI: &str = include_str!("../../src/engines/responses/fixtures/openai_answer.json");
const XAI: &str = include_str!("../../src/engines/responses/fixtures/xai_answer.json");
const PPLX: &str = include_str!("../../src/engines/responses/fixtures/perplexity_answer.json");
const AZURE: &str = include_str!("../../src/engines/responses/fixtures/azure_answer.json");
const GEMINI: &str = include_str!("../../src/engines/gemini/fixtures/grounded.json");
const GOOGLE: &str = include_str!("../../src/engines/serpapi/fixtures/google_page1.json");
const OVERVIEW: &str = include_str!("../../src/engines/serpapi/fixtures/google_ai_overview.json");
const NEWS: &str = include_str!("../../src/engines/serpapi/fixtures/news.json");
const AIMODE: &str = include_str!("../../src/engines/serpapi/fixtures/aimode.json");

/// The key every engine of these tests is given; it must never come back out.
const SECRET: &str = "sk-test-4f1e9c0d2b7a";

/// What the fake answers to the Responses-format calls: the fixture, or an error status with a
/// body, for the first `times` calls (then the fixture).
#[derive(Clone)]
struct Trouble {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    times: u32,
}

/// The fake upstream: every provider under its own path prefix.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<AtomicU32>,
    in_flight: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
    trouble: Option<Trouble>,
    delay: Duration,
    changed: Arc<tokio::sync::Notify>,
    /// When set, every Responses call waits for a permit before it answers.
    hold: Option<Arc<tokio::sync::Semaphore>>,
    /// Per Responses call in arrival order: whether its body mentions `SYNC-CALL`.
    order: Arc<std::sync::Mutex<Vec<bool>>>,
}

fn json_reply(body: &str) -> Response {
    ([("content-type", "application/json")], body.to_owned()).into_response()
}

async fn responses(
    State(f): State<Fake>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Ok(mut order) = f.order.lock() {
        order.push(String::from_utf8_lossy(&body).contains("SYNC-CALL"));
    }
    let key_ok = headers
        .get("authorization")
        .or_else(|| headers.get("api-key"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.ends_with(SECRET));
    assert!(key_ok, "the adapter sends its key");
    let n = f.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let now = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    f.most.fetch_max(now, Ordering::SeqCst);
    f.changed.notify_waiters();
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    if let Some(hold) = &f.hold
        && let Ok(permit) = hold.acquire().await
    {
        permit.forget();
    }
    f.in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Some(t) = &f.trouble
        && n <= t.times
    {
        let mut r = (
            AxStatus::from_u16(t.status).unwrap_or(AxStatus::INTERNAL_SERVER_ERROR),
            t.body.clone(),
        )
            .into_response();
        for (k, v) in &t.headers {
            if let Ok(v) = v.parse() {
                r.headers_mut().insert(*k, v);
            }
        }
        return r;
    }
    let path = uri.path();
    let body = if path.starts_with("/xai/") {
        XAI
    } else if path.starts_with("/pplx/") {
        PPLX
    } else if path.starts_with("/azure/") {
        AZURE
    } else {
        OPENAI
    };
    json_reply(body)
}

async fn gemini(headers: HeaderMap) -> Response {
    let ok = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == SECRET);
    assert!(ok, "the Gemini adapter sends its key in x-goog-api-key");
    json_reply(GEMINI)
}

async fn serp(Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q.get("api_key").map(String::as_str), Some(SECRET));
    match (
        q.get("engine").map(String::as_str),
        q.get("tbm").map(String::as_str),
    ) {
        (Some("google"), Some("nws")) => json_reply(NEWS),
        (Some("google"), _) => json_reply(GOOGLE),
        (Some("google_ai_overview"), _) => json_reply(OVERVIEW),
        (Some("google_ai_mode"), _) => json_reply(AIMODE),
        _ => (AxStatus::BAD_REQUEST, r#"{"error":"Unsupported engine"}"#).into_response(),
    }
}

/// Serves `fake` on 127.0.0.1:<random>; returns its address.
async fn serve(fake: Fake) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/openai/v1/responses", axum::routing::post(responses))
        .route("/xai/v1/responses", axum::routing::post(responses))
        .route("/pplx/v1/responses", axum::routing::post(responses))
        .route("/azure/openai/v1/responses", axum::routing::post(responses))
        .route("/gemini/v1beta/models/{*rest}", axum::routing::post(gemini))
        .route("/serp/search.json", axum::routing::get(serp))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// An engines file for the fake at `addr` (`extra` is added to the `openai` engine).
fn routes(addr: std::net::SocketAddr, openai_extra: &str) -> EngineRoutes {
    let text = format!(
        r#"
[engines.openai]
kind = "openai-responses"
provider = "openai"
base_url = "http://{addr}/openai/v1"
api_key_env = "FAKE_KEY"
model = "gpt-5-mini"
{openai_extra}

[engines.grok]
kind = "openai-responses"
provider = "xai"
base_url = "http://{addr}/xai/v1"
api_key_env = "FAKE_KEY"
model = "grok-4"

[engines.perplexity]
kind = "openai-responses"
provider = "perplexity"
base_url = "http://{addr}/pplx/v1"
api_key_env = "FAKE_KEY"
model = "perplexity/sonar"

[engines.azure]
kind = "openai-responses"
provider = "azure"
base_url = "http://{addr}/azure/openai/v1"
api_key_env = "FAKE_KEY"
model = "my-deployment"

[engines.gemini]
kind = "gemini"
base_url = "http://{addr}/gemini"
api_key_env = "FAKE_KEY"
model = "gemini-2.5-flash"

[engines.serp]
kind = "serpapi"
base_url = "http://{addr}/serp"
api_key_env = "FAKE_KEY"

[task_types]
CHATGPT = "openai"
GROK = "grok"
PERPLEXITY = "perplexity"
COPILOT = "azure"
GEMINI = "gemini"
GOOGLE = "serp"
GOOGLE_NEWS = "serp"
AIMODE = "serp"
"#
    );
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("engines.toml");
    std::fs::write(&path, text).expect("write");
    EngineRoutes::load(&path, &|name| {
        (name == "FAKE_KEY").then(|| SECRET.to_owned())
    })
    .expect("the engines file loads")
}

/// Runs `f`, failing the test after 30 s (a broken rule must fail, not hang).
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out waiting for the server")
}

/// Waits until `id` is terminal; returns its record.
async fn finished(app: &TestApp, id: &str) -> Value {
    within(finished_unbounded(app, id)).await
}

async fn finished_unbounded(app: &TestApp, id: &str) -> Value {
    let mut changes = app.store().changes();
    loop {
        let (status, task) = app.get_task(id).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        if matches!(
            task["task"]["status"].as_str(),
            Some("COMPLETED" | "FAILED")
        ) {
            return task;
        }
        changes.changed().await.expect("the store is open");
    }
}

async fn submit(app: &TestApp, body: Value) -> String {
    let (status, v) = app.create_task(&body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["task"]["id"].as_str().expect("id").to_owned()
}

fn chat(task_type: &str) -> Value {
    json!({"taskType": task_type, "payload": {"prompt": "best espresso machine", "country": "FR",
           "include": {"markdown": true, "rawResponse": true}}})
}

fn search(task_type: &str) -> Value {
    json!({"taskType": task_type, "payload": {"query": "best espresso machine", "country": "FR"}})
}

/// Every URL of `urls` occurs in `fixture` (results carry upstream URLs, never invented ones).
fn all_from(fixture: &str, urls: &[&Value], what: &str) {
    assert!(!urls.is_empty(), "{what}: no URLs");
    for u in urls {
        let u = u.as_str().expect("a URL string");
        let bare = u.split('?').next().unwrap_or(u);
        assert!(fixture.contains(bare), "{what}: {u} is not in the fixture");
    }
}

#[tokio::test]
async fn every_task_type_completes_on_its_configured_engine() {
    let addr = serve(Fake::default()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let mut ids = Vec::new();
    for t in ["CHATGPT", "GROK", "PERPLEXITY", "COPILOT", "GEMINI"] {
        ids.push((t, submit(&app, chat(t)).await));
    }
    for t in ["GOOGLE", "GOOGLE_NEWS"] {
        ids.push((t, submit(&app, search(t)).await));
    }
    let aimode = json!({"taskType": "AIMODE", "payload": {"prompt": "best espresso machine", "country": "FR"}});
    ids.push(("AIMODE", submit(&app, aimode).await));
    for (t, id) in ids {
        let task = finished(&app, &id).await;
        assert_eq!(task["task"]["status"], "COMPLETED", "{t}: {task}");
        let r = &task["response"];
        let raw = task.to_string();
        assert!(!raw.contains(SECRET), "{t}: the key leaked: {raw}");
        assert!(!raw.contains(concat!("cdn.", "cloro.dev")), "{t}: {raw}");
        let fixture = match t {
            "CHATGPT" => OPENAI,
            "GROK" => XAI,
            "PERPLEXITY" => PPLX,
            "COPILOT" => AZURE,
            "GEMINI" => GEMINI,
            "GOOGLE" => GOOGLE,
            "GOOGLE_NEWS" => NEWS,
            _ => AIMODE,
        };
        match t {
            "GOOGLE" => {
                let links: Vec<&Value> = r["organicResults"]
                    .as_array()
                    .expect("organicResults")
                    .iter()
                    .map(|o| &o["link"])
                    .collect();
                all_from(fixture, &links, t);
            }
            "GOOGLE_NEWS" => {
                let links: Vec<&Value> = r["newsResults"]
                    .as_array()
                    .expect("newsResults")
                    .iter()
                    .map(|o| &o["link"])
                    .collect();
                all_from(fixture, &links, t);
            }
            _ => {
                assert!(
                    r["text"].as_str().is_some_and(|s| !s.is_empty()),
                    "{t}: {r}"
                );
                let urls: Vec<&Value> = r["sources"]
                    .as_array()
                    .expect("sources")
                    .iter()
                    .map(|s| &s["url"])
                    .collect();
                all_from(fixture, &urls, t);
            }
        }
        if ["CHATGPT", "GROK", "PERPLEXITY", "COPILOT"].contains(&t) {
            // Where the published shape has a `model` (not PERPLEXITY's), it is the upstream's.
            let model: Value = serde_json::from_str(fixture).expect("fixture");
            if t != "PERPLEXITY" {
                assert_eq!(r["model"], model["model"], "{t}: the model that answered");
            }
            assert!(r["markdown"].is_string(), "{t}: {r}");
        }
    }
    // Every call carried the key the file named; none went to the simulator.
    let (status, ready) = app.get_as("/readyz", &app.key).await;
    assert_eq!(status, StatusCode::OK);
    let engines = ready["engines"].as_array().expect("engines listed");
    assert_eq!(engines.len(), 6);
    assert!(engines.iter().all(|e| e["health"] == "ok"), "{ready}");
}

#[tokio::test]
async fn max_in_flight_holds_and_other_engines_keep_running() {
    let fake = Fake {
        delay: Duration::from_millis(40),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder()
        .concurrency(20)
        .engines(routes(addr, "max_in_flight = 2"))
        .spawn()
        .await;
    let mut chats = Vec::new();
    for _ in 0..12 {
        chats.push(submit(&app, chat("CHATGPT")).await);
    }
    // While CHATGPT is saturated, a GEMINI task on another engine completes.
    let other = submit(&app, chat("GEMINI")).await;
    assert_eq!(finished(&app, &other).await["task"]["status"], "COMPLETED");
    for id in &chats {
        assert_eq!(finished(&app, id).await["task"]["status"], "COMPLETED");
    }
    let most = fake.most.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} calls at once, max_in_flight is 2"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 12);
}

#[tokio::test]
async fn a_429_pauses_the_engine_and_costs_no_attempt() {
    // Six 429s in a row: more than the 5 attempts a task has. Had they cost attempts, the task
    // would fail; they cost none, so it completes on the seventh call.
    let fake = Fake {
        trouble: Some(Trouble {
            status: 429,
            headers: vec![("retry-after", "0.02".into())],
            body:
                json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                    "param": null, "code": "rate_limit_exceeded"}})
                .to_string(),
            times: 6,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let id = submit(&app, chat("CHATGPT")).await;
    let task = finished(&app, &id).await;
    assert_eq!(task["task"]["status"], "COMPLETED", "{task}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn a_bad_key_keeps_the_queue_queued_and_readyz_reports_it() {
    // OpenAI's documented 401 (https://platform.openai.com/docs/guides/error-codes), its
    // message holding the key, as a hostile or careless upstream might.
    let fake = Fake {
        trouble: Some(Trouble {
            status: 401,
            headers: Vec::new(),
            body: json!({"error": {"message": format!("Incorrect API key provided: {SECRET}."),
                                    "type": "invalid_request_error", "param": null,
                                    "code": "invalid_api_key"}})
            .to_string(),
            times: u32::MAX,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder()
        .concurrency(3)
        .engines(routes(addr, ""))
        .spawn()
        .await;
    let mut chats = Vec::new();
    for _ in 0..30 {
        chats.push(submit(&app, chat("CHATGPT")).await);
    }
    // Wait until the refusal is recorded: the engine is failing and nothing is running.
    let mut changes = app.store().changes();
    within(async {
        loop {
            let (_, ready) = app.get_as("/readyz", &app.key).await;
            let failing = ready["engines"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["name"] == "openai"))
                .is_some_and(|e| e["health"] == "failing");
            if failing && app.status().await["processingTasks"] == 0 {
                let text = ready.to_string();
                assert!(text.contains("Incorrect API key"), "{text}");
                assert!(
                    !text.contains(SECRET),
                    "the key leaked into /readyz: {text}"
                );
                break;
            }
            changes.changed().await.expect("open");
        }
    })
    .await;
    // Another engine keeps running.
    let other = submit(&app, search("GOOGLE")).await;
    assert_eq!(finished(&app, &other).await["task"]["status"], "COMPLETED");
    // Not one CHATGPT task failed: all wait QUEUED, and at most the organization's 3 slots
    // met the refusal.
    for id in &chats {
        let (_, t) = app.get_task(id).await;
        assert_eq!(t["task"]["status"], "QUEUED", "{t}");
    }
    let calls = fake.calls.load(Ordering::SeqCst);
    assert!((1..=3).contains(&calls), "{calls} calls met the bad key");
}

#[tokio::test]
async fn an_upstream_bad_request_fails_the_task_with_its_message_and_never_the_key() {
    let fake = Fake {
        trouble: Some(Trouble {
            status: 400,
            headers: Vec::new(),
            body:
                json!({"error": {"message": format!("Invalid 'model' for key {SECRET}: no access"),
                                    "type": "invalid_request_error", "param": "model",
                                    "code": null}})
                .to_string(),
            times: u32::MAX,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let id = submit(&app, chat("CHATGPT")).await;
    let task = finished(&app, &id).await;
    assert_eq!(task["task"]["status"], "FAILED", "{task}");
    let text = task.to_string();
    assert!(text.contains("no access"), "the upstream's message: {text}");
    assert!(!text.contains(SECRET), "the key leaked: {text}");
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "a bad request is not retried"
    );
}

#[tokio::test]
async fn a_task_shows_the_usage_its_upstream_reported() {
    let addr = serve(Fake::default()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let chatgpt = submit(&app, chat("CHATGPT")).await;
    let gemini = submit(&app, chat("GEMINI")).await;
    let google = submit(&app, search("GOOGLE")).await;
    // openai_answer.json: usage.input_tokens 8120, output_tokens 412; one `search` call (its
    // `open_page` call reads a page of that search).
    let task = finished(&app, &chatgpt).await;
    assert_eq!(task["task"]["status"], "COMPLETED", "{task}");
    assert_eq!(
        task["task"]["usage"],
        json!({"inputTokens": 8120, "outputTokens": 412, "searches": 1}),
        "{task}"
    );
    // grounded.json: promptTokenCount 8 + toolUsePromptTokenCount 120, candidatesTokenCount
    // 31, two webSearchQueries.
    let task = finished(&app, &gemini).await;
    assert_eq!(
        task["task"]["usage"],
        json!({"inputTokens": 128, "outputTokens": 31, "searches": 2}),
        "{task}"
    );
    // One page asked, no AI Overview follow-up: one search.json call, no tokens.
    let task = finished(&app, &google).await;
    assert_eq!(task["task"]["usage"], json!({"searches": 1}), "{task}");
}

#[tokio::test]
async fn a_simulated_task_has_no_usage() {
    let app = TestApp::spawn().await;
    let id = submit(&app, chat("CHATGPT")).await;
    let task = finished(&app, &id).await;
    assert_eq!(task["task"]["status"], "COMPLETED", "{task}");
    assert!(task["task"].get("usage").is_none(), "{task}");
}

#[tokio::test]
async fn usage_sums_the_attempts_that_reported_one() {
    // A 500 reports nothing: only the answer's usage counts.
    let fake = Fake {
        trouble: Some(Trouble {
            status: 500,
            headers: Vec::new(),
            body: json!({"error": {"message": "The server had an error", "type": "server_error",
                                   "param": null, "code": null}})
            .to_string(),
            times: 1,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let id = submit(&app, chat("CHATGPT")).await;
    let task = finished(&app, &id).await;
    assert_eq!(task["task"]["status"], "COMPLETED", "{task}");
    assert_eq!(task["task"]["attempts"], 2, "{task}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        task["task"]["usage"],
        json!({"inputTokens": 8120, "outputTokens": 412, "searches": 1}),
        "{task}"
    );

    // A run that failed with HTTP 200 and was billed, then the answer: both count.
    let mut failed: Value = serde_json::from_str(include_str!(
        "../../src/engines/responses/fixtures/perplexity_failed.json"
    ))
    .expect("fixture");
    failed["usage"] = json!({"input_tokens": 30, "output_tokens": 5});
    let fake = Fake {
        trouble: Some(Trouble {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: failed.to_string(),
            times: 1,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let id = submit(&app, chat("CHATGPT")).await;
    let task = finished(&app, &id).await;
    assert_eq!(task["task"]["status"], "COMPLETED", "{task}");
    assert_eq!(task["task"]["attempts"], 2, "{task}");
    assert_eq!(
        task["task"]["usage"],
        json!({"inputTokens": 8150, "outputTokens": 417, "searches": 1}),
        "{task}"
    );
}

/// Posts a sync call with the app's key: status, `Retry-After`, body.
async fn sync_call(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Option<String>, Value) {
    let resp = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.key)
        .json(body)
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_monitor_endpoint_answers_from_its_configured_engine() {
    let addr = serve(Fake::default()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let prompt = json!({"prompt": "best espresso machine", "country": "FR"});
    let query = json!({"query": "best espresso machine", "country": "FR"});
    for (path, body, field) in [
        ("/v1/monitor/chatgpt", &prompt, "text"),
        ("/v1/monitor/grok", &prompt, "text"),
        ("/v1/monitor/perplexity", &prompt, "text"),
        ("/v1/monitor/copilot", &prompt, "text"),
        ("/v1/monitor/gemini", &prompt, "text"),
        ("/v1/monitor/aimode", &prompt, "text"),
        ("/v1/monitor/google", &query, "organicResults"),
        ("/v1/monitor/google/news", &query, "newsResults"),
    ] {
        let (s, _, b) = within(sync_call(&app, path, body)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert!(b["result"].get(field).is_some(), "{path}: {b}");
        assert_ne!(b["result"]["model"], "simulated", "{path}: {b}");
        assert!(!b.to_string().contains(SECRET), "{path}: the key leaked");
    }
}

#[tokio::test]
async fn sync_calls_wait_for_room_under_max_in_flight_instead_of_failing() {
    let fake = Fake {
        delay: Duration::from_millis(30),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder()
        .concurrency(10)
        .engines(routes(addr, "max_in_flight = 1"))
        .spawn()
        .await;
    let body = json!({"prompt": "best espresso machine", "country": "FR"});
    let calls: Vec<_> = (0..4)
        .map(|_| {
            spawn_post(
                &app,
                app.client.clone(),
                "/v1/monitor/chatgpt",
                body.clone(),
            )
        })
        .collect();
    for c in calls {
        let resp = within(c).await.expect("joined").expect("answered");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(
        fake.most.load(Ordering::SeqCst),
        1,
        "max_in_flight = 1 held"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_sync_call_waits_out_a_429_pause_and_then_answers() {
    let fake = Fake {
        trouble: Some(Trouble {
            status: 429,
            headers: vec![("retry-after", "0.05".into())],
            body:
                json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                    "param": null, "code": "rate_limit_exceeded"}})
                .to_string(),
            times: 2,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let before = app.credits().await;
    let body = json!({"prompt": "best espresso machine", "country": "FR"});
    let (s, _, b) = within(sync_call(&app, "/v1/monitor/chatgpt", &body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    assert_eq!(app.credits().await, before - 7);
}

#[tokio::test]
async fn a_refused_key_answers_503_with_retry_after_and_costs_nothing() {
    let fake = Fake {
        trouble: Some(Trouble {
            status: 401,
            headers: Vec::new(),
            body: json!({"error": {"message": format!("Incorrect API key provided: {SECRET}."),
                                    "type": "invalid_request_error", "param": null,
                                    "code": "invalid_api_key"}})
            .to_string(),
            times: u32::MAX,
        }),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder().engines(routes(addr, "")).spawn().await;
    let before = app.credits().await;
    let body = json!({"prompt": "best espresso machine", "country": "FR"});
    for _ in 0..3 {
        let (s, retry, b) = within(sync_call(&app, "/v1/monitor/chatgpt", &body)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_eq!(b["error"]["code"], "SERVICE_UNAVAILABLE");
        let retry: u64 = retry.and_then(|r| r.parse().ok()).expect("Retry-After");
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(!b.to_string().contains(SECRET), "the key leaked: {b}");
    }
    // Only the first call met the upstream; the others were told at once.
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(app.credits().await, before);
}

#[tokio::test]
async fn a_sync_call_waiting_for_its_engine_goes_ahead_of_queued_tasks() {
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let fake = Fake {
        hold: Some(hold.clone()),
        ..Fake::default()
    };
    let addr = serve(fake.clone()).await;
    let app = TestApp::builder()
        .concurrency(10)
        .engines(routes(addr, "max_in_flight = 1"))
        .spawn()
        .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&app, chat("CHATGPT")).await);
    }
    // The first task is with the upstream; the other three wait for the engine.
    within(async {
        loop {
            let notified = fake.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if fake.calls.load(Ordering::SeqCst) > 0 {
                break;
            }
            notified.await;
        }
    })
    .await;
    // A sync call comes: it holds a slot of the organization (the running task holds the
    // other) and waits for the engine.
    let call = spawn_post(
        &app,
        app.client.clone(),
        "/v1/monitor/chatgpt",
        json!({"prompt": "SYNC-CALL espresso", "country": "FR"}),
    );
    within(async {
        // Polled: neither taking a slot nor waiting for the engine is a queue change the feed
        // reports. The slot alone is not enough: the call waits for the engine a moment after
        // it took its slot, and a queued task could start in between.
        while app.status().await["concurrency"]["used"] != 2
            || app
                .engines
                .sync_waiting(cloro::domain::types::TaskType::Chatgpt)
                != 1
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Now the upstream answers everything.
    hold.add_permits(1_000);
    let resp = within(call).await.expect("joined").expect("answered");
    assert_eq!(resp.status(), StatusCode::OK);
    // The call was the engine's second: no queued task went before it.
    let order = fake.order.lock().map(|o| o.clone()).unwrap_or_default();
    assert_eq!(order.get(..2), Some(&[false, true][..]), "{order:?}");
    for id in &ids {
        assert_eq!(finished(&app, id).await["task"]["status"], "COMPLETED");
    }
    assert_eq!(fake.most.load(Ordering::SeqCst), 1);
}
