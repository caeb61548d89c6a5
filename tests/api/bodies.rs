//! Every answer body byte for byte: field order, `null` versus an absent field, number and time
//! formats. The other modules compare parsed values, which ignore the order of fields and
//! the spacing; these pin the bytes, with only what changes from run to run (ids, times,
//! latencies, the simulated engine's text) replaced by a placeholder.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, chatgpt, with};

/// Keys whose values differ from run to run; a non-null value becomes `"<key>"`.
const REDACTED: &[&str] = &[
    "id",
    "createdAt",
    "startedAt",
    "completedAt",
    "deliveredAt",
    "cycleResetsAt",
    "timestamp",
    "latencyMs",
];

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if REDACTED.contains(&k.as_str()) && !v.is_null() {
                    *v = Value::String(format!("<{k}>"));
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The body with its run-dependent values redacted, after checking that the bytes are exactly
/// the compact rendering of what they parse to (so comparing the redacted rendering compares
/// the bytes).
fn pinned(text: &str) -> String {
    let mut v: Value = serde_json::from_str(text).expect("JSON body");
    assert_eq!(
        serde_json::to_string(&v).expect("render"),
        text,
        "not the compact rendering"
    );
    // Every redacted time is RFC 3339 in UTC with exactly three fraction digits.
    check_times(&v);
    redact(&mut v);
    serde_json::to_string(&v).expect("render")
}

fn check_times(v: &Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k.ends_with("At") || k == "timestamp" {
                    if let Some(t) = v.as_str() {
                        let b = t.as_bytes();
                        assert!(b.len() == 24 && b[19] == b'.' && b[23] == b'Z', "{k}: {t}");
                    }
                } else {
                    check_times(v);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(check_times),
        _ => {}
    }
}

async fn raw(app: &TestApp, req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.expect("sent");
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{}",
        app.base
    );
    (status, resp.text().await.expect("body"))
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, String) {
    raw(app, app.client.get(app.url(path)).bearer_auth(&app.key)).await
}

