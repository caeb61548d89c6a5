//! The embedded store's disk going wrong under a running server (issue 12, items 5 and 6): a
//! result segment lost or cut short (a power loss before its directory entry was durable), a
//! task row the store cannot decode, a data directory on a small tmpfs that fills up, and one
//! on an ext4 file system that goes read-only under the server (as after a disk error).
//! SQLite only: on PostgreSQL (`CLORO_TEST_STORE=postgres`) these tests say they were skipped.
//! The file-system tests mount one (root only) and say they were skipped where that fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::helpers::{TestApp, chatgpt, with};

/// Whether these SQLite-only tests must skip (the API tests run on PostgreSQL).
fn on_postgres(test: &str) -> bool {
    let pg = std::env::var("CLORO_TEST_STORE").as_deref() == Ok("postgres");
    if pg {
        eprintln!("{test}: SKIPPED on PostgreSQL (an embedded-store test)");
    }
    pg
}

fn db_path(app: &TestApp) -> PathBuf {
    match &app.db.database {
        cloro::store::Database::Sqlite(p) => p.clone(),
        cloro::store::Database::Postgres(_) => panic!("an SQLite test"),
    }
}

/// The result log's segment files of the app's database.
fn segments(app: &TestApp) -> Vec<PathBuf> {
    let dir = cloro::store::sqlite::result_log::dir_for(&db_path(app));
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("results directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    out.sort();
    out
}

async fn completed_task(app: &TestApp, body: &Value) -> String {
    let (s, b) = app.create_task(body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["task"]["id"].as_str().expect("id").to_owned()
}

fn assert_result_unavailable(t: &Value) {
    assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
    assert_eq!(
        t["response"]["error"]["code"], "RESULT_UNAVAILABLE",
        "the lost result is said in the response: {t}"
    );
    assert!(
        t["response"]["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{t}"
    );
}

#[tokio::test]
async fn a_completed_task_whose_result_segment_is_cut_short_or_gone_answers_200_with_the_error() {
    if on_postgres("disk::result_segment_lost") {
        return;
    }
    let app = TestApp::spawn().await;
    let a = completed_task(&app, &chatgpt("a")).await;
    let b = completed_task(&app, &chatgpt("b")).await;
    app.drain().await;
    let (s, t) = app.get_task(&a).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert!(t["response"]["error"].is_null(), "intact: {t}");

    // Cut short: the bytes a row points at are not there (a short read).
    let segs = segments(&app);
    assert!(!segs.is_empty(), "a segment was written");
    for seg in &segs {
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .expect("segment")
            .set_len(0)
            .expect("truncate");
    }
    for _ in 0..2 {
        let (s, t) = app.get_task(&a).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_result_unavailable(&t);
    }

    // Gone: the segment file itself is missing (its directory entry never reached the disk).
    for seg in &segs {
        std::fs::remove_file(seg).expect("remove segment");
    }
    let (s, t) = app.get_task(&b).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_result_unavailable(&t);

    // The store keeps serving: a new task completes with its result.
    let c = completed_task(&app, &chatgpt("c")).await;
    app.drain().await;
    let (s, t) = app.get_task(&c).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
    assert!(t["response"]["error"].is_null(), "{t}");
}

/// A receiver whose first request waits for the test's go before it answers 500; every later
/// one answers 200. Each request's body is sent to the test as it arrives.
struct GatedReceiver {
    url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
    go: Arc<Semaphore>,
}

#[derive(Clone)]
struct GatedState {
    bodies: mpsc::UnboundedSender<Value>,
    go: Arc<Semaphore>,
    seen: Arc<AtomicUsize>,
}

impl GatedReceiver {
    async fn start() -> GatedReceiver {
        async fn handle(State(st): State<GatedState>, body: Bytes) -> AxumStatus {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = st.bodies.send(body);
            if st.seen.fetch_add(1, Ordering::SeqCst) == 0 {
                if let Ok(permit) = st.go.acquire().await {
                    permit.forget();
                }
                return AxumStatus::INTERNAL_SERVER_ERROR;
            }
            AxumStatus::OK
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let go = Arc::new(Semaphore::new(0));
        let state = GatedState {
            bodies: tx,
            go: go.clone(),
            seen: Arc::new(AtomicUsize::new(0)),
        };
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
        GatedReceiver {
            url: format!("http://{addr}/hook"),
            bodies: rx,
            go,
        }
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.bodies.recv())
            .await
            .expect("a delivery within 10 s")
            .expect("receiver running")
    }
}

#[tokio::test]
async fn a_webhook_whose_result_was_lost_is_delivered_with_the_error_not_deferred_forever() {
    if on_postgres("disk::webhook_result_lost") {
        return;
    }
    let mut rx = GatedReceiver::start().await;
    let app = TestApp::builder()
        .webhooks(|w| {
            w.allow_private = true;
            w.retry_base_ms = 20;
        })
        .spawn()
        .await;
    let id = completed_task(
        &app,
        &with(chatgpt("hook"), "webhook", json!({"url": rx.url})),
    )
    .await;
    // The first attempt carries the result; it is held, then refused.
    let first = rx.next().await;
    assert_eq!(first["task"]["id"], id.as_str(), "{first}");
    assert!(first["response"]["error"].is_null(), "{first}");
    for seg in segments(&app) {
        std::fs::remove_file(seg).expect("remove segment");
    }
    rx.go.add_permits(1);
    // The retry reads the task again: its result is gone, and the receiver is told so.
    let second = rx.next().await;
    assert_eq!(second["task"]["id"], id.as_str(), "{second}");
    assert_eq!(
        second["response"]["error"]["code"], "RESULT_UNAVAILABLE",
        "{second}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, t) = app.get_task(&id).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        if t["webhook"]["delivered"] == true {
            assert_result_unavailable(&t);
            break;
        }
        assert!(Instant::now() < deadline, "delivery recorded: {t}");
        let mut changes = app.store().changes();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
}

/// `wh_state` of the task row with public id `id` (0 pending, 1 delivered, 2 given up).
fn wh_state(db: &Path, seq_of_id: &str) -> Option<i64> {
    let c = rusqlite::Connection::open(db).expect("open");
    let uuid = uuid::Uuid::parse_str(seq_of_id).expect("uuid");
    c.query_row(
        "SELECT wh_state FROM tasks WHERE id = ?1",
        [&uuid.as_bytes()[..]],
        |r| r.get(0),
    )
    .expect("row")
}

#[tokio::test]
async fn a_permanent_store_error_ends_a_webhook_delivery_instead_of_deferring_it_forever() {
    if on_postgres("disk::webhook_permanent_error") {
        return;
    }
    let rx = GatedReceiver::start().await;
    let app = TestApp::builder()
        .paused()
        .webhooks(|w| w.allow_private = true)
        .spawn()
        .await;
    let (s, b) = app
        .create_task(&with(
            with(chatgpt("hook"), "webhook", json!({"url": rx.url})),
            "idempotencyKey",
            json!("k1"),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["task"]["id"].as_str().expect("id").to_owned();
    // A row the store cannot decode (a column of the wrong type): reading the task fails
    // with a permanent store error, however often it is tried.
    let db = db_path(&app);
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        c.busy_timeout(Duration::from_secs(5)).expect("timeout");
        let n = c
            .execute(
                "UPDATE tasks SET idem_key = X'00FF' WHERE idem_key = 'k1'",
                [],
            )
            .expect("corrupt the row");
        assert_eq!(n, 1);
    }
    app.resume();
    app.drain().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut changes = app.store().changes();
    loop {
        match wh_state(&db, &id) {
            Some(2) => break,
            state => assert!(
                Instant::now() < deadline,
                "the delivery is given up, not deferred forever (wh_state {state:?})"
            ),
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
    assert_eq!(
        app.store().next_webhook_ms(),
        None,
        "nothing left to deliver"
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kb` KiB, or says why the test is skipped.
    fn mount(test: &str, size_kb: u64) -> Option<Tmpfs> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cloro-tmpfs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kb}k"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            eprintln!("{test}: SKIPPED: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    /// Fills the file system with `filler` until only `room` bytes are left.
    fn fill(&self, room: u64) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(room)).expect("make room");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_reads_and_recovers_when_space_returns() {
    let test = "disk::full_disk";
    if on_postgres(test) {
        return;
    }
    let Some(fs) = Tmpfs::mount(test, 4096) else {
        return;
    };
    let mut app = TestApp::builder().data_dir(&fs.dir).spawn().await;
    let before = completed_task(&app, &chatgpt("before the disk fills")).await;
    app.drain().await;
    // A little room is left: the store fills it itself, submissions, claims and finishes
    // (their results) all running into the full disk at some point.
    let filler = fs.fill(256 * 1024);

    // Submissions go on until the store cannot write: then 503 with Retry-After, never a
    // 500, never a 200 for a task that was not committed.
    let big = "x".repeat(9_000);
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..3_000 {
        let resp = app
            .client
            .post(app.url("/v1/async/task"))
            .bearer_auth(&app.key)
            .json(&chatgpt(&format!("{i} {big}")))
            .send()
            .await
            .expect("sent");
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").cloned();
        let body: Value = resp.json().await.expect("json body");
        match status {
            StatusCode::OK => accepted.push(body["task"]["id"].as_str().expect("id").to_owned()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after.is_some(), "503 with Retry-After");
                assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE", "{body}");
                refused = Some(i);
                break;
            }
            other => panic!("a full disk answered {other}: {body}"),
        }
    }
    assert!(refused.is_some(), "the full disk refused a submission");
    // The disk stays full: whatever a write finds room for (SQLite may reuse its log after a
    // checkpoint) is committed, anything else is a 503; an answer never runs ahead of the disk.
    let (s, b) = app.create_task(&chatgpt(&format!("again {big}"))).await;
    match s {
        StatusCode::OK => accepted.push(b["task"]["id"].as_str().expect("id").to_owned()),
        s => assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}"),
    }
    // A sync call's answer is not given without its charge recorded.
    let credits = app.credits().await;
    let (s, b) = app
        .post_json(
            "/v1/monitor/chatgpt",
            &app.key,
            &json!({"prompt": "full disk", "country": "US"}),
        )
        .await;
    match s {
        StatusCode::OK => assert!(app.credits().await < credits, "charged"),
        s => {
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
            assert_eq!(app.credits().await, credits, "nothing charged");
        }
    }

    // Reads keep working: the task finished before, and every accepted one.
    let (s, t) = app.get_task(&before).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
    assert!(t["response"]["error"].is_null(), "{t}");
    for id in &accepted {
        let (s, t) = app.get_task(id).await;
        assert_eq!(s, StatusCode::OK, "accepted {id} was committed: {t}");
    }

    // Space returns: the node serves again without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let after = completed_task(&app, &chatgpt("after")).await;
    app.drain().await;
    for id in accepted.iter().chain([&before, &after]) {
        let (s, t) = app.get_task(id).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(t["task"]["status"], "COMPLETED", "{id}: {t}");
        assert!(t["response"]["error"].is_null(), "{id}: {t}");
    }

    let db = db_path(&app);
    app.stop().await;
    let c = rusqlite::Connection::open(&db).expect("open");
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
}

/// An ext4 file system in an image file on a loop device, mounted `errors=remount-ro`: the
/// kernel's error trigger makes it read-only under the running server, as a disk error would
/// (a plain `remount,ro` is refused while files are open for writing). Unmounted on drop.
struct Ext4 {
    img: PathBuf,
    dir: PathBuf,
    /// The loop device's name (`loop0`), for `/sys/fs/ext4/<dev>/`.
    dev: String,
}

impl Ext4 {
    fn mount(test: &str, size_mb: u64) -> Option<Ext4> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "cloro-ext4-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let (img, dir) = (base.with_extension("img"), base);
        let skip = |why: &str| {
            eprintln!("{test}: SKIPPED: {why}");
            let _ = std::fs::remove_file(&img);
            let _ = std::fs::remove_dir(&dir);
            None
        };
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size_mb << 20))
            .expect("image file");
        std::fs::create_dir_all(&dir).expect("mount point");
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return skip("no mkfs.ext4");
        }
        let mounted = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&img)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            return skip("cannot mount a loop device (needs root)");
        }
        let source = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let dev = source.rsplit('/').next().unwrap_or_default().to_owned();
        let fs = Ext4 { img, dir, dev };
        if !Path::new(&format!("/sys/fs/ext4/{}/trigger_fs_error", fs.dev)).exists() {
            drop(fs);
            eprintln!("{test}: SKIPPED: no ext4 error trigger in /sys");
            return None;
        }
        Some(fs)
    }

    /// Reports a file-system error: the kernel remounts it read-only at once.
    fn break_it(&self) {
        std::fs::write(
            format!("/sys/fs/ext4/{}/trigger_fs_error", self.dev),
            "cloro test",
        )
        .expect("trigger an ext4 error");
        assert!(
            std::fs::File::create(self.dir.join("probe")).is_err(),
            "the file system is read-only now"
        );
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.img);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_system_gone_read_only_answers_503_and_keeps_reads() {
    let test = "disk::read_only";
    if on_postgres(test) {
        return;
    }
    let Some(fs) = Ext4::mount(test, 32) else {
        return;
    };
    let mut app = TestApp::builder().data_dir(&fs.dir).spawn().await;
    let before = completed_task(&app, &chatgpt("before")).await;
    app.drain().await;
    fs.break_it();

    for _ in 0..3 {
        let resp = app
            .client
            .post(app.url("/v1/async/task"))
            .bearer_auth(&app.key)
            .json(&chatgpt("after"))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get("retry-after").is_some(), "Retry-After");
    }
    let (s, b) = app.batch(&json!([chatgpt("a"), chatgpt("b")])).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");

    let (s, t) = app.get_task(&before).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
    assert!(t["response"]["error"].is_null(), "{t}");
    let status = app.status().await;
    assert_eq!(status["queuedTasks"], 0, "{status}");
    app.stop().await;
}
