//! `POST /v1/monitor/google/goto`: links carrying their destination are read locally; others
//! are resolved by one request to a fake Google on loopback (the goto origin override), behind
//! the webhooks' address guard.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode as AxumStatus, header::LOCATION};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const PATH: &str = "/v1/monitor/google/goto";

async fn goto(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    app.post_json(PATH, &app.key, body).await
}

/// A fake Google on loopback: every request gets `status`, `location` and, when `delay` is
/// set, waits that long first. Answers the `http://localhost:PORT` origin to give the app.
async fn fake_google(status: u16, location: Option<&'static str>, delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        let mut resp = axum::response::Response::new(axum::body::Body::empty());
        *resp.status_mut() = AxumStatus::from_u16(status).expect("status");
        if let Some(l) = location {
            resp.headers_mut()
                .insert(LOCATION, HeaderValue::from_static(l));
        }
        resp
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://localhost:{port}")
}

/// An app whose "Google" is `origin`, with loopback allowed (or not).
async fn app_with_google(origin: String, allow_private: bool, timeout: Duration) -> TestApp {
    TestApp::builder()
        .webhooks(|w| w.allow_private = allow_private)
        .goto(|g| {
            g.origin_override = Some(origin);
            g.timeout = timeout;
        })
        .spawn()
        .await
}

fn assert_google_failed(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "EXTERNAL_SERVICE_ERROR");
    assert_eq!(body["error"]["message"], "goto resolve request failed");
    assert_eq!(body["error"]["details"], json!({ "service": "google" }));
}

#[tokio::test]
async fn a_url_link_with_q_answers_its_destination_without_a_wrapper() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url(PATH))
        .bearer_auth(&app.key)
        .json(&json!({ "url": "https://www.google.com/url?q=https%3A%2F%2Fexample.com%2Fpage%3Fa%3D1&sa=U&ved=2ahUKEw&usg=AOvVaw" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert!(h.get("x-ratelimit-limit").is_some());
    assert!(h.get("x-ratelimit-remaining").is_some());
    assert!(h.get("x-request-id").is_some());
    assert!(h.get("x-latency-ms").is_some());
    for name in [
        "x-concurrency-limit",
        "x-concurrency-current",
        "x-concurrency-remaining",
        "x-credits-charged",
        "x-credits-remaining",
    ] {
        assert!(h.get(name).is_none(), "{name}");
    }
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({ "url": "https://example.com/page?a=1" }));
}

#[tokio::test]
async fn goto_and_serp_links_carrying_url_are_decoded_and_cost_nothing() {
    let app = TestApp::spawn().await;
    let before = app.credits().await;
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://google.com/goto?url=https://news.example/story" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({ "url": "https://news.example/story" }));
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://www.google.com/url?sa=t&source=web&rct=j&url=https://www.cafe-creme.example/meilleures-machines&ved=2ah" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({ "url": "https://www.cafe-creme.example/meilleures-machines" })
    );
    assert_eq!(app.credits().await, before);
    assert_eq!(app.status().await["concurrency"]["used"], 0);
}

#[tokio::test]
async fn invalid_bodies_are_400_with_field_details() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({ "url": "https://evil.example/url?q=https://example.com" }),
            "url",
            "url must be a Google redirect link on google.com or www.google.com (no port, no credentials)",
        ),
        (
            json!({ "url": "https://www.google.com/search?q=x" }),
            "url",
            "url path must be /goto or /url",
        ),
        (
            json!({ "url": "not a url" }),
            "url",
            "url must be a valid absolute http(s) URL",
        ),
        (
            json!({}),
            "url",
            "Invalid input: expected string, received undefined",
        ),
        (
            json!({ "url": 42 }),
            "url",
            "Invalid input: expected string, received number",
        ),
        (
            json!({ "url": "https://www.google.com/url?q=https://a.example", "extra": true }),
            "extra",
            "Unrecognized key \"extra\"",
        ),
        (
            json!({ "url": format!("https://www.google.com/url?q={}", "a".repeat(9000)) }),
            "url",
            "url is too long (max 8,192 characters)",
        ),
    ];
    for (body, field, message) in cases {
        let (s, b) = goto(&app, &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(
            b["error"]["details"],
            json!([{ "field": field, "message": message }]),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_request_without_a_key_is_401() {
    let app = TestApp::spawn().await;
    let (s, b) = app
        .send(
            app.client
                .post(app.url(PATH))
                .json(&json!({ "url": "https://www.google.com/url?q=https://a.example" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"]["code"], "MISSING_API_KEY");
}

#[tokio::test]
async fn the_route_has_a_rate_limit_bucket_of_its_own() {
    assert!(cloro::api::rate_limit_buckets().iter().any(|b| b == PATH));
    let app = TestApp::builder().rate_limit(2).spawn().await;
    let body = json!({ "url": "https://www.google.com/url?q=https://a.example" });
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(goto(&app, &body).await.0);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_link_without_destination_is_resolved_by_googles_redirect() {
    let origin = fake_google(302, Some("https://example.com/dest"), Duration::ZERO).await;
    let app = app_with_google(origin, true, Duration::from_secs(5)).await;
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://www.google.com/goto?id=abc" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({ "url": "https://example.com/dest" }));
}

#[tokio::test]
async fn one_more_google_redirect_hop_is_followed_and_read_locally() {
    let origin = fake_google(
        302,
        Some("/url?sa=t&url=https%3A%2F%2Fexample.org%2Fnext"),
        Duration::ZERO,
    )
    .await;
    let app = app_with_google(origin, true, Duration::from_secs(5)).await;
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://www.google.com/goto?id=abc" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({ "url": "https://example.org/next" }));
}

#[tokio::test]
async fn google_answering_without_a_redirect_is_502() {
    let origin = fake_google(200, None, Duration::ZERO).await;
    let app = app_with_google(origin, true, Duration::from_secs(5)).await;
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://www.google.com/url?sa=t&id=1" }),
    )
    .await;
    assert_google_failed(s, &b);
}

#[tokio::test]
async fn google_redirecting_forever_is_502_after_one_extra_hop() {
    let origin = fake_google(302, Some("/goto?id=again"), Duration::ZERO).await;
    let app = app_with_google(origin, true, Duration::from_secs(5)).await;
    let (s, b) = goto(&app, &json!({ "url": "https://www.google.com/goto?id=1" })).await;
    assert_google_failed(s, &b);
}

#[tokio::test]
async fn google_answering_too_late_is_502() {
    let origin = fake_google(302, Some("https://example.com/"), Duration::from_secs(5)).await;
    let app = app_with_google(origin, true, Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (s, b) = goto(&app, &json!({ "url": "https://www.google.com/goto?id=1" })).await;
    assert_google_failed(s, &b);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_google_that_resolves_to_loopback_is_refused_without_allow_private() {
    let origin = fake_google(302, Some("https://example.com/dest"), Duration::ZERO).await;
    let app = app_with_google(origin, false, Duration::from_secs(5)).await;
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://www.google.com/goto?id=abc" }),
    )
    .await;
    assert_google_failed(s, &b);
    // A link that carries its destination still needs no network.
    let (s, b) = goto(
        &app,
        &json!({ "url": "https://www.google.com/url?q=https://example.com/" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
