//! Webhooks end to end, with a real HTTP receiver on 127.0.0.1: the body is the task-status
//! response without its `webhook` block, signatures are checked here with hmac/sha2 directly
//! on the raw bytes received, retries follow 500s and timeouts, private destinations are
//! refused without `--allow-private-webhooks`, and a rotated secret signs at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::helpers::{TestApp, chatgpt, with};

/// How the receiver answers one request.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Answers 200 after this long (longer than the sender's time limit: a timeout).
    Hang(Duration),
}

struct Hit {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct ReceiverState {
    hits: mpsc::UnboundedSender<Hit>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    otherwise: Answer,
}

struct Receiver {
    url: String,
    hits: mpsc::UnboundedReceiver<Hit>,
}

impl Receiver {
    /// A receiver answering `script` in order, then `otherwise`.
    async fn start(script: Vec<Answer>, otherwise: Answer) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = ReceiverState {
            hits: tx,
            script: Arc::new(Mutex::new(script.into())),
            otherwise,
        };
        async fn handle(
            State(st): State<ReceiverState>,
            headers: HeaderMap,
            body: Bytes,
        ) -> AxumStatus {
            let _ = st.hits.send(Hit { headers, body });
            let answer = st
                .script
                .lock()
                .expect("script")
                .pop_front()
                .unwrap_or(st.otherwise);
            match answer {
                Answer::Status(s) => AxumStatus::from_u16(s).expect("status"),
                Answer::Hang(d) => {
                    tokio::time::sleep(d).await;
                    AxumStatus::OK
                }
            }
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            hits: rx,
        }
    }

    async fn next(&mut self) -> Hit {
        tokio::time::timeout(Duration::from_secs(20), self.hits.recv())
            .await
            .expect("a delivery within 20 s")
            .expect("receiver running")
    }

    /// Asserts that nothing arrives within `d`.
    async fn nothing_within(&mut self, d: Duration) {
        if let Ok(Some(hit)) = tokio::time::timeout(d, self.hits.recv()).await {
            panic!(
                "unexpected delivery: {}",
                String::from_utf8_lossy(&hit.body)
            );
        }
    }
}

fn header<'a>(h: &'a Hit, name: &str) -> Option<&'a str> {
    h.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies the signature as a receiver would, from the raw bytes, in constant time.
