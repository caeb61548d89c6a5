//! Add-on credits (issue 12, item 15): AI Mode's `expandProducts` bills up to 6 more credits
//! after the run (reference §5.6: +1 per product cluster, at most 6), so pickup must reserve
//! the most a task can cost, or the balance goes negative by the add-ons of every task running.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn aimode_with_products() -> Value {
    json!({"taskType": "AIMODE", "payload": {
        "prompt": "best espresso machine", "country": "US",
        "include": {"expandProducts": true}}})
}

#[tokio::test]
async fn tasks_whose_add_ons_could_overdraw_the_balance_are_refused_at_pickup() {
    // 8 credits: the base price of two tasks (4 each), not base + add-ons of even one (4 + 6).
    let app = TestApp::builder()
        .concurrency(2)
        .credits(8)
        .paused()
        .spawn()
        .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, b) = app.create_task(&aimode_with_products()).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ids.push(b["task"]["id"].as_str().expect("id").to_owned());
    }
    app.resume();
    app.drain().await;
    for id in &ids {
        let (_, b) = app.get_task(id).await;
        assert_eq!(b["task"]["status"], "FAILED", "{b}");
        assert_eq!(
            b["response"]["error"]["code"], "INSUFFICIENT_CREDITS",
            "{b}"
        );
    }
    let left = app.credits().await;
    assert!(left >= 0, "the balance went negative: {left}");
    assert_eq!(left, 8);
}

/// `POST /v1/monitor/aimode` with `expandProducts`: status, `X-Credits-Charged`, body.
async fn sync_with_products(app: &TestApp) -> (StatusCode, Option<i64>, Value) {
    let resp = app
        .client
        .post(app.url("/v1/monitor/aimode"))
        .bearer_auth(&app.key)
        .json(&json!({"prompt": "best espresso machine", "country": "US",
                      "include": {"expandProducts": true}}))
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    let charged = resp
        .headers()
        .get("x-credits-charged")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, charged, resp.json().await.expect("json"))
}

#[tokio::test]
async fn a_sync_call_needs_credits_for_its_price_surcharge_and_add_ons() {
    // 11 credits: the price and the surcharge (4 + 2), not the products on top (+ 6).
    let app = TestApp::builder().credits(11).spawn().await;
    let (s, charged, b) = sync_with_products(&app).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error"]["code"], "INSUFFICIENT_CREDITS", "{b}");
    assert_eq!(charged, None);
    assert_eq!(app.credits().await, 11);
    // 12 credits: admitted, charged the price, the surcharge and the products returned.
    let app = TestApp::builder().credits(12).spawn().await;
    let (s, charged, b) = sync_with_products(&app).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let products = b["result"]["productResults"].as_array().map_or(0, Vec::len) as i64;
    assert!((1..=6).contains(&products), "{b}");
    assert_eq!(charged, Some(6 + products));
    assert_eq!(app.credits().await, 12 - 6 - products);
}

#[tokio::test]
async fn a_task_whose_add_ons_fit_runs_and_is_charged_what_it_returned() {
    // 10 credits: exactly the price and the most the products can add (4 + 6).
    let app = TestApp::builder().credits(10).spawn().await;
    let (s, b) = app.create_task(&aimode_with_products()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    app.drain().await;
    let (_, b) = app.get_task(&id).await;
    assert_eq!(b["task"]["status"], "COMPLETED", "{b}");
    let products = b["response"]["productResults"]
        .as_array()
        .map_or(0, Vec::len) as i64;
    assert!((1..=6).contains(&products), "{b}");
    assert_eq!(b["credits"]["creditsToCharge"], 4, "{b}");
    assert_eq!(b["credits"]["creditsCharged"], 4 + products, "{b}");
    assert_eq!(app.credits().await, 10 - 4 - products);
}
