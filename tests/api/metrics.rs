//! `GET /metrics` (issue 13): the admin token guards it, and the numbers are exactly the work
//! done (on both stores: `CLORO_TEST_STORE=postgres` runs this file on the cluster store).

use cloro::metrics::sample;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, priority_task as task};

const TOKEN: &str = "admin-s3cret-token";

async fn scrape(app: &TestApp, token: Option<&str>) -> (StatusCode, String) {
    app.get_with_token("/metrics", token).await
}

#[tokio::test]
async fn metrics_need_the_admin_token_and_are_not_served_without_one() {
    let app = TestApp::builder().admin_token(TOKEN, true).spawn().await;
    let (status, body) = scrape(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let v: Value = serde_json::from_str(&body).expect("the error envelope");
    assert_eq!(v["success"], false, "{v}");
    let (status, _) = scrape(&app, Some("not-the-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An API key is not the admin token.
    let (status, _) = scrape(&app, Some(&app.key.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = scrape(&app, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");

    let without = TestApp::spawn().await;
    let (status, _) = scrape(&without, Some(TOKEN)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no token configured: not served"
    );
}

#[tokio::test]
async fn a_scrape_shows_exactly_the_work_submitted_and_done() {
    let app = TestApp::builder()
        .admin_token(TOKEN, true)
        .concurrency(3)
        .failure_rate(0.0)
        .paused()
        .spawn()
        .await;
    app.submit_mix(&[("CHATGPT", 5, 3), ("GOOGLE", 9, 2)]).await;
    let (_, m) = scrape(&app, Some(TOKEN)).await;
    let org = app.org_id.as_str();
    let queued =
        |m: &str, p: &str| sample(m, "cloro_queued_tasks", &[("org", org), ("priority", p)]);
    assert_eq!(queued(&m, "5"), Some(3.0), "{m}");
    assert_eq!(queued(&m, "9"), Some(2.0), "{m}");
    assert_eq!(queued(&m, "1"), None, "{m}");
    assert_eq!(
        sample(&m, "cloro_concurrency_limit", &[("org", org)]),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "cloro_processing_tasks", &[("org", org)]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "cloro_http_requests_total",
            &[
                ("route", "/v1/async/task"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        Some(5.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "cloro_tasks_finished_total",
            &[("outcome", "completed"), ("task_type", "CHATGPT")]
        ),
        None,
        "nothing ran yet"
    );

    app.resume();
    app.drain().await;
    let (_, m) = scrape(&app, Some(TOKEN)).await;
    for (task_type, n) in [("CHATGPT", 3.0), ("GOOGLE", 2.0)] {
        assert_eq!(
            sample(
                &m,
                "cloro_tasks_finished_total",
                &[("outcome", "completed"), ("task_type", task_type)]
            ),
            Some(n),
            "{m}"
        );
        for histogram in [
            "cloro_task_queue_wait_seconds_count",
            "cloro_task_execution_seconds_count",
        ] {
            assert_eq!(
                sample(&m, histogram, &[("task_type", task_type)]),
                Some(n),
                "{m}"
            );
        }
    }
    assert_eq!(
        sample(
            &m,
            "cloro_engine_calls_total",
            &[("engine", "simulated"), ("outcome", "ok")]
        ),
        Some(5.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "cloro_engine_in_flight", &[("engine", "simulated")]),
        Some(0.0)
    );
    assert_eq!(queued(&m, "5"), None, "the queue drained: {m}");
    assert_eq!(
        sample(&m, "cloro_processing_tasks", &[("org", org)]),
        Some(0.0)
    );
    assert_eq!(sample(&m, "cloro_webhook_backlog", &[]), Some(0.0), "{m}");
    // Label sets stay bounded: no task id, no raw path.
    let (_, b) = app.create_task(&task("CHATGPT", 1)).await;
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    let _ = app.get_task(&id).await;
    let (_, m) = scrape(&app, Some(TOKEN)).await;
    assert!(!m.contains(&id), "a task id in the labels: {m}");
    assert!(
        m.contains("route=\"/v1/async/task/{taskId}\""),
        "the route's template: {m}"
    );
}

#[tokio::test]
async fn without_organization_labels_the_queue_is_summed() {
    let app = TestApp::builder()
        .admin_token(TOKEN, false)
        .paused()
        .spawn()
        .await;
    for _ in 0..4 {
        let (s, b) = app.create_task(&task("CHATGPT", 7)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (_, m) = scrape(&app, Some(TOKEN)).await;
    assert_eq!(
        sample(&m, "cloro_queued_tasks", &[("priority", "7")]),
        Some(4.0),
        "{m}"
    );
    assert!(!m.contains(&app.org_id), "no organization label: {m}");
}

#[tokio::test]
async fn an_idle_organization_is_listed_with_its_limit_on_both_stores() {
    let app = TestApp::builder()
        .admin_token(TOKEN, true)
        .paused()
        .spawn()
        .await;
    // Created while the server runs, never used: no task, no request.
    let (idle, _key) = app.create_org("free", Some(100), Some(7), None);
    let (_, m) = scrape(&app, Some(TOKEN)).await;
    let org = idle.as_str();
    assert_eq!(
        sample(&m, "cloro_concurrency_limit", &[("org", org)]),
        Some(7.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "cloro_processing_tasks", &[("org", org)]),
        Some(0.0),
        "{m}"
    );
}
