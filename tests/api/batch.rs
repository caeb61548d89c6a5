use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, chatgpt, with};

#[tokio::test]
async fn a_batch_answers_per_item_in_input_order() {
    let app = TestApp::builder().paused().spawn().await;
    let body = json!([
        chatgpt("ok"),
        { "taskType": "CHATGPT", "payload": { "prompt": "x" } },
        with(chatgpt("dup"), "idempotencyKey", json!("k")),
        with(chatgpt("dup again"), "idempotencyKey", json!("k")),
        { "taskType": "GOOGLE", "payload": { "query": "q", "gl": "de", "pages": 3 }, "priority": 9 }
    ]);
    let (s, b) = app.batch(&body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["success"], true);
    assert_eq!(
        b["summary"],
        json!({ "total": 5, "succeeded": 3, "failed": 2 })
    );
    let r = b["results"].as_array().expect("results");
    let indexes: Vec<i64> = r.iter().filter_map(|x| x["index"].as_i64()).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    assert_eq!(r[0]["success"], true);
    assert_eq!(r[0]["task"]["status"], "QUEUED");
    assert_eq!(r[1]["success"], false);
    assert_eq!(r[1]["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(r[1]["error"]["message"], "Invalid task at index 1");
    assert_eq!(
        r[1]["error"]["details"]["errors"][0]["field"],
        "payload.country"
    );
    assert_eq!(r[2]["success"], true);
    assert_eq!(r[3]["error"]["code"], "RESOURCE_ALREADY_EXISTS");
    assert_eq!(r[4]["credits"]["creditsToCharge"], 7);
    assert_eq!(r[4]["task"]["priority"], 9);
    assert_eq!(app.status().await["queuedTasks"], 3);
}

#[tokio::test]
async fn a_body_that_is_not_an_array_of_1_to_500_objects_is_400() {
    let app = TestApp::builder().paused().spawn().await;
    let many: Vec<Value> = (0..501).map(|i| chatgpt(&i.to_string())).collect();
    for body in [
        json!({}),
        json!([]),
        Value::Array(many),
        json!([1]),
        json!([chatgpt("a"), "b"]),
    ] {
        let (s, b) = app.batch(&body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
    }
    assert_eq!(app.status().await["queuedTasks"], 0);
}

#[tokio::test]
async fn five_hundred_tasks_fit_in_one_batch() {
    let app = TestApp::builder().paused().spawn().await;
    let body: Vec<Value> = (0..500).map(|i| chatgpt(&format!("prompt {i}"))).collect();
    let (s, b) = app.batch(&Value::Array(body)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["summary"]["succeeded"], 500);
    assert_eq!(app.status().await["queuedTasks"], 500);
}

#[tokio::test]
async fn a_batch_that_would_overflow_the_queue_is_refused_whole() {
    let app = TestApp::builder().queue_limit(3).paused().spawn().await;
    assert_eq!(app.create_task(&chatgpt("1")).await.0, StatusCode::OK);
    let (s, b) = app
        .batch(&json!([chatgpt("2"), chatgpt("3"), chatgpt("4")]))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["error"]["code"], "QUEUE_LIMIT_EXCEEDED");
    assert_eq!(b["error"]["details"]["limit"], 3);
    assert_eq!(app.status().await["queuedTasks"], 1);
    let (s, _) = app.batch(&json!([chatgpt("2"), chatgpt("3")])).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn credits_are_checked_cumulatively_within_a_batch() {
    let app = TestApp::builder().credits(12).paused().spawn().await;
    let (s, b) = app
        .batch(&json!([chatgpt("1"), chatgpt("2"), chatgpt("3")]))
        .await;
    assert_eq!(s, StatusCode::OK);
    let codes: Vec<Value> = b["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"]["code"].clone())
        .collect();
    assert_eq!(
        codes,
        vec![Value::Null, Value::Null, json!("INSUFFICIENT_CREDITS")]
    );
    assert_eq!(
        b["summary"],
        json!({ "total": 3, "succeeded": 2, "failed": 1 })
    );
}
