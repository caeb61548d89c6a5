//! `Engine::check` of each adapter against a local fake upstream answering in the provider's
//! documented format (200, 401 with the documented error body), an unreachable upstream, a
//! slow one, and the `engines check` output.
//!
//! Bodies, from the providers' documentation:
//! * OpenAI "Retrieve model": `{id, object: "model", created, owned_by}`
//!   (developers.openai.com/api/reference/resources/models/methods/retrieve); its 401 body
//!   `{"error": {message: "Incorrect API key provided: …", type: "invalid_request_error",
//!   param: null, code: "invalid_api_key"}}` (developers.openai.com, error codes guide);
//! * xAI "Get model": `{created, id, object: "model", owned_by: "xai"}`
//!   (docs.x.ai/developers/rest-api-reference/inference/models);
//! * Azure OpenAI v1 "List models": `{object: "list", data: [{id, object: "model", …}]}`
//!   (learn.microsoft.com/rest/api/microsoft-foundry/azureopenai/models);
//! * Perplexity Agent API: a Responses-format answer `{id, object: "response", status,
//!   model, output: […]}` (docs.perplexity.ai/api-reference/agent-post);
//! * Gemini "models.get": a `Model` `{name: "models/…", displayName, …}`
//!   (ai.google.dev/api/rest/v1beta/models/get); an invalid key is a 400 `INVALID_ARGUMENT`
//!   with reason `API_KEY_INVALID` (ai.google.dev/gemini-api/docs/troubleshooting);
//! * SerpApi Account API: `{account_id, api_key, plan_name, total_searches_left,
//!   account_rate_limit_per_hour, …}` (serpapi.com/account-api); errors `{"error": "…"}`
//!   (serpapi.com/api-status-and-error-codes).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;
use crate::engines::EngineError;

const KEY: &str = "sk-check-secret-123";

/// One request the fake saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

type Answer = Arc<dyn Fn(&Seen) -> (StatusCode, Value) + Send + Sync>;

#[derive(Clone)]
struct Fake {
    answer: Answer,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay: Duration,
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
    };
    let (status, json) = (fake.answer)(&seen);
    if let Ok(mut v) = fake.seen.lock() {
        v.push(seen);
    }
    tokio::time::sleep(fake.delay).await;
    (status, axum::Json(json)).into_response()
}

async fn start_with(
    delay: Duration,
    answer: impl Fn(&Seen) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        answer: Arc::new(answer),
        seen: seen.clone(),
        delay,
    };
    let app = axum::Router::new().fallback(handle).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

async fn start(
    answer: impl Fn(&Seen) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    start_with(Duration::ZERO, answer).await
}

fn env(name: &str) -> Option<String> {
    (name == "TEST_KEY").then(|| KEY.to_owned())
}

/// The single engine of a file holding `table` (`[engines.e]` plus the lines given).
fn engine(lines: &str) -> ConfiguredEngine {
    let text = format!("[engines.e]\napi_key_env = \"TEST_KEY\"\n{lines}");
    match parse("engines.toml", &text, &env) {
        Ok(mut set) => set.engines.remove(0),
        Err(e) => panic!("{e}"),
    }
}

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().map(|v| v.clone()).unwrap_or_default()
}

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn openai_401() -> (StatusCode, Value) {
    (
        StatusCode::UNAUTHORIZED,
        json!({"error": {
            "message": format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
        }}),
    )
}

fn assert_no_key(text: &str) {
    assert!(!text.contains(KEY), "the key leaked: {text}");
}

#[tokio::test]
async fn openai_checks_the_model_with_a_free_retrieve_call() {
    let (addr, log) = start(|s| {
        if s.path == "/v1/models/gpt-5-mini" {
            (
                StatusCode::OK,
                json!({"id": "gpt-5-mini", "object": "model", "created": 1686935002, "owned_by": "system"}),
            )
        } else {
            (StatusCode::NOT_FOUND, json!({}))
        }
    })
    .await;
    let e = engine(&format!(
        "kind = \"openai-responses\"\nprovider = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"gpt-5-mini\"\n"
    ));
    let note = e.engine.check().await.expect("the check passes");
    assert_eq!(note, "model gpt-5-mini is available");
    let seen = seen(&log);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(header(&seen[0], "authorization"), format!("Bearer {KEY}"));
}

