//! The result pages of `include.html`, through the HTTP API: a task asked with `html` on the
//! simulator links pages under the server's public URL; each is served without a key, escaped,
//! with the security headers; every wrong link (token, organization, task, page, purged task)
//! is the same 404; the route has its own server-wide budget.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Submits `body`, waits for the queue to drain and returns the task's `response`.
async fn completed(app: &TestApp, body: &Value) -> Value {
    let (s, b) = app.create_task(body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    app.drain().await;
    let (s, t) = app.get_task(&id).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
    t["response"].clone()
}

/// GET `url` without any key: `(status, headers, body)`.
async fn fetch(app: &TestApp, url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = app.client.get(url).send().await.expect("sent");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.expect("body"))
}

/// The link's path split into `[org, task, token, page]` after `/v1/pages/`.
fn parts(link: &str) -> Vec<String> {
    let (_, tail) = link.split_once("/v1/pages/").expect("a page link");
    tail.split('/').map(str::to_owned).collect()
}

fn link_with(app: &TestApp, p: &[String]) -> String {
    app.url(&format!("/v1/pages/{}", p.join("/")))
}

async fn assert_404(app: &TestApp, url: &str) {
    let (status, headers, body) = fetch(app, url).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{url}: {body}");
    let v: Value = serde_json::from_str(&body).expect("envelope");
    assert_eq!(v["error"]["code"], "RESOURCE_NOT_FOUND");
    assert_eq!(v["error"]["message"], "Page not found", "{url}");
    assert!(headers.get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn a_chat_answer_page_is_served_escaped_with_its_headers_and_no_key() {
    let app = TestApp::spawn().await;
    let hostile = "<script>alert('x')</script> & \"quotes\"";
    let r = completed(
        &app,
        &json!({"taskType": "CHATGPT", "payload": {"prompt": hostile, "country": "US",
                "include": {"html": true, "markdown": true}}}),
    )
    .await;
    let link = r["html"].as_str().expect("one URL").to_owned();
    // The default public URL is the address the server listens on.
    assert!(
        link.starts_with(&format!("{}/v1/pages/", app.base)),
        "{link}"
    );
    assert!(link.ends_with("/page-1.html"), "{link}");
    let (status, h, html) = fetch(&app, &link).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let header = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header("content-security-policy"),
        "default-src 'none'; style-src 'unsafe-inline'"
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "private, max-age=300");
    assert!(h.get("x-ratelimit-limit").is_none(), "no per-key bucket");
    assert!(html.starts_with("<!doctype html>"));
    // The hostile prompt is in the answer text, escaped; no script, no external asset.
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("src="));
    // Its sources are links.
    let first = r["sources"][0]["url"].as_str().expect("a source");
    assert!(html.contains(&format!("<a href=\"{first}\"")), "{html}");
    assert!(html.contains("Simulated result"));
    // A key is not needed, and a wrong one does not matter either.
    let resp = app
        .client
        .get(&link)
        .bearer_auth("sk_live_nope")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn google_and_news_link_one_page_each() {
    let app = TestApp::spawn().await;
    let r = completed(
        &app,
        &json!({"taskType": "GOOGLE", "payload": {"query": "espresso <b>machines</b>",
                "gl": "us", "pages": 2, "include": {"html": true}}}),
    )
    .await;
    let links: Vec<String> = r["html"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("URL").to_owned())
        .collect();
    assert_eq!(links.len(), 2);
    for (i, link) in links.iter().enumerate() {
        let page = i + 1;
        assert!(link.ends_with(&format!("/page-{page}.html")), "{link}");
        let (status, _, html) = fetch(&app, link).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(&format!("page {page}")));
        // The organic results of that page, and only those.
        let on_page: Vec<&Value> = r["organicResults"]
            .as_array()
            .expect("organic")
            .iter()
            .filter(|o| o["page"] == json!(page))
            .collect();
        assert!(!on_page.is_empty());
        assert_eq!(
            html.matches("class=\"url\"").count(),
            on_page.len(),
            "{html}"
        );
        for o in on_page {
            let link = o["link"].as_str().expect("link");
            assert!(html.contains(&format!("<a href=\"{link}\"")), "{link}");
        }
        assert!(!html.contains("<b>"), "{html}");
    }
    // A page the result does not link is not served.
    let mut p = parts(&links[1]);
    p[3] = "page-3.html".into();
    assert_404(&app, &link_with(&app, &p)).await;

    let n = completed(
        &app,
        &json!({"taskType": "GOOGLE_NEWS", "payload": {"query": "espresso", "gl": "us",
                "include": {"html": true}}}),
    )
    .await;
    let link = n["html"][0].as_str().expect("URL");
    let (status, _, html) = fetch(&app, link).await;
    assert_eq!(status, StatusCode::OK);
    let title = n["newsResults"][0]["title"].as_str().expect("title");
    assert!(html.contains(title), "{html}");
}

