//! Database faults seen through the API (cluster store only: these run with
//! `CLORO_TEST_STORE=postgres` and return at once on SQLite). An organization's row someone
//! keeps locked (a stuck node, an operator's open transaction) answers that organization's
//! submissions 503 `SERVICE_UNAVAILABLE` with `Retry-After` after the lock timeout, and
//! nobody else's.

use std::time::{Duration, Instant};

use cloro::store::Database;
use reqwest::StatusCode;
use serde_json::json;
use tokio_postgres::NoTls;

use crate::helpers::{TestApp, chatgpt};

/// Sends `body` to `path` as `key`: the status, `Retry-After` and the JSON body, and how long
/// the answer took.
async fn post(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> (StatusCode, Option<String>, serde_json::Value, Duration) {
    let started = Instant::now();
    let resp = app
        .client
        .post(app.url(path))
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered");
    let took = started.elapsed();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.expect("JSON");
    (status, retry, body, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_org_row_answers_its_submissions_503_with_retry_after_and_no_one_elses() {
    let app = TestApp::spawn().await;
    let Database::Postgres(url) = app.db.database.clone() else {
        return;
    };
    let (_other, other_key) = app.create_org("business", Some(1_000), None, None);
    let (locker, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    locker.batch_execute("BEGIN").await.expect("begin");
    locker
        .execute(
            "SELECT 1 FROM orgs WHERE public_id = $1 FOR UPDATE",
            &[&app.org_id],
        )
        .await
        .expect("row locked");

    // The other organization submits and its task runs.
    let (s, _, b, _) = post(&app, "/v1/async/task", &other_key, &chatgpt("other")).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // This organization's submissions, single and batch, are refused within a few seconds.
    let batch = json!([chatgpt("one"), chatgpt("two")]);
    for (path, body) in [
        ("/v1/async/task", chatgpt("mine")),
        ("/v1/async/task/batch", batch),
    ] {
        let (s, retry, b, took) = post(&app, path, &app.key, &body).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{path}: {b}");
        assert_eq!(b["error"]["code"], "SERVICE_UNAVAILABLE", "{path}: {b}");
        assert_eq!(retry.as_deref(), Some("1"), "{path}");
        assert!(took < Duration::from_secs(6), "{path}: {took:?}");
    }

    // The lock goes: this organization submits again and its task runs.
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    let (s, _, b, _) = post(&app, "/v1/async/task", &app.key, &chatgpt("mine")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.drain().await;
    let id = b["task"]["id"].as_str().expect("task id").to_owned();
    let (s, b) = app.get_task(&id).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["task"]["status"], "COMPLETED", "{b}");
}
