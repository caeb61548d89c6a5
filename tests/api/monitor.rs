use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, chatgpt, with};

#[tokio::test]
async fn status_counts_queued_tasks_by_priority_descending() {
    let app = TestApp::builder().paused().concurrency(5).spawn().await;
    for p in [1, 5, 5, 10] {
        assert_eq!(
            app.create_task(&with(chatgpt("p"), "priority", json!(p)))
                .await
                .0,
            StatusCode::OK
        );
    }
    let st = app.status().await;
    assert_eq!(
        st,
        json!({
            "queuedTasks": 4,
            "processingTasks": 0,
            "priorityBreakdown": [
                { "priority": 10, "count": 1 }, { "priority": 5, "count": 2 }, { "priority": 1, "count": 1 }
            ],
            "concurrency": { "used": 0, "max": 5 }
        })
    );
}

#[tokio::test]
async fn status_shows_processing_tasks_inside_the_concurrency_limit() {
    let app = TestApp::builder()
        .concurrency(2)
        .latency_ms(60_000)
        .spawn()
        .await;
    let body: Vec<_> = (0..5).map(|i| chatgpt(&i.to_string())).collect();
    assert_eq!(app.batch(&json!(body)).await.0, StatusCode::OK);
    // Wait (by change signal) until the dispatcher has taken the two slots.
    let store = app.store();
    let mut changes = store.changes();
    while store.totals().await.expect("totals").1 < 2 {
        changes.changed().await.expect("store alive");
    }
    let st = app.status().await;
    assert_eq!(st["processingTasks"], 2);
    assert_eq!(st["queuedTasks"], 3);
    assert_eq!(st["concurrency"], json!({ "used": 2, "max": 2 }));
}

#[tokio::test]
async fn clearing_the_queue_removes_only_queued_tasks_and_returns_the_count() {
    let app = TestApp::builder().paused().spawn().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, b) = app
            .create_task(&with(
                chatgpt(&i.to_string()),
                "idempotencyKey",
                json!(format!("k{i}")),
            ))
            .await;
        ids.push(b["task"]["id"].as_str().expect("id").to_owned());
    }
    let (s, b) = app
        .send(
            app.client
                .delete(app.url("/v1/async/queue"))
                .bearer_auth(&app.key),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({ "success": true, "cleared": 3 }));
    assert_eq!(app.status().await["queuedTasks"], 0);
    assert_eq!(app.get_task(&ids[0]).await.0, StatusCode::NOT_FOUND);
    // The keys are free again, and clearing an empty queue is fine.
    assert_eq!(
        app.create_task(&with(chatgpt("again"), "idempotencyKey", json!("k0")))
            .await
            .0,
        StatusCode::OK
    );
    let (_, b) = app
        .send(
            app.client
                .delete(app.url("/v1/async/queue"))
                .bearer_auth(&app.key),
        )
        .await;
    assert_eq!(b["cleared"], 1);
}

#[tokio::test]
async fn credits_reports_balance_cycle_and_reset() {
    let app = TestApp::builder().plan("lite").spawn().await;
    let (s, b) = app.get_as("/v1/credits", &app.key).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["remaining"], 37_500);
    assert_eq!(b["perCycle"], 37_500);
    assert!(
        b["cycleResetsAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let free = TestApp::builder().plan("free").spawn().await;
    let (_, b) = free.get_as("/v1/credits", &free.key).await;
    assert_eq!(
        b,
        json!({ "remaining": 500, "perCycle": null, "cycleResetsAt": null })
    );
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_key() {
    let app = TestApp::spawn().await;
    let (s, _) = app.send(app.client.get(app.url("/healthz"))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn when_the_store_cannot_answer_requests_get_503_with_retry_after() {
    let app = TestApp::spawn().await;
    app.server.as_ref().expect("running").store.close();
    let resp = app
        .client
        .post(app.url("/v1/async/task"))
        .bearer_auth(&app.key)
        .json(&chatgpt("x"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    let (s, b) = app.send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("SERVICE_UNAVAILABLE"))
    );
    let (s, _) = app.send(app.client.get(app.url("/healthz"))).await;
    assert_eq!(s, StatusCode::OK);
}