#[tokio::test]
async fn every_wrong_link_is_the_same_404() {
    let app = TestApp::spawn().await;
    let (_, other_key) = app.create_org("business", None, None, None);
    let body = json!({"taskType": "GEMINI", "payload": {"prompt": "p", "country": "US",
                      "include": {"html": true}}});
    let r = completed(&app, &body).await;
    let link = r["html"].as_str().expect("URL").to_owned();
    let p = parts(&link);
    assert_eq!(fetch(&app, &link).await.0, StatusCode::OK);

    // Wrong token (one digit off), another organization's key, an unknown task.
    let mut wrong = p.clone();
    let last = if wrong[2].ends_with('0') { '1' } else { '0' };
    wrong[2].pop();
    wrong[2].push(last);
    assert_404(&app, &link_with(&app, &wrong)).await;
    let mut other_org = p.clone();
    other_org[0] = (p[0].parse::<i64>().expect("org key") + 1).to_string();
    assert_404(&app, &link_with(&app, &other_org)).await;
    let mut unknown = p.clone();
    unknown[1] = uuid::Uuid::new_v4().to_string();
    assert_404(&app, &link_with(&app, &unknown)).await;
    // Another organization's own task with this task's token and org: still 404.
    let (s, b) = app.post_json("/v1/async/task", &other_key, &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.drain().await;
    let mut theirs = p.clone();
    theirs[1] = b["task"]["id"].as_str().expect("id").to_owned();
    assert_404(&app, &link_with(&app, &theirs)).await;
    // Malformed paths: refused before any lookup, with the same answer.
    for bad in ["page-0.html", "page-1.htm", "page-01.html", "x"] {
        let mut m = p.clone();
        m[3] = bad.into();
        assert_404(&app, &link_with(&app, &m)).await;
    }
    let mut upper = p.clone();
    upper[2] = upper[2].to_uppercase();
    if upper[2] != p[2] {
        assert_404(&app, &link_with(&app, &upper)).await;
    }

    // Once the task is purged, its page is gone too.
    let purged = app.store().purge(i64::MAX).await.expect("purged");
    assert!(purged >= 1);
    assert_404(&app, &link).await;
}

#[tokio::test]
async fn a_page_expires_with_the_task_s_retention_even_before_the_purge() {
    let app = TestApp::builder().retention_ms(1).spawn().await;
    let r = completed(
        &app,
        &json!({"taskType": "GROK", "payload": {"prompt": "p", "country": "US",
                "include": {"html": true}}}),
    )
    .await;
    // The purger has not run (it runs every minute): the task is still there, its page is not.
    assert_404(&app, r["html"].as_str().expect("URL")).await;
}

#[tokio::test]
async fn a_task_without_include_html_links_no_page() {
    let app = TestApp::spawn().await;
    let r = completed(
        &app,
        &json!({"taskType": "PERPLEXITY", "payload": {"prompt": "p", "country": "US"}}),
    )
    .await;
    assert!(r.get("html").is_none());
}

#[tokio::test]
async fn links_use_the_public_url_and_survive_a_move() {
    let app = TestApp::builder()
        .pages(|p| {
            p.public_url = Some(
                cloro::pages::PublicUrl::parse("https://cloro.example.test/prefix/").expect("url"),
            );
        })
        .spawn()
        .await;
    let r = completed(
        &app,
        &json!({"taskType": "AIMODE", "payload": {"prompt": "p", "country": "US",
                "include": {"html": true}}}),
    )
    .await;
    let link = r["html"].as_str().expect("URL");
    assert!(
        link.starts_with("https://cloro.example.test/prefix/v1/pages/"),
        "{link}"
    );
    // Behind the proxy the path reaches this server without the prefix.
    let (status, _, html) = fetch(&app, &link_with(&app, &parts(link))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
}

#[tokio::test]
async fn the_page_route_has_a_server_wide_budget() {
    let app = TestApp::builder().pages(|p| p.rate_limit = 2).spawn().await;
    let r = completed(
        &app,
        &json!({"taskType": "COPILOT", "payload": {"prompt": "p", "country": "US",
                "include": {"html": true}}}),
    )
    .await;
    let link = r["html"].as_str().expect("URL").to_owned();
    let mut limited = 0;
    for _ in 0..12 {
        let (status, h, body) = fetch(&app, &link).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            let v: Value = serde_json::from_str(&body).expect("envelope");
            assert_eq!(v["error"]["code"], "RATE_LIMIT_EXCEEDED");
            assert_eq!(
                h.get("retry-after").and_then(|v| v.to_str().ok()),
                Some("1")
            );
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    // 12 requests cannot all fall in windows of at most 2 each unless they span 6 seconds.
    assert!(limited >= 1, "no request was limited");
    // The API's own routes are not affected by the page budget.
    assert_eq!(
        app.get_task(&uuid::Uuid::nil().to_string()).await.0,
        StatusCode::NOT_FOUND
    );
}