async fn post(app: &TestApp, path: &str, body: &Value) -> (StatusCode, String) {
    raw(
        app,
        app.client
            .post(app.url(path))
            .bearer_auth(&app.key)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn a_submission_and_a_queued_task() {
    let app = TestApp::builder().paused().spawn().await;
    let body = with(
        with(chatgpt("hi"), "priority", json!(5)),
        "idempotencyKey",
        json!("k-1"),
    );
    let (s, text) = post(&app, "/v1/async/task", &body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        pinned(&text),
        r#"{"success":true,"task":{"id":"<id>","taskType":"CHATGPT","status":"QUEUED","priority":5,"createdAt":"<createdAt>","latencyMs":null,"idempotencyKey":"k-1","startedAt":null,"completedAt":null,"attempts":0},"credits":{"creditsToCharge":5,"creditsCharged":null}}"#
    );
    let id = serde_json::from_str::<Value>(&text).expect("json")["task"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (s, text) = get(&app, &format!("/v1/async/task/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        pinned(&text),
        r#"{"task":{"id":"<id>","taskType":"CHATGPT","status":"QUEUED","priority":5,"createdAt":"<createdAt>","latencyMs":null,"idempotencyKey":"k-1","startedAt":null,"completedAt":null,"attempts":0},"credits":{"creditsToCharge":5,"creditsCharged":null}}"#
    );
    let (_, text) = post(&app, "/v1/async/task", &chatgpt("no key")).await;
    assert_eq!(
        pinned(&text),
        r#"{"success":true,"task":{"id":"<id>","taskType":"CHATGPT","status":"QUEUED","priority":1,"createdAt":"<createdAt>","latencyMs":null,"idempotencyKey":null,"startedAt":null,"completedAt":null,"attempts":0},"credits":{"creditsToCharge":5,"creditsCharged":null}}"#
    );
}

#[tokio::test]
async fn a_completed_and_a_failed_task() {
    let app = TestApp::builder().credits(100).spawn().await;
    let (_, text) = post(&app, "/v1/async/task", &chatgpt("done")).await;
    let id = serde_json::from_str::<Value>(&text).expect("json")["task"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.drain().await;
    let (s, text) = get(&app, &format!("/v1/async/task/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    // The engine's result is passed through as stored; only its position is pinned here.
    let mut v: Value = serde_json::from_str(&text).expect("json");
    assert!(v["response"].is_object());
    v["response"] = json!("<response>");
    let text = serde_json::to_string(&v).expect("render");
    assert_eq!(
        pinned(&text),
        r#"{"task":{"id":"<id>","taskType":"CHATGPT","status":"COMPLETED","priority":1,"createdAt":"<createdAt>","latencyMs":"<latencyMs>","idempotencyKey":null,"startedAt":"<startedAt>","completedAt":"<completedAt>","attempts":1},"credits":{"creditsToCharge":5,"creditsCharged":5},"response":"<response>"}"#
    );

    let app = TestApp::builder()
        .failure_rate(1.0)
        .credits(100)
        .spawn()
        .await;
    let hooked = with(
        chatgpt("doomed"),
        "webhook",
        json!({ "url": "https://example.invalid/hook" }),
    );
    let (_, text) = post(&app, "/v1/async/task", &hooked).await;
    let id = serde_json::from_str::<Value>(&text).expect("json")["task"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.drain().await;
    let (s, text) = get(&app, &format!("/v1/async/task/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        pinned(&text),
        r#"{"task":{"id":"<id>","taskType":"CHATGPT","status":"FAILED","priority":1,"createdAt":"<createdAt>","latencyMs":"<latencyMs>","idempotencyKey":null,"startedAt":"<startedAt>","completedAt":"<completedAt>","attempts":5},"credits":{"creditsToCharge":5,"creditsCharged":0},"webhook":{"url":"https://example.invalid/hook","delivered":false,"deliveredAt":null},"response":{"error":{"code":"INTERNAL_SERVER_ERROR","message":"Maximum retries exceeded"}}}"#
    );
}

#[tokio::test]
async fn a_batch_with_queued_invalid_and_duplicate_items() {
    let app = TestApp::builder().paused().spawn().await;
    let keyed = with(chatgpt("a"), "idempotencyKey", json!("dup"));
    let body = json!([keyed, { "taskType": "CHATGPT", "payload": {} }, keyed]);
    let (s, text) = post(&app, "/v1/async/task/batch", &body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        pinned(&text),
        concat!(
            r#"{"success":true,"summary":{"total":3,"succeeded":1,"failed":2},"results":["#,
            r#"{"success":true,"index":0,"task":{"id":"<id>","taskType":"CHATGPT","status":"QUEUED","priority":1,"createdAt":"<createdAt>","latencyMs":null,"idempotencyKey":"dup","startedAt":null,"completedAt":null,"attempts":0},"credits":{"creditsToCharge":5,"creditsCharged":null}},"#,
            r#"{"success":false,"index":1,"error":{"code":"VALIDATION_ERROR","message":"Invalid task at index 1","details":{"errors":[{"field":"payload.prompt","message":"Prompt cannot be empty"},{"field":"payload.country","message":"Invalid input: expected string, received undefined"}]},"timestamp":"<timestamp>"}},"#,
            r#"{"success":false,"index":2,"error":{"code":"RESOURCE_ALREADY_EXISTS","message":"Task already exists","details":{"field":"idempotencyKey","value":"dup"},"timestamp":"<timestamp>"}}]}"#
        )
    );
}

#[tokio::test]
async fn the_queue_status_and_clearing_it() {
    let app = TestApp::builder().paused().concurrency(3).spawn().await;
    for p in [2, 7, 7] {
        post(
            &app,
            "/v1/async/task",
            &with(chatgpt("p"), "priority", json!(p)),
        )
        .await;
    }
    let (s, text) = get(&app, "/v1/async/status").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        pinned(&text),
        r#"{"queuedTasks":3,"processingTasks":0,"priorityBreakdown":[{"priority":7,"count":2},{"priority":2,"count":1}],"concurrency":{"used":0,"max":3}}"#
    );
    let (s, text) = raw(
        &app,
        app.client
            .delete(app.url("/v1/async/queue"))
            .bearer_auth(&app.key),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(pinned(&text), r#"{"success":true,"cleared":3}"#);
    let (_, text) = get(&app, "/v1/async/status").await;
    assert_eq!(
        pinned(&text),
        r#"{"queuedTasks":0,"processingTasks":0,"priorityBreakdown":[],"concurrency":{"used":0,"max":3}}"#
    );
}

#[tokio::test]
async fn credits_on_a_paid_and_on_the_free_plan() {
    let app = TestApp::builder().credits(1234).spawn().await;
    let (s, text) = get(&app, "/v1/credits").await;
    assert_eq!(s, StatusCode::OK);
    let pinned_text = pinned(&text);
    assert!(
        pinned_text.starts_with(r#"{"remaining":1234,"perCycle":"#)
            && pinned_text.ends_with(r#","cycleResetsAt":"<cycleResetsAt>"}"#),
        "{pinned_text}"
    );
    let app = TestApp::builder().plan("free").spawn().await;
    let (_, text) = get(&app, "/v1/credits").await;
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        pinned(&text),
        format!(
            r#"{{"remaining":{},"perCycle":null,"cycleResetsAt":null}}"#,
            v["remaining"]
        )
    );
}

#[tokio::test]
async fn reference_lists_and_health() {
    let app = TestApp::spawn().await;
    let (s, text) = get(&app, "/v1/countries").await;
    assert_eq!(s, StatusCode::OK);
    let codes: Vec<&str> = cloro::domain::countries::ALL_COUNTRIES
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(text, serde_json::to_string(&codes).expect("render"));
    let (_, text) = get(&app, "/v1/states?country=US").await;
    assert!(
        text.starts_with(r#"[{"code":"AL","name":"Alabama"},{"code":"AK","name":"Alaska"},"#),
        "{text}"
    );
    assert_eq!(pinned(&text), text);
    let (_, text) = get(&app, "/v1/states?country=GB").await;
    assert_eq!(text, "[]");
    let (s, text) = raw(&app, app.client.get(app.url("/healthz"))).await;
    assert_eq!((s, text.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));
    let (s, text) = raw(&app, app.client.get(app.url("/readyz"))).await;
    assert_eq!(
        (s, text.as_str()),
        (StatusCode::OK, r#"{"status":"ready"}"#)
    );
}

#[tokio::test]
async fn error_envelopes() {
    let app = TestApp::spawn().await;
    let (s, text) = get(&app, "/v1/async/task/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        pinned(&text),
        r#"{"success":false,"error":{"code":"RESOURCE_NOT_FOUND","message":"Task not found","details":{"id":"<id>"},"timestamp":"<timestamp>"}}"#
    );
    let (s, text) = raw(&app, app.client.get(app.url("/v1/credits"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        pinned(&text),
        r#"{"success":false,"error":{"code":"MISSING_API_KEY","message":"Missing or invalid API key","timestamp":"<timestamp>"}}"#
    );
    let (s, text) = post(&app, "/v1/async/task", &json!({ "taskType": "CHATGPT" })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        pinned(&text),
        r#"{"success":false,"error":{"code":"VALIDATION_ERROR","message":"Request validation failed","details":[{"field":"payload","message":"Invalid input: expected object, received undefined"}],"timestamp":"<timestamp>"}}"#
    );
}