fn verify(h: &Hit, secret: &str) -> bool {
    let (Some(ts), Some(sig)) = (
        header(h, "x-cloro-timestamp"),
        header(h, "x-cloro-signature"),
    ) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("v1=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&h.body);
    mac.verify_slice(&raw).is_ok()
}

async fn hooked_app(f: impl FnOnce(&mut cloro::webhooks::WebhookConfig)) -> TestApp {
    TestApp::builder()
        .webhooks(|w| {
            w.allow_private = true;
            f(w)
        })
        .spawn()
        .await
}

async fn submit_hooked(app: &TestApp, url: &str) -> String {
    let (s, b) = app
        .create_task(&with(chatgpt("hello"), "webhook", json!({ "url": url })))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["task"]["id"].as_str().expect("id").to_owned()
}

/// Waits (on the store's change signal) until GET shows the webhook as delivered.
async fn delivered(app: &TestApp, id: &str) -> Value {
    let mut changes = app.store().changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = app.get_task(id).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if b["webhook"]["delivered"] == true {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered: {b}");
        // The PostgreSQL store does not signal delivery records; look again soon anyway.
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
}

fn without_webhook(mut v: Value) -> Value {
    v.as_object_mut().expect("object").remove("webhook");
    v
}

#[tokio::test]
async fn a_signed_delivery_is_the_status_response_without_its_webhook_block() {
    let mut rx = Receiver::start(vec![], Answer::Status(200)).await;
    let app = hooked_app(|_| {}).await;
    let secret = cloro::webhooks::new_secret();
    app.set_webhook_secret(Some(secret.clone()));
    let id = submit_hooked(&app, &rx.url).await;
    let hit = rx.next().await;
    assert_eq!(header(&hit, "content-type"), Some("application/json"));
    assert!(verify(&hit, &secret), "the signature verifies");
    assert_eq!(
        header(&hit, "x-cloro-webhook-id"),
        Some(format!("{id}-1").as_str())
    );
    let ts: i64 = header(&hit, "x-cloro-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("unix seconds");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - ts).abs() < 60, "fresh timestamp {ts} (now {now})");
    let got = delivered(&app, &id).await;
    let body: Value = serde_json::from_slice(&hit.body).expect("JSON body");
    assert_eq!(body, without_webhook(got.clone()));
    assert_eq!(body["task"]["status"], "COMPLETED");
    assert!(body.get("response").is_some());
    let hook = &got["webhook"];
    assert_eq!(hook["url"], rx.url.as_str());
    let at = hook["deliveredAt"].as_str().expect("deliveredAt");
    assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
}

#[tokio::test]
async fn unsigned_organizations_get_no_signature_headers() {
    let mut rx = Receiver::start(vec![], Answer::Status(204)).await;
    let app = hooked_app(|_| {}).await;
    let id = submit_hooked(&app, &rx.url).await;
    let hit = rx.next().await;
    for h in [
        "x-cloro-timestamp",
        "x-cloro-signature",
        "x-cloro-webhook-id",
    ] {
        assert!(header(&hit, h).is_none(), "{h} present");
    }
    delivered(&app, &id).await;
}

#[tokio::test]
async fn finished_tasks_without_delivery_show_delivered_false() {
    let app = hooked_app(|w| w.retry_base_ms = 3_600_000).await;
    let mut rx = Receiver::start(vec![], Answer::Status(500)).await;
    let id = submit_hooked(&app, &rx.url).await;
    rx.next().await;
    app.drain().await;
    let (_, b) = app.get_task(&id).await;
    assert_eq!(
        b["webhook"],
        json!({ "url": rx.url, "delivered": false, "deliveredAt": null })
    );
    // Tasks without a webhook have no block.
    let (_, b) = app.create_task(&chatgpt("plain")).await;
    let plain = b["task"]["id"].as_str().expect("id").to_owned();
    app.drain().await;
    let (_, b) = app.get_task(&plain).await;
    assert!(b.get("webhook").is_none(), "{b}");
}

#[tokio::test]
async fn failed_attempts_are_retried_after_500s_and_timeouts_and_re_signed() {
    let mut rx = Receiver::start(
        vec![Answer::Status(500), Answer::Hang(Duration::from_secs(3))],
        Answer::Status(200),
    )
    .await;
    let app = hooked_app(|w| {
        w.retry_base_ms = 20;
        w.timeout = Duration::from_millis(300);
    })
    .await;
    let secret = cloro::webhooks::new_secret();
    app.set_webhook_secret(Some(secret.clone()));
    let id = submit_hooked(&app, &rx.url).await;
    let mut bodies = Vec::new();
    for attempt in 1..=3 {
        let hit = rx.next().await;
        assert_eq!(
            header(&hit, "x-cloro-webhook-id"),
            Some(format!("{id}-{attempt}").as_str())
        );
        assert!(verify(&hit, &secret), "attempt {attempt} is signed");
        bodies.push(hit.body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "same body every attempt"
    );
    delivered(&app, &id).await;
    rx.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_delivery_is_given_up_after_five_attempts() {
    let mut rx = Receiver::start(vec![], Answer::Status(503)).await;
    let app = hooked_app(|w| w.retry_base_ms = 10).await;
    let id = submit_hooked(&app, &rx.url).await;
    for attempt in 1..=5 {
        let hit = rx.next().await;
        assert!(header(&hit, "x-cloro-webhook-id").is_none());
        let _ = attempt;
    }
    // The sixth would come 160 ms after the fifth.
    rx.nothing_within(Duration::from_millis(800)).await;
    let (_, b) = app.get_task(&id).await;
    assert_eq!(b["webhook"]["delivered"], false);
}

#[tokio::test]
async fn literal_private_destinations_are_refused_at_submission() {
    let app = TestApp::spawn().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ] {
        let (s, b) = app
            .create_task(&with(chatgpt("x"), "webhook", json!({ "url": url })))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(b["error"]["details"][0]["field"], "webhook.url", "{b}");
    }
    let (s, b) = app
        .batch(&json!([
            with(
                chatgpt("x"),
                "webhook",
                json!({ "url": "http://127.0.0.1/h" })
            ),
            with(
                chatgpt("y"),
                "webhook",
                json!({ "url": "https://example.com/h" })
            ),
        ]))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["results"][0]["success"], false, "{b}");
    assert_eq!(b["results"][1]["success"], true, "{b}");
    // With --allow-private-webhooks they are accepted.
    let open = hooked_app(|_| {}).await;
    let (s, b) = open
        .create_task(&with(
            chatgpt("x"),
            "webhook",
            json!({ "url": "http://127.0.0.1:9/hook" }),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused_at_delivery() {
    let mut rx = Receiver::start(vec![], Answer::Status(200)).await;
    let app = TestApp::builder()
        .webhooks(|w| w.retry_base_ms = 10)
        .spawn()
        .await;
    // Submitted behind the API's back (the API refuses `localhost` by name already): the
    // sender must still refuse it once the name resolves to 127.0.0.1.
    let port = rx.url.rsplit(':').next().expect("port").to_owned();
    let url = format!("http://localhost:{port}");
    let key = cloro::domain::apikey::ApiKey::parse(&app.key).expect("key");
    let store = app.store();
    let org = store
        .find_key(key.digest())
        .await
        .expect("store")
        .expect("key record")
        .org;
    let task = cloro::store::NewTask {
        task_type: cloro::domain::types::TaskType::Chatgpt,
        payload: json!({ "prompt": "x", "country": "US" }),
        priority: 5,
        idempotency_key: None,
        webhook_url: Some(url),
        credits_to_charge: 5,
    };
    let out = store
        .submit(org, vec![task])
        .await
        .expect("store")
        .expect("accepted");
    let id = out[0].as_ref().expect("accepted").id.to_string();
    app.drain().await;
    rx.nothing_within(Duration::from_millis(1_000)).await;
    let (_, b) = app.get_task(&id).await;
    assert_eq!(b["webhook"]["delivered"], false, "{b}");
}

#[tokio::test]
async fn a_rotated_secret_signs_the_next_delivery_at_once() {
    let mut rx = Receiver::start(vec![], Answer::Status(200)).await;
    let app = hooked_app(|_| {}).await;
    let first = cloro::webhooks::new_secret();
    app.set_webhook_secret(Some(first.clone()));
    submit_hooked(&app, &rx.url).await;
    assert!(verify(&rx.next().await, &first));
    let second = cloro::webhooks::new_secret();
    app.set_webhook_secret(Some(second.clone()));
    submit_hooked(&app, &rx.url).await;
    let hit = rx.next().await;
    assert!(verify(&hit, &second), "signed with the new secret");
    assert!(!verify(&hit, &first), "the old secret no longer verifies");
    app.set_webhook_secret(None);
    submit_hooked(&app, &rx.url).await;
    let hit = rx.next().await;
    assert!(
        header(&hit, "x-cloro-signature").is_none(),
        "signing disabled"
    );
}

/// A receiver that answers every delivery 200 with an endless chunked body (8 KiB a
/// millisecond), and reports how many body bytes it wrote before the sender dropped the
/// connection.
struct EndlessBody {
    url: String,
    streamed: mpsc::UnboundedReceiver<usize>,
}

impl EndlessBody {
    async fn start() -> EndlessBody {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    // The request: its head, then Content-Length bytes of body.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                transfer-encoding: chunked\r\n\r\n";
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut piece = b"2000\r\n".to_vec();
                    piece.extend(std::iter::repeat_n(b'x', 8192));
                    piece.extend_from_slice(b"\r\n");
                    let (mut written, started) = (0usize, tokio::time::Instant::now());
                    // Give up after 30 s: the test has failed long before.
                    while started.elapsed() < Duration::from_secs(30) {
                        if conn.write_all(&piece).await.is_err() {
                            break;
                        }
                        written += 8192;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let _ = tx.send(written);
                });
            }
        });
        EndlessBody {
            url: format!("http://{addr}/hook"),
            streamed: rx,
        }
    }
}

/// Issue 12 item 8: a receiver that streams an endless 2xx body costs the sender at most a
/// small read (it drops the connection), and the 2xx still counts as delivered, at once.
#[tokio::test]
async fn an_endless_2xx_body_is_read_only_up_to_a_cap_and_counts_as_delivered() {
    let mut rx = EndlessBody::start().await;
    let app = hooked_app(|w| w.timeout = Duration::from_secs(10)).await;
    let id = submit_hooked(&app, &rx.url).await;
    let written = tokio::time::timeout(Duration::from_secs(5), rx.streamed.recv())
        .await
        .expect("the sender drops the endless body within 5 s, long before its time limit")
        .expect("receiver running");
    assert!(
        written < 1024 * 1024,
        "the sender stopped reading near its cap, not after {written} bytes"
    );
    let b = delivered(&app, &id).await;
    assert_eq!(b["webhook"]["delivered"], true);
}

/// Everything the test binary logs at INFO and above, from its first [`Logs::capture`] on.
/// One global subscriber, not a thread-local one: the server's tasks may run on any thread,
/// and a callsite first seen by another test without a subscriber would stay silent.
#[derive(Clone)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs(Arc::default());
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            logs
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

/// Issue 12 item 9: a failing delivery's log lines name the destination without its
/// credentials or its query values.
#[tokio::test]
async fn failed_deliveries_log_no_credentials_or_query_values_of_the_url() {
    let logs = Logs::capture();
    let app = hooked_app(|w| w.retry_base_ms = 10).await;
    let id = submit_hooked(
        &app,
        "http://hookuser:s3cr3tpw@127.0.0.1:1/hook?token=t0k3nval&x=1",
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let given_up = format!("task={id} attempt=5");
    while !logs.text().contains(&given_up) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not given up: {}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = logs.text();
    assert!(
        text.contains("url=http://***@127.0.0.1:1/hook?token=***&x=***"),
        "the destination is named, redacted: {text}"
    );
    for secret in ["s3cr3tpw", "t0k3nval", "hookuser"] {
        assert!(!text.contains(secret), "{secret} logged: {text}");
    }
}
