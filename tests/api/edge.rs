//! The HTTP edge: rate limits, tracing headers, bounds on time and size.

use std::time::Duration;

use cloro::api::edge::EdgeConfig;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn an_organization_limit_gives_429_with_the_rate_limit_headers() {
    let app = TestApp::builder().rate_limit(2).spawn().await;
    let url = app.url("/v1/credits");
    // A fixed one-second window: keep asking until a window holds more than two requests.
    let mut limited = None;
    for _ in 0..1000 {
        let resp = app
            .client
            .get(&url)
            .bearer_auth(&app.key)
            .send()
            .await
            .expect("sent");
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some("2"));
        let remaining: u32 = header(&resp, "x-ratelimit-remaining")
            .and_then(|v| v.parse().ok())
            .expect("remaining");
        assert!(remaining <= 1);
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(remaining, 0);
            assert!(resp.headers().get("retry-after").is_none());
            limited = Some(resp.json::<serde_json::Value>().await.expect("json"));
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let body = limited.expect("a 429 within 1000 requests");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["message"], "API key rate limit exceeded");
    assert!(body["error"].get("details").is_none());
}

#[tokio::test]
async fn every_endpoint_has_its_own_bucket_and_the_default_is_1000() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/v1/async/status"))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some("1000"));
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("999"));
    // Task ids share the template's bucket; a 404 is an authenticated response too.
    for (n, id) in ["a", "b"].iter().enumerate() {
        let resp = app
            .client
            .get(app.url(&format!("/v1/async/task/{id}")))
            .bearer_auth(&app.key)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let rem: u32 = header(&resp, "x-ratelimit-remaining")
            .and_then(|v| v.parse().ok())
            .expect("remaining");
        // Both within one window, or the second in a new one.
        assert!(rem == 999 - n as u32 || rem == 999, "{rem}");
    }
}

#[tokio::test]
async fn the_server_default_limit_is_configurable() {
    let app = TestApp::builder()
        .edge(EdgeConfig {
            rate_limit: 7,
            ..Default::default()
        })
        .spawn()
        .await;
    let resp = app
        .client
        .get(app.url("/v1/credits"))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some("7"));
}

#[tokio::test]
async fn request_id_and_latency_are_on_every_response() {
    let app = TestApp::builder().max_body_bytes(1000).spawn().await;
    let mine = "0b7c6a52-4f0e-4d7e-9a55-2b8f0f3a1c9d";
    let cases = [
        app.client.get(app.url("/healthz")),
        app.client.get(app.url("/nowhere")),
        app.client.get(app.url("/v1/credits")),
        app.client
            .get(app.url("/v1/credits"))
            .bearer_auth("sk_live_nope"),
        app.client
            .post(app.url("/v1/async/task"))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(vec![b' '; 5000]),
    ];
    let mut statuses = Vec::new();
    for req in cases {
        let resp = req.header("x-request-id", mine).send().await.expect("sent");
        statuses.push(resp.status().as_u16());
        assert_eq!(header(&resp, "x-request-id"), Some(mine));
        assert!(
            header(&resp, "x-latency-ms")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some()
        );
        // Unauthenticated responses carry no rate-limit headers.
        if resp.status() == StatusCode::UNAUTHORIZED {
            assert!(resp.headers().get("x-ratelimit-limit").is_none());
        }
    }
    assert_eq!(statuses, [200, 404, 401, 401, 413]);
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "not-a-uuid")
        .send()
        .await
        .expect("sent");
    let id = header(&resp, "x-request-id").expect("id");
    assert_ne!(id, "not-a-uuid");
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

/// Sends `head` on a raw connection and returns everything the server answers until it closes.
async fn raw(app: &TestApp, head: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_a_408_envelope() {
    let app = TestApp::builder()
        .edge(EdgeConfig {
            request_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .spawn()
        .await;
    // The body never comes: the handler waits for it until the request times out.
    let head = format!(
        "POST /v1/async/task HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{",
        app.key
    );
    let addr = app.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(text.contains("x-request-id:"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test]
async fn oversized_headers_are_refused_and_silent_clients_are_disconnected() {
    let app = TestApp::builder()
        .edge(EdgeConfig {
            header_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .spawn()
        .await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(&app, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Half a request head, then nothing: the server hangs up.
    let answer = raw(&app, b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A normal request still works.
    let answer = raw(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let app = TestApp::builder()
        .edge(EdgeConfig {
            max_connections: 1,
            ..Default::default()
        })
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let get = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    // A: served once, then kept alive (idle), holding the only slot.
    let mut a = TcpStream::connect(&addr).await.expect("connect a");
    a.write_all(get).await.expect("write a");
    let mut buf = vec![0u8; 4096];
    let n = a.read(&mut buf).await.expect("read a");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // B: connected by the kernel, but not served while A holds the slot.
    let mut b = TcpStream::connect(&addr).await.expect("connect b");
    b.write_all(get).await.expect("write b");
    let early = tokio::time::timeout(Duration::from_millis(300), b.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond --max-connections");
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(10), b.read(&mut buf))
        .await
        .expect("served once A closed")
        .expect("read b");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn bodies_beyond_the_node_budget_are_503_until_the_ones_being_read_finish() {
    const MIB: usize = 1024 * 1024;
    let app = TestApp::builder()
        .max_body_bytes(MIB)
        .edge(EdgeConfig {
            max_body_bytes_in_flight: MIB,
            ..Default::default()
        })
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // A: declares 1 MiB, the whole budget, sends a part of it and stalls.
    let head = format!(
        "POST /v1/async/task HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {MIB}\r\nconnection: close\r\n\r\n",
        app.key
    );
    let mut a = TcpStream::connect(&addr).await.expect("connect a");
    a.write_all(head.as_bytes()).await.expect("write a");
    a.write_all(&[b' '; 1000]).await.expect("write a");
    let post = || {
        app.client
            .post(app.url("/v1/async/task"))
            .bearer_auth(&app.key)
            .json(&crate::helpers::chatgpt("hello"))
            .timeout(Duration::from_secs(5))
            .send()
    };
    // B: a small body, answered 503 at once while A holds the budget (A may take a moment to
    // reach the body's extractor).
    let mut refused = None;
    for _ in 0..50 {
        let resp = post().await.expect("B answered at once");
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = refused.expect("a body beyond the node's budget is refused");
    assert_eq!(header(&resp, "retry-after"), Some("1"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    // A completes (all blanks: an empty body), and gives the budget back.
    a.write_all(&vec![b' '; MIB - 1000]).await.expect("write a");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), a.read_to_end(&mut out))
        .await
        .expect("A answered")
        .expect("read a");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let resp = post().await.expect("B answered");
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_the_connections() {
    let app = TestApp::builder()
        .edge(EdgeConfig {
            max_connections_per_address: 2,
            ..Default::default()
        })
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Two idle connections from 127.0.0.1 take its share.
    let a = TcpStream::connect(&addr).await.expect("connect a");
    let _b = TcpStream::connect(&addr).await.expect("connect b");
    // A third from the same address is closed at once.
    let mut c = TcpStream::connect(&addr).await.expect("connect c");
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a connection beyond the address's share was kept open: {closed:?}"
    );
    // Once one closes, a new connection is served.
    drop(a);
    let get = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let mut served = false;
    for _ in 0..50 {
        let mut d = TcpStream::connect(&addr).await.expect("connect d");
        let mut out = Vec::new();
        if d.write_all(get).await.is_ok()
            && let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), d.read_to_end(&mut out)).await
            && out.starts_with(b"HTTP/1.1 200")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served,
        "no connection served after one of the address's closed"
    );
}