#[tokio::test]
async fn openai_with_a_wrong_key_fails_the_check_without_showing_it() {
    let (addr, _) = start(|_| openai_401()).await;
    let e = engine(&format!(
        "kind = \"openai-responses\"\nprovider = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"gpt-5-mini\"\n"
    ));
    let err = e.engine.check().await.expect_err("a refused key");
    assert!(matches!(err, EngineError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("Incorrect API key provided"), "{text}");
    assert_no_key(&text);
}

#[tokio::test]
async fn an_unknown_model_fails_the_check() {
    let (addr, _) = start(|_| {
        (
            StatusCode::NOT_FOUND,
            json!({"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.",
                             "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
        )
    })
    .await;
    let e = engine(&format!(
        "kind = \"openai-responses\"\nprovider = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"gpt-9\"\n"
    ));
    let err = e.engine.check().await.expect_err("no such model");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn xai_checks_the_model_too() {
    let (addr, log) = start(|s| {
        if s.path == "/v1/models/grok-4" {
            (
                StatusCode::OK,
                json!({"created": 1715123456, "id": "grok-4", "object": "model", "owned_by": "xai"}),
            )
        } else {
            (StatusCode::NOT_FOUND, json!({"error": "Model not found"}))
        }
    })
    .await;
    let e = engine(&format!(
        "kind = \"openai-responses\"\nprovider = \"xai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"grok-4\"\n"
    ));
    assert_eq!(
        e.engine.check().await.expect("passes"),
        "model grok-4 is available"
    );
    assert_eq!(seen(&log)[0].method, Method::GET);
}

#[tokio::test]
async fn azure_lists_the_models_with_the_api_key_header() {
    let (addr, log) = start(|s| {
        if s.path == "/openai/v1/models" && header(s, "api-key") == KEY {
            (
                StatusCode::OK,
                json!({"object": "list", "data": [
                    {"id": "gpt-4.1", "object": "model", "created": 0, "owned_by": "system"},
                    {"id": "gpt-5-mini", "object": "model", "created": 0, "owned_by": "system"}
                ]}),
            )
        } else {
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}),
            )
        }
    })
    .await;
    let e = engine(&format!(
        "kind = \"openai-responses\"\nprovider = \"azure\"\nbase_url = \"http://{addr}/openai/v1\"\nmodel = \"my-deployment\"\n"
    ));
    assert_eq!(
        e.engine.check().await.expect("passes"),
        "the key is accepted (2 models listed; deployment my-deployment not checked)"
    );
    assert_eq!(header(&seen(&log)[0], "authorization"), "");
}

#[tokio::test]
async fn perplexity_makes_the_smallest_real_call_without_a_search_tool() {
    let (addr, log) = start(|s| {
        if s.method == Method::POST && s.path == "/v1/responses" {
            (
                StatusCode::OK,
                json!({"id": "resp_1", "object": "response", "status": "completed",
                       "model": "perplexity/sonar", "output": [{"type": "message", "role": "assistant",
                       "content": [{"type": "output_text", "text": "pong", "annotations": []}]}]}),
            )
        } else {
            (StatusCode::NOT_FOUND, json!({}))
        }
    })
    .await;
    let e = engine(&format!(
        "kind = \"openai-responses\"\nprovider = \"perplexity\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"perplexity/sonar\"\n"
    ));
    assert_eq!(
        e.engine.check().await.expect("passes"),
        "model perplexity/sonar answered a 16-token test call"
    );
    let seen = seen(&log);
    let body: Value = serde_json::from_slice(&seen[0].body).expect("json body");
    assert_eq!(
        body,
        json!({"model": "perplexity/sonar", "input": "ping", "max_output_tokens": 16})
    );
    assert_eq!(header(&seen[0], "authorization"), format!("Bearer {KEY}"));
}

#[tokio::test]
async fn gemini_gets_the_model_with_or_without_v1beta_in_the_base_url() {
    for suffix in ["", "/v1beta", "/v1beta/"] {
        let (addr, log) = start(|s| {
            if s.path == "/v1beta/models/gemini-2.5-flash" {
                (
                    StatusCode::OK,
                    json!({"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash",
                           "supportedGenerationMethods": ["generateContent"]}),
                )
            } else {
                (StatusCode::NOT_FOUND, json!({}))
            }
        })
        .await;
        let e = engine(&format!(
            "kind = \"gemini\"\nbase_url = \"http://{addr}{suffix}\"\nmodel = \"gemini-2.5-flash\"\n"
        ));
        assert_eq!(
            e.engine.check().await.expect("passes"),
            "models/gemini-2.5-flash is available",
            "{suffix}"
        );
        let seen = seen(&log);
        assert_eq!(header(&seen[0], "x-goog-api-key"), KEY);
        assert!(!seen[0].query.contains(KEY), "the key stays out of the URL");
    }
}

#[tokio::test]
async fn gemini_reads_an_invalid_key_as_refused() {
    let (addr, _) = start(|_| {
        (
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]}}),
        )
    })
    .await;
    let e = engine(&format!(
        "kind = \"gemini\"\nbase_url = \"http://{addr}\"\nmodel = \"gemini-2.5-flash\"\n"
    ));
    let err = e.engine.check().await.expect_err("refused");
    assert!(matches!(err, EngineError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("API key not valid"), "{err}");
}

fn serp_account(left: i64) -> Value {
    json!({
        "account_id": "5ac54d6adefb2f1dba1663f5", "api_key": KEY, "account_email": "demo@serpapi.com",
        "plan_id": "bigdata", "plan_name": "Big Data Plan", "searches_per_month": 30000,
        "plan_searches_left": left, "extra_credits": 0, "total_searches_left": left,
        "this_month_usage": 24042, "last_hour_searches": 42, "account_rate_limit_per_hour": 6000
    })
}

