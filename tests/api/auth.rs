use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, chatgpt};

async fn code(app: &TestApp, req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let (s, b) = app.send(req).await;
    (
        s,
        b["error"]["code"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn the_three_authentication_errors_are_distinct() {
    let app = TestApp::spawn().await;
    let url = app.url("/v1/async/status");
    let c = &app.client;
    assert_eq!(
        code(&app, c.get(&url)).await,
        (StatusCode::UNAUTHORIZED, "MISSING_API_KEY".into())
    );
    assert_eq!(
        code(
            &app,
            c.get(&url)
                .header("authorization", format!("bearer {}", app.key))
        )
        .await,
        (StatusCode::UNAUTHORIZED, "MISSING_API_KEY".into())
    );
    assert_eq!(
        code(&app, c.get(&url).header("authorization", "Basic abc")).await,
        (StatusCode::UNAUTHORIZED, "MISSING_API_KEY".into())
    );
    assert_eq!(
        code(&app, c.get(&url).bearer_auth("not-a-key")).await,
        (StatusCode::UNAUTHORIZED, "INVALID_API_KEY_FORMAT".into())
    );
    assert_eq!(
        code(
            &app,
            c.get(&url)
                .bearer_auth("sk_live_00000000000000000000000000000000")
        )
        .await,
        (
            StatusCode::UNAUTHORIZED,
            "INVALID_OR_EXPIRED_API_KEY".into()
        )
    );
    let (s, b) = app.send(c.get(&url).bearer_auth(&app.key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn an_error_envelope_has_success_false_code_message_and_timestamp() {
    let app = TestApp::spawn().await;
    let (s, b) = app.send(app.client.get(app.url("/v1/credits"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["success"], false);
    assert_eq!(b["error"]["message"], "Missing or invalid API key");
    let ts = b["error"]["timestamp"].as_str().expect("timestamp");
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z'));
    assert!(b["error"].get("details").is_none());
}

#[tokio::test]
async fn v1_routes_check_the_key_before_the_route_and_others_are_404() {
    let app = TestApp::spawn().await;
    let (s, b) = app.send(app.client.get(app.url("/v1/openapi.json"))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("MISSING_API_KEY"))
    );
    let (s, b) = app.get_as("/v1/nothing/here", &app.key).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "RESOURCE_NOT_FOUND");
    assert_eq!(b["error"]["message"], "Route not found");
    assert_eq!(b["error"]["details"]["id"], "/v1/nothing/here");
    let (s, b) = app.send(app.client.get(app.url("/"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        b,
        json!({"success": false, "error": {"code": "RESOURCE_NOT_FOUND", "message": "Route not found", "details": {"id": "/"}, "timestamp": b["error"]["timestamp"]}})
    );
    // A known path with the wrong method is answered in the envelope too.
    let (s, b) = app
        .send(
            app.client
                .put(app.url("/v1/async/status"))
                .bearer_auth(&app.key),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn an_organization_and_key_made_while_the_server_runs_work_at_once() {
    let app = TestApp::spawn().await;
    let (_, other_key) = app.create_org("lite", None, None, None);
    let (s, b) = app.get_as("/v1/credits", &other_key).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["remaining"], 37_500);
    assert_eq!(b["perCycle"], 37_500);
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let app = TestApp::spawn().await;
    let (key_id, key) = app.create_key();
    app.revoke_key(&key_id);
    let (s, b) = app.get_as("/v1/credits", &key).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_OR_EXPIRED_API_KEY"))
    );
}

#[tokio::test]
async fn organizations_never_see_each_others_tasks_or_counts() {
    let app = TestApp::builder().paused().spawn().await;
    let (s, b) = app.create_task(&chatgpt("mine")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    let (_, other) = app.create_org("lite", None, None, None);
    let (s, b) = app.get_as(&format!("/v1/async/task/{id}"), &other).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "RESOURCE_NOT_FOUND");
    let (_, st) = app.get_as("/v1/async/status", &other).await;
    assert_eq!(st["queuedTasks"], 0);
    let (_, cleared) = app
        .send(
            app.client
                .delete(app.url("/v1/async/queue"))
                .bearer_auth(&other),
        )
        .await;
    assert_eq!(cleared["cleared"], 0);
    assert_eq!(app.status().await["queuedTasks"], 1);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_latency() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/v1/async/status"))
        .send()
        .await
        .expect("sent");
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert!(resp.headers().get("x-latency-ms").is_some());
    let mine = "7d1b1c8e-8c61-4c43-9bd0-3d1f5c1f2a11";
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", mine)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(mine)
    );
}

/// Issue 12, item 13: random well-formed keys from one address are refused without a store
/// lookup once the address used up its failed-lookup budget (429 with `Retry-After`); the
/// valid key keeps working.
#[tokio::test]
async fn a_flood_of_random_keys_from_one_address_is_cut_off_and_a_valid_key_keeps_working() {
    let app = TestApp::spawn().await;
    let url = app.url("/v1/async/status");
    let (s, b) = app.send(app.client.get(&url).bearer_auth(&app.key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut limited = None;
    for i in 0..200u32 {
        let key = format!("sk_live_{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15 + 1);
        let resp = app
            .client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .expect("answered");
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = limited.expect("the flood is cut off before 200 random keys");
    assert_eq!(
        resp.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let b: serde_json::Value = resp.json().await.expect("envelope");
    assert_eq!(b["error"]["code"], "RATE_LIMIT_EXCEEDED");
    let (s, b) = app.send(app.client.get(&url).bearer_auth(&app.key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
