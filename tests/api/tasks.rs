use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, chatgpt, with};

#[tokio::test]
async fn a_task_is_created_queued_with_its_price() {
    let app = TestApp::builder().paused().spawn().await;
    let body = json!({
        "taskType": "CHATGPT",
        "payload": { "prompt": "best running shoes", "country": "US", "include": { "ads": true } },
        "priority": 5,
        "idempotencyKey": "your-custom-identifier-123"
    });
    let (s, b) = app.create_task(&body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["success"], true);
    let t = &b["task"];
    assert_eq!(t["taskType"], "CHATGPT");
    assert_eq!(t["status"], "QUEUED");
    assert_eq!(t["priority"], 5);
    assert_eq!(t["latencyMs"], Value::Null);
    assert_eq!(t["idempotencyKey"], "your-custom-identifier-123");
    assert_eq!(t["attempts"], 0);
    assert_eq!(t["startedAt"], Value::Null);
    assert_eq!(t["completedAt"], Value::Null);
    assert!(uuid::Uuid::parse_str(t["id"].as_str().expect("id")).is_ok());
    let created = t["createdAt"].as_str().expect("createdAt");
    assert_eq!(created.len(), 24);
    assert_eq!(
        b["credits"],
        json!({ "creditsToCharge": 7, "creditsCharged": null })
    );
    let (s, got) = app.get_task(t["id"].as_str().expect("id")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["task"], b["task"]);
    assert!(got.get("response").is_none());
    assert!(got.get("success").is_none());
}