#[tokio::test]
async fn serpapi_reads_the_free_account_api_and_never_its_echoed_key() {
    let (addr, log) = start(|s| {
        if s.path == "/account.json" {
            (StatusCode::OK, serp_account(5958))
        } else {
            (StatusCode::NOT_FOUND, json!({"error": "nope"}))
        }
    })
    .await;
    let e = engine(&format!(
        "kind = \"serpapi\"\nbase_url = \"http://{addr}\"\n"
    ));
    let note = e.engine.check().await.expect("passes");
    assert_eq!(note, "Big Data Plan, 5958 searches left, 6000 per hour");
    let seen = seen(&log);
    assert_eq!(seen.len(), 1, "no search is spent");
    assert_eq!(seen[0].query, format!("api_key={KEY}"));
}

#[tokio::test]
async fn serpapi_with_a_wrong_key_or_no_searches_left_fails() {
    let (addr, _) = start(|_| {
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"}),
        )
    })
    .await;
    let e = engine(&format!(
        "kind = \"serpapi\"\nbase_url = \"http://{addr}\"\n"
    ));
    let err = e.engine.check().await.expect_err("refused");
    assert!(matches!(err, EngineError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("Invalid API key"), "{err}");

    let (addr, _) = start(|_| (StatusCode::OK, serp_account(0))).await;
    let e = engine(&format!(
        "kind = \"serpapi\"\nbase_url = \"http://{addr}\"\n"
    ));
    let err = e.engine.check().await.expect_err("no searches left");
    assert_eq!(
        err.to_string(),
        "upstream refused the key: Big Data Plan: no searches left"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_fails_the_check() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let e = engine(&format!(
        "kind = \"serpapi\"\nbase_url = \"http://127.0.0.1:{port}\"\n"
    ));
    let err = e.engine.check().await.expect_err("unreachable");
    assert!(matches!(err, EngineError::Retryable(_)), "{err:?}");
    assert!(
        err.to_string().contains("cannot reach the upstream"),
        "{err}"
    );
    assert_no_key(&err.to_string());
}

#[tokio::test]
async fn the_simulator_has_nothing_to_check() {
    let set = parse("engines.toml", "[engines.s]\nkind = \"simulated\"\n", &env).expect("valid");
    assert_eq!(
        set.engines[0].engine.check().await.expect("ok"),
        "nothing to check"
    );
}

#[tokio::test]
async fn check_all_runs_every_engine_at_once_each_within_its_timeout() {
    let slow = Duration::from_millis(1500);
    let (ok_addr, _) = start_with(slow, |_| (StatusCode::OK, serp_account(10))).await;
    let (bad_addr, _) = start(|_| openai_401()).await;
    let text = format!(
        "[engines.serp]\nkind = \"serpapi\"\napi_key_env = \"TEST_KEY\"\nbase_url = \"http://{ok_addr}\"\n\
         [engines.slow]\nkind = \"serpapi\"\napi_key_env = \"TEST_KEY\"\nbase_url = \"http://{ok_addr}\"\ntimeout_ms = 200\n\
         [engines.openai]\nkind = \"openai-responses\"\nprovider = \"openai\"\napi_key_env = \"TEST_KEY\"\n\
         base_url = \"http://{bad_addr}/v1\"\nmodel = \"gpt-5-mini\"\n\
         [task_types]\nGOOGLE = \"serp\"\nGOOGLE_NEWS = \"slow\"\nCHATGPT = \"openai\"\n"
    );
    let set = parse("engines.toml", &text, &env).expect("valid");
    let started = std::time::Instant::now();
    let results = cli::check_all(&set).await;
    assert!(
        started.elapsed() < slow + Duration::from_millis(1000),
        "the checks ran one after the other: {:?}",
        started.elapsed()
    );
    let by_name = |n: &str| {
        results
            .iter()
            .find(|r| r.engine == n)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {n}"))
    };
    let serp = by_name("serp");
    assert!(serp.ok, "{serp:?}");
    assert!(serp.latency >= slow, "{serp:?}");
    let timed_out = by_name("slow");
    assert!(!timed_out.ok);
    assert!(
        timed_out.latency < Duration::from_millis(1000),
        "{timed_out:?}"
    );
    let refused = by_name("openai");
    assert!(!refused.ok);
    assert!(
        refused.message.starts_with(
            "upstream refused the key: invalid_api_key: Incorrect API key provided: [redacted]"
        ),
        "{refused:?}"
    );
    assert_no_key(&refused.message);
    let default = by_name(cli::DEFAULT_ENGINE);
    assert!(
        default.ok,
        "the other task types run on the default simulator"
    );

    let json: Value = serde_json::from_str(&cli::check_json(&results)).expect("json");
    let rows = json.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2]["engine"], "openai");
    assert_eq!(rows[2]["kind"], "openai-responses");
    assert_eq!(rows[2]["status"], "error");
    assert!(rows[2]["latencyMs"].is_u64());
    let table = cli::check_table(&results);
    assert!(table.starts_with("ENGINE"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");
    assert_no_key(&table);
}
