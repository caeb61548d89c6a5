//! A panic in an engine (issue 12, item 12): the attempt counts as a retryable failure, the
//! organization's slot is freed, and the next task runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cloro::domain::types::TaskType;
use cloro::engines::{
    Engine, EngineError, EngineOutput, EngineTask, LatencyRange, SimulatedEngine,
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, chatgpt};

/// The simulator, except that its first `panics` CHATGPT calls panic (GEMINI never does).
struct Panicky {
    inner: SimulatedEngine,
    panics: u32,
    calls: AtomicU32,
}

impl Panicky {
    fn new(panics: u32) -> Arc<Panicky> {
        Arc::new(Panicky {
            inner: SimulatedEngine {
                latency: LatencyRange {
                    min_ms: 0,
                    max_ms: 0,
                },
                failure_rate: 0.0,
            },
            panics,
            calls: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl Engine for Panicky {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        if task.task_type == TaskType::Chatgpt
            && self.calls.fetch_add(1, Ordering::SeqCst) < self.panics
        {
            panic!("the engine panics (test)");
        }
        self.inner.execute(task).await
    }
}

fn gemini(prompt: &str) -> Value {
    json!({ "taskType": "GEMINI", "payload": { "prompt": prompt, "country": "US" } })
}

/// Polls the task until it is terminal; fails the test after 15 s (a leaked slot would hang).
async fn terminal(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, b) = app.get_task(id).await;
        let status = b["task"]["status"].as_str().unwrap_or_default().to_owned();
        if status == "COMPLETED" || status == "FAILED" {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} still {status} after 15 s: {b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(app: &TestApp, body: Value) -> String {
    let (s, b) = app.create_task(&body).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{b}");
    b["task"]["id"].as_str().expect("task id").to_owned()
}

#[tokio::test]
async fn an_engine_that_always_panics_fails_its_task_after_every_attempt_and_leaks_no_slot() {
    let engine = Panicky::new(u32::MAX);
    let app = TestApp::builder()
        .concurrency(1)
        .engine(engine.clone())
        .paused()
        .spawn()
        .await;
    let boom = submit(&app, chatgpt("boom")).await;
    let next = submit(&app, gemini("next")).await;
    app.resume();

    let b = terminal(&app, &boom).await;
    assert_eq!(b["task"]["status"], "FAILED", "{b}");
    assert_eq!(b["task"]["attempts"], 5, "{b}");
    assert_eq!(
        b["response"]["error"]["message"], "Maximum retries exceeded",
        "{b}"
    );
    let b = terminal(&app, &next).await;
    assert_eq!(b["task"]["status"], "COMPLETED", "{b}");
    assert_eq!(engine.calls.load(Ordering::SeqCst), 5);

    let st = app.status().await;
    assert_eq!(st["processingTasks"], 0, "{st}");
    assert_eq!(st["concurrency"]["used"], 0, "{st}");
    // The slot is really free: one more task runs.
    let after = submit(&app, gemini("after")).await;
    assert_eq!(terminal(&app, &after).await["task"]["status"], "COMPLETED");
}

#[tokio::test]
async fn an_engine_that_panics_once_is_retried_and_the_task_completes() {
    let app = TestApp::builder()
        .concurrency(1)
        .engine(Panicky::new(1))
        .spawn()
        .await;
    let id = submit(&app, chatgpt("once")).await;
    let b = terminal(&app, &id).await;
    assert_eq!(b["task"]["status"], "COMPLETED", "{b}");
    assert_eq!(b["task"]["attempts"], 2, "{b}");
    let st = app.status().await;
    assert_eq!(st["concurrency"]["used"], 0, "{st}");
}