#[tokio::test]
async fn a_task_runs_to_completion_and_is_charged_once() {
    let app = TestApp::builder().credits(100).spawn().await;
    let (s, b) = app.create_task(&chatgpt("what is cloro")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    app.drain().await;
    let (s, t) = app.get_task(&id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["task"]["status"], "COMPLETED");
    assert_eq!(t["task"]["attempts"], 1);
    assert!(t["task"]["latencyMs"].as_i64().is_some_and(|l| l >= 0));
    assert!(t["task"]["startedAt"].is_string());
    assert!(t["task"]["completedAt"].is_string());
    assert_eq!(
        t["credits"],
        json!({ "creditsToCharge": 5, "creditsCharged": 5 })
    );
    assert_eq!(t["response"]["simulated"], true);
    assert!(t["response"]["text"].is_string(), "{t}");
    assert!(t.get("webhook").is_none());
    assert_eq!(app.credits().await, 95);
}

#[tokio::test]
async fn a_task_that_fails_every_attempt_is_failed_after_five_and_costs_nothing() {
    let app = TestApp::builder()
        .failure_rate(1.0)
        .credits(100)
        .spawn()
        .await;
    let (_, b) = app
        .create_task(&with(
            chatgpt("doomed"),
            "webhook",
            json!({ "url": "https://example.com/hook" }),
        ))
        .await;
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    app.drain().await;
    let (_, t) = app.get_task(&id).await;
    assert_eq!(t["task"]["status"], "FAILED");
    assert_eq!(t["task"]["attempts"], 5);
    assert!(t["task"]["latencyMs"].as_i64().is_some());
    assert_eq!(t["credits"]["creditsCharged"], 0);
    assert_eq!(
        t["response"],
        json!({ "error": { "code": "INTERNAL_SERVER_ERROR", "message": "Maximum retries exceeded" } })
    );
    assert_eq!(
        t["webhook"],
        json!({ "url": "https://example.com/hook", "delivered": false, "deliveredAt": null })
    );
    assert_eq!(app.credits().await, 100);
}

#[tokio::test]
async fn validation_lists_every_bad_field_with_its_path_and_stores_nothing() {
    let app = TestApp::builder().paused().spawn().await;
    let body = json!({
        "taskType": "CHATGPT",
        "payload": { "prompt": "", "country": "us", "colour": "red" },
        "priority": 11,
        "extra": true
    });
    let (s, b) = app.create_task(&body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(b["error"]["message"], "Request validation failed");
    let fields: Vec<&str> = b["error"]["details"]
        .as_array()
        .expect("details array")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    for f in [
        "payload.prompt",
        "payload.country",
        "payload.colour",
        "priority",
        "extra",
    ] {
        assert!(fields.contains(&f), "{f} missing in {fields:?}");
    }
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn bad_json_a_wrong_content_type_and_an_empty_body_are_400_in_the_envelope() {
    let app = TestApp::spawn().await;
    let url = app.url("/v1/async/task");
    let c = &app.client;
    for req in [
        c.post(&url)
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body("{not json"),
        c.post(&url)
            .bearer_auth(&app.key)
            .header("content-type", "text/plain")
            .body("{}"),
        c.post(&url)
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(""),
        c.post(&url)
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body("[1,2]"),
        c.post(&url)
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body("\"x\""),
    ] {
        let (s, b) = app.send(req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["success"], false);
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
    }
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_nothing_is_stored() {
    let app = TestApp::builder()
        .max_body_bytes(4096)
        .paused()
        .spawn()
        .await;
    let big = chatgpt(&"x".repeat(5000));
    let (s, b) = app.create_task(&big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn a_reused_idempotency_key_is_409_with_details() {
    let app = TestApp::builder().paused().spawn().await;
    let body = with(chatgpt("a"), "idempotencyKey", json!("k-1"));
    assert_eq!(app.create_task(&body).await.0, StatusCode::OK);
    let (s, b) = app.create_task(&body).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "RESOURCE_ALREADY_EXISTS");
    assert_eq!(
        b["error"]["details"],
        json!({ "field": "idempotencyKey", "value": "k-1" })
    );
    // Another organization may use the same key.
    let (_, other) = app.create_org("lite", None, None, None);
    assert_eq!(
        app.post_json("/v1/async/task", &other, &body).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_submissions_make_exactly_one_task() {
    let app = TestApp::builder().paused().spawn().await;
    let body = with(chatgpt("race"), "idempotencyKey", json!("same"));
    let mut handles = Vec::new();
    for _ in 0..20 {
        let req = app
            .client
            .post(app.url("/v1/async/task"))
            .bearer_auth(&app.key)
            .json(&body);
        handles.push(tokio::spawn(async move {
            req.send().await.expect("sent").status()
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.expect("request task"));
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflicts), (1, 19));
    assert_eq!(app.status().await["queuedTasks"], 1);
}

#[tokio::test]
async fn too_few_credits_is_403_and_nothing_is_queued() {
    let app = TestApp::builder().credits(4).paused().spawn().await;
    let (s, b) = app.create_task(&chatgpt("costs five")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b["error"]["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(b["error"]["message"], "Insufficient credits");
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn a_task_that_no_longer_fits_the_balance_at_pickup_fails_unstarted() {
    // 8 credits: both 5-credit tasks pass the submission check, only one fits at pickup.
    let app = TestApp::builder()
        .credits(8)
        .concurrency(1)
        .paused()
        .spawn()
        .await;
    let (_, a) = app.create_task(&chatgpt("first")).await;
    let (_, b) = app.create_task(&chatgpt("second")).await;
    app.resume();
    app.drain().await;
    let (_, a) = app.get_task(a["task"]["id"].as_str().expect("id")).await;
    let (_, b) = app.get_task(b["task"]["id"].as_str().expect("id")).await;
    assert_eq!(a["task"]["status"], "COMPLETED");
    assert_eq!(b["task"]["status"], "FAILED");
    assert_eq!(b["task"]["latencyMs"], Value::Null);
    assert_eq!(b["task"]["startedAt"], Value::Null);
    assert_eq!(b["credits"]["creditsCharged"], 0);
    assert_eq!(b["response"]["error"]["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(app.credits().await, 3);
}

#[tokio::test]
async fn the_queue_limit_is_429_with_the_limit() {
    let app = TestApp::builder().queue_limit(2).paused().spawn().await;
    assert_eq!(app.create_task(&chatgpt("1")).await.0, StatusCode::OK);
    assert_eq!(app.create_task(&chatgpt("2")).await.0, StatusCode::OK);
    let (s, b) = app.create_task(&chatgpt("3")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["error"]["code"], "QUEUE_LIMIT_EXCEEDED");
    assert_eq!(b["error"]["details"], json!({ "limit": 2 }));
    assert_eq!(
        b["error"]["message"],
        "Queue limit exceeded. Maximum 2 queued tasks allowed per organization"
    );
}

#[tokio::test]
async fn unknown_malformed_and_foreign_task_ids_are_404() {
    let app = TestApp::spawn().await;
    for id in [
        "not-a-uuid",
        "b27a21e1-7c39-4aa2-a347-23e828c426f9",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let (s, b) = app.get_task(id).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(b["error"]["code"], "RESOURCE_NOT_FOUND");
        assert_eq!(b["error"]["details"]["id"], id);
    }
}

#[tokio::test]
async fn every_task_type_completes_with_its_result_shape() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({ "taskType": "CHATGPT", "payload": { "prompt": "p", "country": "US" } }),
            "text",
        ),
        (
            json!({ "taskType": "GEMINI", "payload": { "prompt": "p", "country": "US" } }),
            "text",
        ),
        (
            json!({ "taskType": "GROK", "payload": { "prompt": "p", "country": "US" } }),
            "text",
        ),
        (
            json!({ "taskType": "COPILOT", "payload": { "prompt": "p", "country": "US" } }),
            "text",
        ),
        (
            json!({ "taskType": "PERPLEXITY", "payload": { "prompt": "p", "country": "US" } }),
            "text",
        ),
        (
            json!({ "taskType": "AIMODE", "payload": { "prompt": "p", "country": "US" } }),
            "text",
        ),
        (
            json!({ "taskType": "GOOGLE", "payload": { "query": "q", "country": "US" } }),
            "organicResults",
        ),
        (
            json!({ "taskType": "GOOGLE_NEWS", "payload": { "query": "q", "gl": "us" } }),
            "newsResults",
        ),
    ];
    let mut ids = Vec::new();
    for (body, _) in &cases {
        let (s, b) = app.create_task(body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ids.push(b["task"]["id"].as_str().expect("id").to_owned());
    }
    app.drain().await;
    for ((_, key), id) in cases.iter().zip(ids) {
        let (_, t) = app.get_task(&id).await;
        assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
        assert!(t["response"].get(*key).is_some(), "{key} missing: {t}");
        assert_eq!(t["response"]["simulated"], true);
    }
}
