//! NUL characters (issue 12, item 4): PostgreSQL refuses U+0000 in `text` (and in `jsonb`
//! strings), so a NUL in any text field once made a 500 there and failed a whole batch. Every
//! string that can reach a store is refused with 400 `VALIDATION_ERROR` at its own path, on
//! both stores alike.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, chatgpt, with};

/// The field path of the first error of a single request's `VALIDATION_ERROR` envelope
/// (`details` is the list of field errors), and its message.
fn first_error(body: &Value) -> (String, String) {
    let e = &body["error"]["details"][0];
    (
        e["field"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn google(payload: Value) -> Value {
    json!({ "taskType": "GOOGLE", "payload": payload })
}

#[tokio::test]
async fn a_nul_in_any_text_field_of_a_task_is_a_400_at_its_path() {
    let app = TestApp::builder().paused().spawn().await;
    let cases = [
        (
            with(chatgpt("p"), "idempotencyKey", json!("a\u{0}")),
            "idempotencyKey",
        ),
        (
            with(
                chatgpt("p"),
                "webhook",
                json!({ "url": "https://example.com/h\u{0}" }),
            ),
            "webhook.url",
        ),
        (chatgpt("best\u{0} shoes"), "payload.prompt"),
        (
            google(json!({ "query": "q\u{0}", "gl": "us" })),
            "payload.query",
        ),
        (
            google(json!({ "query": "q", "gl": "us", "location": "Berlin\u{0}" })),
            "payload.location",
        ),
        (
            google(json!({ "query": "q", "gl": "us", "uule": "w+CAIQ\u{0}" })),
            "payload.uule",
        ),
        (
            google(json!({ "query": "q", "gl": "us", "hl": "en\u{0}" })),
            "payload.hl",
        ),
        (
            google(json!({ "url": "https://www.google.com/search?q=a\u{0}&gl=us" })),
            "payload.url",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = app.create_task(&body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR", "{field}: {b}");
        let (path, message) = first_error(&b);
        assert_eq!(path, field, "{b}");
        assert!(message.contains("NUL"), "{field}: {message}");
    }
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn a_nul_in_one_batch_item_refuses_only_that_item() {
    let app = TestApp::builder().paused().spawn().await;
    let body = json!([
        chatgpt("first"),
        with(chatgpt("second"), "idempotencyKey", json!("k\u{0}")),
        chatgpt("third"),
    ]);
    let (s, b) = app.batch(&body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["summary"],
        json!({ "total": 3, "succeeded": 2, "failed": 1 })
    );
    let r = b["results"].as_array().expect("results");
    assert_eq!(r[0]["success"], true, "{b}");
    assert_eq!(r[1]["success"], false, "{b}");
    assert_eq!(r[1]["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(
        r[1]["error"]["details"]["errors"][0]["field"],
        "idempotencyKey"
    );
    assert_eq!(r[2]["success"], true, "{b}");
    assert_eq!(app.status().await["queuedTasks"], 2);
}

#[tokio::test]
async fn a_nul_in_a_sync_body_is_a_400_at_its_path() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/v1/monitor/chatgpt"))
        .bearer_auth(&app.key)
        .json(&json!({ "prompt": "a\u{0}b", "country": "US" }))
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    let b: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "VALIDATION_ERROR", "{b}");
    let (path, message) = first_error(&b);
    assert_eq!(path, "prompt", "{b}");
    assert!(message.contains("NUL"), "{message}");
}
