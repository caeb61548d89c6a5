//! `GET /dashboard` (issue 13): the page is a static shell; its data is behind the admin token
//! and shows exactly the queue and the work done (on both stores: `CLORO_TEST_STORE=postgres`).

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, priority_task as task};

const TOKEN: &str = "dash-s3cret-token";

async fn data(app: &TestApp, token: Option<&str>) -> (StatusCode, Value) {
    let (status, body) = app.get_with_token("/dashboard/data", token).await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

fn org<'a>(d: &'a Value, org_id: &str) -> &'a Value {
    d["orgs"]
        .as_array()
        .and_then(|orgs| orgs.iter().find(|o| o["orgId"] == org_id))
        .unwrap_or_else(|| panic!("{org_id} not in {d}"))
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .expect("a series")
        .iter()
        .map(|n| n.as_u64().expect("a count"))
        .sum()
}

#[tokio::test]
async fn the_page_is_a_shell_and_its_data_needs_the_admin_token() {
    let app = TestApp::builder().admin_token(TOKEN, true).spawn().await;
    let (status, body) = data(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(data(&app, Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        data(&app, Some(&app.key.clone())).await.0,
        StatusCode::UNAUTHORIZED,
        "an API key is not the admin token"
    );
    let (status, body) = data(&app, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The page and its files: no data in them, a strict policy, nothing inline.
    let page = app
        .client
        .get(app.url("/dashboard"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(r#"<script src="/dashboard/app.js"></script>"#),
        "{html}"
    );
    assert!(!html.contains(&app.org_id), "the shell holds no data");
    for (path, kind) in [
        ("/dashboard/app.js", "javascript"),
        ("/dashboard/app.css", "css"),
    ] {
        let r = app.client.get(app.url(path)).send().await.expect("asset");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"].to_str().expect("ascii");
        assert!(ct.contains(kind), "{path}: {ct}");
    }

    let without = TestApp::spawn().await;
    assert_eq!(
        data(&without, Some(TOKEN)).await.0,
        StatusCode::NOT_FOUND,
        "no token configured: not served"
    );
}

#[tokio::test]
async fn the_data_shows_exactly_the_queue_and_the_work_done() {
    let app = TestApp::builder()
        .admin_token(TOKEN, true)
        .concurrency(3)
        .paused()
        .spawn()
        .await;
    app.submit_mix(&[("CHATGPT", 5, 3), ("GOOGLE", 9, 2)]).await;
    let (_, d) = data(&app, Some(TOKEN)).await;
    let o = org(&d, &app.org_id);
    assert_eq!(o["queued"], 5, "{o}");
    assert_eq!(
        o["byPriority"],
        json!([{"priority": 9, "queued": 2}, {"priority": 5, "queued": 3}]),
        "{o}"
    );
    assert_eq!(
        (o["processing"].as_u64(), o["concurrencyLimit"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(sum(&o["completed"]), 0, "nothing ran yet: {o}");
    assert_eq!(d["node"]["workersBusy"], 0, "{d}");
    assert_eq!(d["node"]["workers"], 64, "{d}");
    assert_eq!(d["node"]["webhookBacklog"], 0, "{d}");
    assert_eq!(d["bucketMs"], 5000);

    app.resume();
    app.drain().await;
    let (_, d) = data(&app, Some(TOKEN)).await;
    let o = org(&d, &app.org_id);
    assert_eq!(o["queued"], 0, "{o}");
    assert_eq!(o["byPriority"], json!([]), "{o}");
    assert_eq!(sum(&o["completed"]), 5, "{o}");
    assert_eq!(sum(&o["failed"]), 0, "{o}");
    assert_eq!(o["completed"].as_array().map(Vec::len), Some(120));
    let waits: Vec<&Value> = o["waitMs"]
        .as_array()
        .expect("waits")
        .iter()
        .filter(|w| !w.is_null())
        .collect();
    assert!(!waits.is_empty(), "queue waits were recorded: {o}");
    assert_eq!(o["failures"], json!([]), "{o}");
    assert_eq!(d["node"]["workersBusy"], 0, "{d}");
}

#[tokio::test]
async fn failed_tasks_are_listed_with_their_errors() {
    let app = TestApp::builder()
        .admin_token(TOKEN, true)
        .failure_rate(1.0)
        .spawn()
        .await;
    let mut ids = BTreeSet::new();
    for _ in 0..2 {
        let (s, b) = app.create_task(&task("CHATGPT", 1)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ids.insert(b["task"]["id"].as_str().expect("id").to_owned());
    }
    app.drain().await;
    let (_, d) = data(&app, Some(TOKEN)).await;
    let o = org(&d, &app.org_id);
    assert_eq!(sum(&o["failed"]), 2, "{o}");
    assert_eq!(sum(&o["completed"]), 0, "{o}");
    let failures = o["failures"].as_array().expect("failures");
    let listed: BTreeSet<String> = failures
        .iter()
        .map(|f| f["taskId"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(listed, ids, "{o}");
    for f in failures {
        let (_, t) = app.get_task(f["taskId"].as_str().expect("id")).await;
        assert_eq!(t["task"]["status"], "FAILED", "{t}");
        assert_eq!(f["taskType"], "CHATGPT");
        assert!(f["error"]["error"]["message"].is_string(), "{f}");
    }
}

#[tokio::test]
async fn a_request_since_a_version_answers_when_the_store_changes() {
    let app = TestApp::builder()
        .admin_token(TOKEN, true)
        .paused()
        .spawn()
        .await;
    let (_, d) = data(&app, Some(TOKEN)).await;
    let version = d["version"].as_u64().expect("version");
    let waiting = {
        let req = app
            .client
            .get(app.url(&format!("/dashboard/data?since={version}")))
            .bearer_auth(TOKEN);
        tokio::spawn(async move { req.send().await.expect("sent").json::<Value>().await })
    };
    let (s, b) = app.create_task(&task("CHATGPT", 4)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Whether it asked before or after the submission, it answers with the new task (well
    // before the 2 s bound: the store changed).
    let started = std::time::Instant::now();
    let d = waiting.await.expect("joined").expect("JSON");
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
    assert_ne!(d["version"].as_u64(), Some(version), "{d}");
    assert_eq!(org(&d, &app.org_id)["queued"], 1, "{d}");
    // A malformed `since` is ignored: an answer at once.
    let (s, _) = app
        .send(
            app.client
                .get(app.url("/dashboard/data?since=soon"))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}
