//! `GET /openapi.json` and `GET /docs`: the document is a snapshot (regenerate with
//! `UPDATE_SNAPSHOTS=1 cargo test --test api openapi`), every operation it documents is
//! routed and answers only documented statuses, and the rate limit's buckets are its `/v1`
//! paths.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/api/snapshots/openapi.json"
);

#[tokio::test]
async fn the_document_matches_its_snapshot() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("x-request-id").is_some());
    let served = resp.text().await.expect("body");
    let doc: Value = serde_json::from_str(&served).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let text = format!("{}\n", serde_json::to_string_pretty(&doc).expect("pretty"));
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(SNAPSHOT, &text).expect("snapshot written");
        return;
    }
    let expected = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        expected == text,
        "/openapi.json changed; review and regenerate with UPDATE_SNAPSHOTS=1 cargo test --test api openapi"
    );
}

#[tokio::test]
async fn every_route_is_documented_and_every_operation_is_routed() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.send(app.client.get(app.url("/openapi.json"))).await;
    let ops = cloro::api::openapi::operations(&doc);
    assert_eq!(ops.len(), 20, "{ops:?}");
    for (method, path) in &ops {
        assert!(doc["paths"][path][method.to_lowercase()]["summary"].is_string());
        // Each documented operation answers (no 404 route fallback, no 405).
        let concrete = path
            .replace("{taskId}", "00000000-0000-0000-0000-000000000000")
            .replace("{org}", "1")
            .replace("{token}", "0123456789abcdef0123456789abcdef")
            .replace("{page}", "page-1.html");
        let url = app.url(&format!("{concrete}?country=US"));
        let req = app
            .client
            .request(method.parse().expect("method"), url)
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body("[]");
        let (status, body) = app.send(req).await;
        let route_missing =
            status == StatusCode::NOT_FOUND && body["error"]["message"] == "Route not found";
        assert!(!route_missing, "{method} {path} is not routed");
        assert!(
            doc["paths"][path][method.to_lowercase()]["responses"][status.as_str()].is_object(),
            "{method} {path} answered an undocumented {status}"
        );
    }
    // The rate limit's buckets are exactly the documented `/v1` paths but the keyless result
    // pages (both come from the route table), so every documented `/v1` route that takes a key
    // has a bucket of its own.
    let mut buckets: Vec<&str> = cloro::api::rate_limit_buckets()
        .iter()
        .map(String::as_str)
        .collect();
    buckets.sort_unstable();
    let mut v1: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .filter(|p| p.starts_with("/v1/") && !p.starts_with("/v1/pages/"))
        .collect();
    v1.sort_unstable();
    assert_eq!(buckets, v1);
    assert_eq!(buckets.len(), 17, "{buckets:?}");
}

/// The result pages take no key: the document says so (no security, no 401, no
/// `X-RateLimit-*`), and lists their own 429 and 503 with `Retry-After`.
#[tokio::test]
async fn the_result_pages_are_documented_without_key_security() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.send(app.client.get(app.url("/openapi.json"))).await;
    let op = &doc["paths"]["/v1/pages/{org}/{taskId}/{token}/{page}"]["get"];
    assert_eq!(op["security"], serde_json::json!([{}]), "{op}");
    let responses = op["responses"].as_object().expect("responses");
    assert!(responses.get("401").is_none());
    for (status, r) in responses {
        assert!(r["headers"].get("X-RateLimit-Limit").is_none(), "{status}");
    }
    assert!(
        op["responses"]["200"]["content"]["text/html"].is_object(),
        "{op}"
    );
    for h in [
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Cache-Control",
    ] {
        assert!(op["responses"]["200"]["headers"][h].is_object(), "{h}");
    }
    for status in ["429", "503"] {
        assert!(
            op["responses"][status]["headers"]["Retry-After"].is_object(),
            "{status}"
        );
    }
    // Every operation that takes a key still says so.
    assert_eq!(
        doc["paths"]["/v1/credits"]["get"]["security"],
        serde_json::json!([{ "bearerAuth": [] }])
    );
}

#[tokio::test]
async fn the_reference_page_is_served_without_a_key_and_loads_nothing_from_elsewhere() {
    let app = TestApp::spawn().await;
    let resp = app.client.get(app.url("/docs")).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a Content-Security-Policy")
        .to_owned();
    // Only this server: nothing may be loaded from another origin.
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    let html = resp.text().await.expect("body");
    assert!(html.contains("/openapi.json"));
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
        "the page names another origin: {html}"
    );
    // Every script it loads is served here, as JavaScript, without a key.
    let scripts: Vec<&str> = html
        .split("<script src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!scripts.is_empty(), "no script: {html}");
    for src in scripts {
        assert!(src.starts_with('/') && !src.starts_with("//"), "{src}");
        let resp = app.client.get(app.url(src)).send().await.expect("sent");
        assert_eq!(resp.status(), StatusCode::OK, "{src}");
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("text/javascript"), "{src}: {kind}");
        let body = resp.bytes().await.expect("body");
        // The renderer itself (about 1 MB), not an error page.
        assert!(body.len() > 500_000, "{src}: {} bytes", body.len());
    }
}
