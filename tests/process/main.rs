//! Tests that run the real `cloro` binary: the CLI contract, and durability across `kill -9`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn cloro() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloro"));
    c.env_remove("DATABASE_URL").env("CLORO_LOG", "warn");
    c
}

fn run_json(args: &[&str]) -> Value {
    let out = cloro().args(args).output().expect("cloro runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(db: &Path, extra: &[&str]) -> Serve {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = cloro()
            .args([
                "serve",
                "--listen",
                &listen,
                "--database",
                db.to_str().expect("utf-8 path"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let base = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&listen).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Serve { child, base }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_cli_creates_organizations_and_keys_and_revokes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("x.db");
    let db = db.to_str().expect("path");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "acme",
        "--plan",
        "lite",
        "--concurrency",
        "3",
        "--database",
        db,
    ]);
    let org_id = org["orgId"].as_str().expect("orgId");
    let key = org["apiKey"].as_str().expect("apiKey");
    assert!(key.starts_with("sk_live_") && key.len() == 40, "{key}");
    let k2 = run_json(&["key", "create", "--org", org_id, "--database", db]);
    assert_eq!(k2["orgId"], org_id);
    assert_ne!(k2["apiKey"], org["apiKey"]);
    let key_id = k2["keyId"].as_str().expect("keyId");
    assert_eq!(
        run_json(&["key", "revoke", key_id, "--database", db]),
        json!({ "keyId": key_id, "revoked": true })
    );
    // Mistakes are clear errors with a non-zero exit.
    for bad in [
        vec![
            "org",
            "create",
            "--name",
            "x",
            "--plan",
            "platinum",
            "--database",
            db,
        ],
        vec!["key", "create", "--org", "nope", "--database", db],
        vec!["key", "revoke", "key_nope", "--database", db],
        // A public URL with a query (or a fragment, or not http/https) stops `serve` at once.
        vec![
            "serve",
            "--public-url",
            "https://c.example/?a=1",
            "--database",
            db,
        ],
        vec!["serve", "--public-url", "ftp://c.example", "--database", db],
    ] {
        let out = cloro().args(&bad).output().expect("runs");
        assert!(!out.status.success(), "{bad:?}");
        assert!(!out.stderr.is_empty());
        if bad[0] == "serve" {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("--public-url"), "{err}");
        }
    }
    // DATABASE_URL works as well as --database.
    let out = cloro()
        .args(["org", "create", "--name", "env"])
        .env("DATABASE_URL", format!("sqlite://{db}"))
        .output()
        .expect("runs");
    assert!(out.status.success());
    for cmd in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["org", "create", "--help"],
        vec!["key", "revoke", "--help"],
    ] {
        assert!(
            cloro().args(&cmd).output().expect("runs").status.success(),
            "{cmd:?}"
        );
    }
}

/// Issue 12, item 17: "the file wins over the environment" holds for `false` too. The
/// environment turns private webhook addresses on, the `--config` file turns them off again
/// (with an inline comment on the line): a webhook to a loopback address is then refused at
/// submission; without the file it is accepted (the control).
#[test]
fn a_false_in_the_config_file_turns_off_what_the_environment_turned_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let dbs = db.to_str().expect("path");
    let key = run_json(&["org", "create", "--name", "acme", "--database", dbs])["apiKey"]
        .as_str()
        .expect("apiKey")
        .to_owned();
    let conf = dir.path().join("cloro.toml");
    std::fs::write(
        &conf,
        "# the file wins over the environment\nallow_private_webhooks = false # not here\n",
    )
    .expect("config written");
    let body = json!({
        "taskType": "CHATGPT",
        "payload": { "prompt": "p", "country": "US" },
        "webhook": { "url": "http://127.0.0.1:9/hook" }
    });
    for (with_file, expected) in [(false, 200), (true, 400)] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = cloro();
        cmd.env("CLORO_ALLOW_PRIVATE_WEBHOOKS", "true").args([
            "serve",
            "--listen",
            &listen,
            "--database",
            dbs,
        ]);
        if with_file {
            cmd.args(["--config", conf.to_str().expect("path")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let serve = Serve {
            child,
            base: format!("http://{listen}"),
        };
        let (status, _, answer) =
            http_full(&serve.base, "POST", "/v1/async/task", &key, Some(&body));
        assert_eq!(status, expected, "with the file: {with_file}: {answer}");
        drop(serve);
    }
}

#[test]
fn serve_creates_the_default_organization_once_and_prints_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("d.db");
    let port = free_port();
    let mut child = cloro()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db.to_str().expect("path"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("first line");
    let v: Value = serde_json::from_str(&line).expect("JSON line");
    let key = v["apiKey"].as_str().expect("apiKey").to_owned();
    let resp = http(
        &format!("http://127.0.0.1:{port}"),
        "GET",
        "/v1/credits",
        &key,
        None,
    );
    assert_eq!(resp["remaining"], 500);
    let _ = child.kill();
    let _ = child.wait();
    // A second start finds the organization and prints no key.
    let s = Serve::start(&db, &[]);
    drop(s);
}

/// A minimal blocking HTTP/1.1 client (the tests stay free of an async runtime here).
fn http(base: &str, method: &str, path: &str, key: &str, body: Option<&Value>) -> Value {
    http_full(base, method, path, key, body).2
}

/// The same, with the status code and the raw header block (lower-cased). Waits for the server
/// to accept the connection; panics on any other I/O error.
fn http_full(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> (u16, String, Value) {
    let addr = base.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    exchange(stream, addr, method, path, key, body).expect("http exchange")
}

/// One request on a connection of its own that waits at most `read_timeout` for the answer:
/// `None` on any I/O error (the server may be going away or not there yet).
fn try_exchange(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
    read_timeout: Duration,
) -> Option<(u16, String, Value)> {
    let addr = base.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    exchange(stream, addr, method, path, key, body)
}

/// One HTTP/1.1 request with `Connection: close` on `stream`, read to the end: status, lower-cased
/// header block, and the body as JSON (or as a JSON string when it is not JSON). `None` on any
/// I/O error or a response that is not HTTP.
fn exchange(
    stream: std::net::TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> Option<(u16, String, Value)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let (status, head, text) = exchange_text(stream, addr, method, path, Some(key), &body)?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some((status, head, json))
}

/// The raw client under the others: one HTTP/1.1 request with `Connection: close` on `stream`,
/// with `token` as the bearer (or none), read to the end: status, lower-cased header block and
/// the body's text. `None` on any I/O error or a response that is not HTTP.
fn exchange_text(
    mut stream: std::net::TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

#[test]
fn nothing_accepted_is_lost_or_charged_twice_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let dbs = db.to_str().expect("path");
    let credits = 1_000_000i64;
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "c",
        "--plan",
        "business",
        "--concurrency",
        "8",
        "--credits",
        &credits.to_string(),
        "--database",
        dbs,
    ]);
    let key = org["apiKey"].as_str().expect("key").to_owned();

    let server = Serve::start(&db, &["--sim-latency-ms", "5..30", "--workers", "8"]);
    let mut ids = Vec::new();
    for b in 0..10 {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("t{b}-{i}"), "country": "US" }, "priority": (i % 10) + 1 }))
            .collect();
        let resp = http(
            &server.base,
            "POST",
            "/v1/async/task/batch",
            &key,
            Some(&Value::Array(batch)),
        );
        assert_eq!(resp["summary"]["succeeded"], 100, "{resp}");
        for r in resp["results"].as_array().expect("results") {
            ids.push(r["task"]["id"].as_str().expect("id").to_owned());
        }
    }
    // Let part of the queue run, then kill -9 while tasks are PROCESSING.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = http(&server.base, "GET", "/v1/async/status", &key, None);
        if st["queuedTasks"].as_u64().expect("queued") < 950
            && st["processingTasks"].as_u64() > Some(0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not move: {st}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut server = server;
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
    drop(server);

    let server = Serve::start(&db, &["--sim-latency-ms", "0", "--workers", "8"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = http(&server.base, "GET", "/v1/async/status", &key, None);
        if st["queuedTasks"] == 0 && st["processingTasks"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut charged = 0;
    let mut rerun = 0;
    for id in &ids {
        let t = http(
            &server.base,
            "GET",
            &format!("/v1/async/task/{id}"),
            &key,
            None,
        );
        assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
        charged += t["credits"]["creditsCharged"].as_i64().expect("charged");
        if t["task"]["attempts"].as_u64() > Some(1) {
            rerun += 1;
        }
    }
    assert_eq!(
        charged,
        5 * ids.len() as i64,
        "every task charged exactly once"
    );
    let remaining = http(&server.base, "GET", "/v1/credits", &key, None)["remaining"]
        .as_i64()
        .expect("remaining");
    assert_eq!(
        remaining,
        credits - charged,
        "the balance matches the charges"
    );
    assert!(
        rerun >= 1,
        "tasks that were PROCESSING at the kill ran again"
    );
}

/// A fresh PostgreSQL database for a cluster test, or `None` (skipped) without `CLORO_TEST_PG`.
fn cluster_db() -> Option<(cloro::testing::TestDb, String, tokio::runtime::Runtime)> {
    let Some(admin_url) = cloro::testing::pg_admin_url() else {
        cloro::testing::announce_pg_skipped();
        return None;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt
        .block_on(cloro::testing::TestDb::postgres(&admin_url))
        .expect("test database");
    let cloro::store::Database::Postgres(url) = db.database.clone() else {
        unreachable!("postgres")
    };
    Some((db, url, rt))
}

/// Starts a node, returning it with its cluster node id (read from its log).
fn start_node(url: &str, extra: &[&str]) -> (Child, String, String) {
    use std::io::BufRead;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = cloro()
        .env("CLORO_LOG", "info")
        .args(["serve", "--listen", &listen, "--database", url])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if !sent && let Some(i) = line.find("node=") {
                let id: String = line[i + 5..].chars().take(36).collect();
                sent = tx.send(id).is_ok();
            }
        }
    });
    let node = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the node logs its id");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "node did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, format!("http://{listen}"), node)
}

#[test]
fn a_three_node_cluster_keeps_the_cap_and_loses_nothing_when_a_node_dies() {
    let Some((_db, url, rt)) = cluster_db() else {
        return;
    };
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "c",
        "--plan",
        "business",
        "--concurrency",
        "4",
        "--credits",
        "1000000",
        "--database",
        &url,
    ]);
    let key = org["apiKey"].as_str().expect("key").to_owned();
    let flags = [
        "--workers",
        "8",
        "--sim-latency-ms",
        "150..300",
        "--lease-ms",
        "1500",
        "--heartbeat-ms",
        "200",
        "--poll-ms",
        "100",
    ];
    let mut nodes: Vec<(Child, String, String)> =
        (0..3).map(|_| start_node(&url, &flags)).collect();

    // Submit through every node.
    let mut ids = Vec::new();
    for b in 0..6 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("c{b}-{i}"), "country": "US" } }))
            .collect();
        let resp = http(
            &nodes[b % 3].1,
            "POST",
            "/v1/async/task/batch",
            &key,
            Some(&Value::Array(batch)),
        );
        assert_eq!(resp["summary"]["succeeded"], 10, "{resp}");
        ids.extend(
            resp["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|r| r["task"]["id"].as_str().expect("id").to_owned()),
        );
    }

    // Watch the cluster-wide count of PROCESSING tasks from another thread, through whichever
    // node answers (the victim may be any of them: one node can run every task on its own).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, key) = (stop.clone(), key.clone());
        let bases: Vec<String> = nodes.iter().map(|n| n.1.clone()).collect();
        std::thread::spawn(move || {
            let (mut max, mut reads) = (0, 0u64);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let st = bases.iter().find_map(|base| {
                    let timeout = Duration::from_secs(10);
                    match try_exchange(base, "GET", "/v1/async/status", &key, None, timeout)? {
                        (200, _, st) => Some(st),
                        _ => None,
                    }
                });
                if let Some(st) = st {
                    max = max.max(st["processingTasks"].as_u64().unwrap_or(0));
                    reads += 1;
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            (max, reads)
        })
    };

    // Kill -9 a node while it runs a task.
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .expect("connect");
    rt.spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        let rows = rt
            .block_on(client.query(
                "SELECT DISTINCT node::text FROM tasks WHERE status = 1",
                &[],
            ))
            .expect("query");
        let running: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if let Some(i) = nodes.iter().position(|n| running.contains(&n.2)) {
            break i;
        }
        assert!(Instant::now() < deadline, "no node ever ran a task");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut dead, _, dead_id) = nodes.remove(victim);
    dead.kill().expect("kill -9");
    dead.wait().expect("reaped");

    // The survivors take its tasks over once its lease runs out, and drain everything.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = http(&nodes[0].1, "GET", "/v1/async/status", &key, None);
        if st["queuedTasks"] == 0 && st["processingTasks"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not drain: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (max_processing, reads) = watcher.join().expect("watcher");
    assert!(reads > 0, "the watcher never read the status");
    assert!(
        max_processing <= 4,
        "{max_processing} tasks PROCESSING with a limit of 4"
    );
    assert!(
        max_processing >= 2,
        "the cluster ran tasks in parallel ({max_processing})"
    );

    let mut charged = 0;
    let mut rerun = 0;
    for id in &ids {
        let t = http(
            &nodes[1].1,
            "GET",
            &format!("/v1/async/task/{id}"),
            &key,
            None,
        );
        assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
        charged += t["credits"]["creditsCharged"].as_i64().expect("charged");
        rerun += usize::from(t["task"]["attempts"].as_u64() > Some(1));
    }
    assert_eq!(
        charged,
        5 * ids.len() as i64,
        "every task charged exactly once"
    );
    assert!(rerun >= 1, "the dead node's running tasks ran again");
    let balances: Vec<Value> = nodes
        .iter()
        .map(|n| http(&n.1, "GET", "/v1/credits", &key, None)["remaining"].clone())
        .collect();
    assert!(
        balances.iter().all(|b| *b == json!(1_000_000 - charged)),
        "{balances:?}"
    );
    let statuses: Vec<Value> = nodes
        .iter()
        .map(|n| http(&n.1, "GET", "/v1/async/status", &key, None))
        .collect();
    assert_eq!(statuses[0], statuses[1]);
    // The dead node left the cluster once its tasks were taken over.
    let left = rt
        .block_on(client.query("SELECT 1 FROM nodes WHERE id::text = $1", &[&dead_id]))
        .expect("query");
    assert!(left.is_empty(), "the dead node is still registered");
    for (mut c, _, _) in nodes {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_database_outage_is_a_503_with_retry_after_and_everything_resumes() {
    let Some((db, url, rt)) = cluster_db() else {
        return;
    };
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "o",
        "--plan",
        "business",
        "--concurrency",
        "2",
        "--database",
        &url,
    ]);
    let key = org["apiKey"].as_str().expect("key").to_owned();
    let (mut node, base, _) = start_node(
        &url,
        &[
            "--sim-latency-ms",
            "100",
            "--poll-ms",
            "100",
            "--heartbeat-ms",
            "200",
        ],
    );
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("o{i}"), "country": "US" } }))
        .collect();
    let resp = http(
        &base,
        "POST",
        "/v1/async/task/batch",
        &key,
        Some(&Value::Array(batch)),
    );
    assert_eq!(resp["summary"]["succeeded"], 6, "{resp}");
    let ids: Vec<String> = resp["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["task"]["id"].as_str().expect("id").to_owned())
        .collect();

    // Cut the database off: no new connections, existing ones terminated.
    let cloro::store::Database::Postgres(_) = &db.database else {
        unreachable!("postgres")
    };
    let name = url.rsplit('/').next().expect("db name").to_owned();
    let admin_url = cloro::testing::pg_admin_url().expect("admin url");
    let (admin, conn) = rt
        .block_on(tokio_postgres::connect(&admin_url, tokio_postgres::NoTls))
        .expect("connect");
    rt.spawn(conn);
    let cut = |allow: bool| {
        rt.block_on(
            admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}")),
        )
        .expect("alter");
        if !allow {
            rt.block_on(admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            ))
            .expect("terminate");
        }
    };
    // Requests that need the database get 503 with Retry-After, never a 500, and the process lives.
    // A connection that was still starting up when the database was closed has no database name
    // yet and escapes the first termination, so every round terminates again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ((status, head, body), ready) = loop {
        cut(false);
        let r = http_full(
            &base,
            "POST",
            "/v1/async/task",
            &key,
            Some(&json!({ "taskType": "CHATGPT", "payload": { "prompt": "x", "country": "US" } })),
        );
        assert!(r.0 == 200 || r.0 == 503, "{} {}", r.0, r.2);
        let ready = http_full(&base, "GET", "/readyz", "", None).0;
        if (r.0 == 503 && ready == 503) || Instant::now() > deadline {
            break (r, ready);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(head.contains("retry-after:"), "{head}");
    assert_eq!(ready, 503);
    let (status, _, _) = http_full(&base, "GET", "/healthz", "", None);
    assert_eq!(status, 200);
    assert!(
        node.try_wait().expect("status").is_none(),
        "the node is still running"
    );

    // The database comes back: the node recovers on its own and every accepted task completes.
    cut(true);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, st) = http_full(&base, "GET", "/v1/async/status", &key, None);
        if status == 200 && st["queuedTasks"] == 0 && st["processingTasks"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {status} {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &ids {
        let t = http(&base, "GET", &format!("/v1/async/task/{id}"), &key, None);
        assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
    }
    let _ = node.kill();
    let _ = node.wait();
}

/// One request that may fail (the server may be going away): `None` on any I/O error.
fn try_http(base: &str, path: &str, key: &str, body: &Value) -> Option<(u16, Value)> {
    let timeout = Duration::from_secs(30);
    match try_exchange(base, "POST", path, key, Some(body), timeout)? {
        // A body that is not JSON is a response cut off by the server going away.
        (_, _, Value::String(_)) => None,
        (status, _, body) => Some((status, body)),
    }
}

#[cfg(unix)]
#[test]
fn sigterm_under_load_drains_in_flight_requests_and_loses_nothing_accepted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("term.db");
    let dbs = db.to_str().expect("path");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "t",
        "--plan",
        "business",
        "--concurrency",
        "8",
        "--database",
        dbs,
    ]);
    let key = org["apiKey"].as_str().expect("key").to_owned();
    let mut server = Serve::start(&db, &["--sim-latency-ms", "20..60", "--workers", "8"]);
    let accepted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (base, key, accepted) = (server.base.clone(), key.clone(), accepted.clone());
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0.. {
                    let task = json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("c{c}-{i}"), "country": "US" } });
                    match try_http(&base, "/v1/async/task", &key, &task) {
                        Some((200, body)) => {
                            ids.push(body["task"]["id"].as_str().expect("id").to_owned());
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((status, body)) => panic!("{status}: {body}"),
                        // The server stopped accepting: this client is done.
                        None => break,
                    }
                }
                ids
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "no load");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = server.child.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let ids: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    assert!(ids.len() >= 200);
    drop(server);

    let server = Serve::start(&db, &["--sim-latency-ms", "0", "--workers", "8"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = http(&server.base, "GET", "/v1/async/status", &key, None);
        if st["queuedTasks"] == 0 && st["processingTasks"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in &ids {
        let t = http(
            &server.base,
            "GET",
            &format!("/v1/async/task/{id}"),
            &key,
            None,
        );
        assert_eq!(t["task"]["status"], "COMPLETED", "{t}");
        assert_eq!(t["credits"]["creditsCharged"], 5, "{t}");
    }
}

/// A one-request-per-connection HTTP receiver on 127.0.0.1: answers `script` in order, then
/// `otherwise`, and passes each request's lower-cased head, raw body and answer on. An answer
/// of 0 never answers (the connection stays open: a receiver that hangs).
fn receiver(
    script: Vec<u16>,
    otherwise: u16,
) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>, u16)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        let mut hung = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let status = script.next().unwrap_or(otherwise);
            if status == 0 {
                let _ = tx.send((head, body, status));
                hung.push(stream);
                continue;
            }
            let _ = stream.write_all(
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            if tx.send((head, body, status)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn a_pending_webhook_is_delivered_after_kill_9_and_a_restart() {
    use hmac::{Hmac, KeyInit, Mac};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("hooks.db");
    let dbs = db.to_str().expect("path");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "h",
        "--plan",
        "business",
        "--database",
        dbs,
    ]);
    let (org_id, key) = (
        org["orgId"].as_str().expect("orgId"),
        org["apiKey"].as_str().expect("apiKey"),
    );
    // The signing secret: created, disabled, created again (a rotation).
    let first = run_json(&["org", "webhook-secret", "--org", org_id, "--database", dbs]);
    assert!(
        first["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{first}"
    );
    assert_eq!(
        run_json(&[
            "org",
            "webhook-secret",
            "--org",
            org_id,
            "--disable",
            "--database",
            dbs
        ]),
        json!({ "orgId": org_id, "signing": false })
    );
    let out = cloro()
        .args(["org", "webhook-secret", "--org", "nope", "--database", dbs])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let secret = run_json(&["org", "webhook-secret", "--org", org_id, "--database", dbs])["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(first["secret"].as_str(), Some(secret.as_str()));

    let (url, hits) = receiver(vec![500], 200);
    let args = [
        "--allow-private-webhooks",
        "--webhook-retry-base-ms",
        "1500",
    ];
    let mut server = Serve::start(&db, &args);
    let created = http(
        &server.base,
        "POST",
        "/v1/async/task",
        key,
        Some(
            &json!({ "taskType": "CHATGPT", "payload": { "prompt": "x", "country": "US" },
                      "webhook": { "url": url } }),
        ),
    );
    let id = created["task"]["id"].as_str().expect("task id").to_owned();
    let (head, _, _) = hits
        .recv_timeout(Duration::from_secs(20))
        .expect("first attempt");
    assert_eq!(
        header_value(&head, "x-cloro-webhook-id"),
        Some(format!("{id}-1").as_str())
    );
    // The first attempt failed (500); the process dies before the retry is due.
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
    let server = Serve::start(&db, &args);
    let (head, body, _) = hits
        .recv_timeout(Duration::from_secs(20))
        .expect("the delivery comes after the restart");
    let webhook_id = header_value(&head, "x-cloro-webhook-id").expect("webhook id");
    // Attempt 2 if the failure of attempt 1 was recorded before the kill, else 1 again.
    assert!(
        webhook_id == format!("{id}-2") || webhook_id == format!("{id}-1"),
        "{webhook_id}"
    );
    let ts = header_value(&head, "x-cloro-timestamp").expect("timestamp");
    let sig = header_value(&head, "x-cloro-signature").expect("signature");
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body);
    let raw = hex::decode(sig.strip_prefix("v1=").expect("v1=")).expect("hex");
    assert!(mac.verify_slice(&raw).is_ok(), "signature verifies");
    let payload: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(payload["task"]["id"], id.as_str());
    assert!(payload.get("webhook").is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http(
            &server.base,
            "GET",
            &format!("/v1/async/task/{id}"),
            key,
            None,
        );
        if got["webhook"]["delivered"] == true {
            assert!(got["webhook"]["deliveredAt"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_cluster_nodes_deliver_every_webhook_once() {
    let Some((_db, url, _rt)) = cluster_db() else {
        return;
    };
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "w",
        "--plan",
        "business",
        "--database",
        &url,
    ]);
    let key = org["apiKey"].as_str().expect("apiKey").to_owned();
    let org_id = org["orgId"].as_str().expect("orgId");
    // Signed, so every attempt carries its `<task-id>-<attempt>` id.
    run_json(&["org", "webhook-secret", "--org", org_id, "--database", &url]);
    // Some attempts fail, so retries run on whichever node claims them.
    let (hook, hits) = receiver(vec![500, 500, 503, 500, 500, 500], 200);
    let args = [
        "--allow-private-webhooks",
        "--webhook-retry-base-ms",
        "50",
        "--poll-ms",
        "50",
    ];
    let (mut a, base_a, _) = start_node(&url, &args);
    let (mut b, base_b, _) = start_node(&url, &args);
    let n = 40;
    let mut ids = std::collections::HashSet::new();
    for i in 0..n {
        let base = if i % 2 == 0 { &base_a } else { &base_b };
        let created = http(
            base,
            "POST",
            "/v1/async/task",
            &key,
            Some(
                &json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("p{i}"), "country": "US" },
                          "webhook": { "url": hook } }),
            ),
        );
        ids.insert(created["task"]["id"].as_str().expect("id").to_owned());
    }
    let mut acked: std::collections::HashMap<String, usize> = Default::default();
    let mut attempts_seen = std::collections::HashSet::new();
    while acked.len() < n || acked.values().any(|&c| c == 0) {
        let (head, body, status) = hits
            .recv_timeout(Duration::from_secs(30))
            .expect("deliveries keep coming");
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        let id = v["task"]["id"].as_str().expect("task id").to_owned();
        assert!(ids.contains(&id), "{id}");
        let attempt = header_value(&head, "x-cloro-webhook-id").expect("webhook id");
        assert!(attempt.starts_with(&id), "{attempt}");
        assert!(
            attempts_seen.insert(attempt.to_owned()),
            "attempt {attempt} sent twice"
        );
        if status == 200 {
            *acked.entry(id).or_default() += 1;
        }
    }
    // Nothing else arrives: every delivery was acknowledged once and never sent again.
    if let Ok((_, body, _)) = hits.recv_timeout(Duration::from_millis(1500)) {
        panic!("a delivery came again: {}", String::from_utf8_lossy(&body));
    }
    assert!(acked.values().all(|&c| c == 1), "{acked:?}");
    let _ = (a.kill(), b.kill());
    let _ = (a.wait(), b.wait());
}

#[test]
fn a_dead_nodes_delivery_is_taken_over_after_its_lease() {
    let Some((_db, url, _rt)) = cluster_db() else {
        return;
    };
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "d",
        "--plan",
        "business",
        "--database",
        &url,
    ]);
    let key = org["apiKey"].as_str().expect("apiKey").to_owned();
    let org_id = org["orgId"].as_str().expect("orgId");
    run_json(&["org", "webhook-secret", "--org", org_id, "--database", &url]);
    // The first attempt never gets an answer: its node dies while it waits.
    let (hook, hits) = receiver(vec![0], 200);
    let args = [
        "--allow-private-webhooks",
        "--webhook-timeout-ms",
        "500",
        "--webhook-retry-base-ms",
        "50",
        "--poll-ms",
        "50",
    ];
    let (mut a, base_a, _) = start_node(&url, &args);
    let created = http(
        &base_a,
        "POST",
        "/v1/async/task",
        &key,
        Some(
            &json!({ "taskType": "CHATGPT", "payload": { "prompt": "x", "country": "US" },
                      "webhook": { "url": hook } }),
        ),
    );
    let id = created["task"]["id"].as_str().expect("id").to_owned();
    let (head, _, _) = hits
        .recv_timeout(Duration::from_secs(20))
        .expect("first attempt");
    assert_eq!(
        header_value(&head, "x-cloro-webhook-id"),
        Some(format!("{id}-1").as_str())
    );
    a.kill().expect("kill -9");
    a.wait().expect("reaped");
    // Another node takes the delivery over once the dead node's lease ran out.
    let (mut b, base_b, _) = start_node(&url, &args);
    let (head, _, status) = hits
        .recv_timeout(Duration::from_secs(30))
        .expect("the delivery is taken over");
    assert_eq!(status, 200);
    assert_eq!(
        header_value(&head, "x-cloro-webhook-id"),
        Some(format!("{id}-2").as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http(&base_b, "GET", &format!("/v1/async/task/{id}"), &key, None);
        if got["webhook"]["delivered"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = b.kill();
    let _ = b.wait();
}

/// A fake upstream for the key-leak test: OpenAI's `/v1/responses` answers 401 with the
/// documented error body (https://platform.openai.com/docs/guides/error-codes) quoting the key
/// it was sent; SerpApi's `/search.json` answers 400 with its documented `{"error": …}` body
/// (https://serpapi.com/search-api) quoting the query string, key included.
fn leaky_upstream() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/v1/responses",
                    axum::routing::post(|headers: axum::http::HeaderMap| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = json!({"error": {"message": format!("Incorrect API key provided: {auth}"),
                            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
                        (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body))
                    }),
                )
                .route(
                    "/search.json",
                    axum::routing::get(|axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                        let body = json!({"error": format!("Unsupported parameters in {}", q.unwrap_or_default())});
                        (axum::http::StatusCode::BAD_REQUEST, axum::Json(body))
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let _ = axum::serve(listener, app).await;
        });
    });
    rx.recv().expect("the fake upstream starts")
}

#[test]
fn provider_keys_never_reach_the_logs_the_tasks_or_readyz() {
    const OPENAI_KEY: &str = "sk-proc-7d1c5e2a9b";
    const SERP_KEY: &str = "serp-proc-31f0aa77";
    let upstream = leaky_upstream();
    let dir = tempfile::tempdir().expect("dir");
    let engines = dir.path().join("engines.toml");
    std::fs::write(
        &engines,
        format!(
            "[engines.openai]\nkind = \"openai-responses\"\nprovider = \"openai\"\n\
             base_url = \"http://{upstream}/v1\"\napi_key_env = \"PROC_OPENAI_KEY\"\nmodel = \"gpt-5-mini\"\n\n\
             [engines.serp]\nkind = \"serpapi\"\nbase_url = \"http://{upstream}\"\napi_key_env = \"PROC_SERP_KEY\"\n\n\
             [task_types]\nCHATGPT = \"openai\"\nGOOGLE = \"serp\"\n"
        ),
    )
    .expect("engines file");
    let db = dir.path().join("cloro.db");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "keys",
        "--plan",
        "business",
        "--database",
        db.to_str().expect("utf-8"),
    ]);
    let key = org["apiKey"].as_str().expect("apiKey").to_owned();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Every log line, down to debug and including the HTTP client's.
    let mut child = cloro()
        .env("CLORO_LOG", "debug")
        .env("PROC_OPENAI_KEY", OPENAI_KEY)
        .env("PROC_SERP_KEY", SERP_KEY)
        .args(["serve", "--listen", &listen, "--retry-base-ms", "10"])
        .args(["--database", db.to_str().expect("utf-8")])
        .args(["--engines", engines.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("server starts");
    let base = format!("http://{listen}");
    let chat = http(
        &base,
        "POST",
        "/v1/async/task",
        &key,
        Some(&json!({"taskType": "CHATGPT", "payload": {"prompt": "p", "country": "US"}})),
    );
    let google = http(
        &base,
        "POST",
        "/v1/async/task",
        &key,
        Some(&json!({"taskType": "GOOGLE", "payload": {"query": "q", "country": "US"}})),
    );
    let google_id = google["task"]["id"].as_str().expect("id").to_owned();
    // The GOOGLE task fails on the 400; the CHATGPT engine shows as failing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ready, failed) = loop {
        let ready = http(&base, "GET", "/readyz", &key, None);
        let failed = http(
            &base,
            "GET",
            &format!("/v1/async/task/{google_id}"),
            &key,
            None,
        );
        let failing = ready["engines"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["health"] == "failing"));
        if failing && failed["task"]["status"] == "FAILED" {
            break (ready, failed);
        }
        assert!(Instant::now() < deadline, "{ready} {failed}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let chat = http(
        &base,
        "GET",
        &format!(
            "/v1/async/task/{}",
            chat["task"]["id"].as_str().expect("id")
        ),
        &key,
        None,
    );
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        logs.contains("refused the engine's key"),
        "the logs were captured: {logs}"
    );
    for (what, text) in [
        ("the logs", logs),
        ("/readyz", ready.to_string()),
        ("the failed task", failed.to_string()),
        ("the queued task", chat.to_string()),
    ] {
        for secret in [OPENAI_KEY, SERP_KEY] {
            assert!(!text.contains(secret), "{what} hold a key: {text}");
        }
    }
    assert_eq!(chat["task"]["status"], "QUEUED", "{chat}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id_and_each_task_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("logs.db");
    let log_path = dir.path().join("stderr.log");
    let port = free_port();
    let mut child = cloro()
        .env("CLORO_LOG", "info,cloro=debug")
        .args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db.to_str().expect("path"),
            "--sim-latency-ms",
            "0",
            "--sim-failure-rate",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(&log_path).expect("log file"),
        ))
        .spawn()
        .expect("starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("first line");
    let key = serde_json::from_str::<Value>(&line).expect("JSON line")["apiKey"]
        .as_str()
        .expect("apiKey")
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let task = json!({"taskType": "CHATGPT", "payload": {"prompt": "hi", "country": "US"}});
    let (status, head, created) = http_full(&base, "POST", "/v1/async/task", &key, Some(&task));
    assert_eq!(status, 200, "{created}");
    let request_id = header_value(&head, "x-request-id")
        .expect("X-Request-ID")
        .to_owned();
    let id = created["task"]["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http(&base, "GET", &format!("/v1/async/task/{id}"), &key, None);
        if got["task"]["status"] == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "not completed: {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let task_line = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["task_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no {message:?} line for {id} in:\n{logs}"))
    };
    // The submission's line carries the request's id, the task's and the organization's.
    let queued = task_line("Task QUEUED");
    assert_eq!(
        queued["span"]["request_id"],
        request_id.as_str(),
        "{queued}"
    );
    assert!(queued["org"].is_number(), "{queued}");
    for state in ["Task PROCESSING", "Task COMPLETED"] {
        assert!(task_line(state)["org"].is_number());
    }
    // The request's own line (its status and latency) carries the same id.
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == request_id.as_str() && l["status"] == 200),
        "{logs}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = cloro().args(["completions", shell]).output().expect("runs");
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).expect("utf-8");
        // The script knows the commands and their flags.
        for word in ["serve", "org", "--database", "bench"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    let out = cloro()
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "an unknown shell is refused");
}

/// The headless browser of the browser tests: `CLORO_CHROMIUM`, else Debian's `chromium`.
/// `None` (the test says it skipped) unless `CLORO_REQUIRE_BROWSER` is set, as in CI, which
/// installs it.
fn chromium() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("CLORO_CHROMIUM")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            [
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
                "/usr/bin/google-chrome",
            ]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CLORO_REQUIRE_BROWSER").is_none(),
            "no Chromium (install Debian's `chromium`, or set CLORO_CHROMIUM)"
        );
        eprintln!("SKIPPED: no Chromium (install Debian's `chromium`, or set CLORO_CHROMIUM)");
    }
    found
}

#[test]
fn the_reference_page_renders_in_a_browser_with_no_network() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("docs.db"), &[]);
    let profile = dir.path().join("profile");
    // Every host but this server's is unresolvable: the page must need nothing else.
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{}/docs", serve.base))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    // Redoc drew the document: the operations' summaries are in the page.
    for summary in [
        "Queue 1 to 500 tasks; each item is answered on its own",
        "A task's state, credits and, once terminal, its response",
    ] {
        assert!(
            dom.contains(summary),
            "{summary:?} not rendered ({} bytes of DOM); stderr: {}",
            dom.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A GET with an optional bearer token: status and body text.
fn get_text(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    let (status, _, body) =
        exchange_text(stream, addr, "GET", path, token, "").expect("an HTTP answer");
    (status, body)
}

#[test]
fn the_admin_token_comes_from_the_named_variable_and_metrics_listen_needs_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut cmd = cloro();
    cmd.env("OPS_TOKEN", "t0ken-from-env");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = cmd
        .args([
            "serve",
            "--listen",
            &listen,
            "--database",
            dir.path().join("m.db").to_str().expect("path"),
            "--admin-token-env",
            "OPS_TOKEN",
            "--metrics-listen",
            &metrics_addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = get_text(&listen, "/metrics", None);
    assert_eq!(status, 401);
    let (status, body) = get_text(&listen, "/metrics", Some("t0ken-from-env"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cloro_http_requests_total"), "{body}");
    let (status, body) = get_text(&metrics_addr, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}

/// The text of the element with `id` in a dumped DOM (its first text, up to the next tag).
fn text_by_id(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_owned())
}

/// Headless Chromium (no other host resolvable) loading `url` in `profile`; `--dump-dom`
/// prints the DOM once the page ran `budget_ms` of virtual time. Virtual time stands still
/// while a request is pending, so a page waiting on the server waits for real.
fn chromium_dom(browser: &Path, profile: &Path, url: &str, budget_ms: u32) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--dump-dom",
    ])
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

fn dump_dom(browser: &Path, profile: &Path, url: &str) -> String {
    let out = chromium_dom(browser, profile, url, 3000)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_shows_the_queue_change_live_in_a_browser_and_needs_the_token() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("dash.db");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "d",
        "--concurrency",
        "1",
        "--database",
        db.to_str().expect("path"),
    ]);
    let key = org["apiKey"].as_str().expect("key").to_owned();
    let org_id = org["orgId"].as_str().expect("orgId").to_owned();
    // One slot and a minute per task: one PROCESSING, the rest stay QUEUED while we look.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = cloro()
        .env("CLORO_ADMIN_TOKEN", "dash-t0ken")
        .args(["serve", "--listen", &listen, "--database"])
        .arg(&db)
        .args(["--sim-latency-ms", "60000..60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let server = Serve {
        child,
        base: format!("http://{listen}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The organization's first request makes it known to the node (it shows on the page).
    let s = http(&server.base, "GET", "/v1/async/status", &key, None);
    assert_eq!(s["queuedTasks"], 0, "{s}");

    // The page loads and shows the empty queue; then it waits for a change (`?since=`).
    let url = format!("{}/dashboard#token=dash-t0ken", server.base);
    let page = chromium_dom(&browser, &dir.path().join("p1"), &url, 5000)
        .spawn()
        .expect("chromium runs");
    let answered = |m: &str| {
        cloro::metrics::sample(
            m,
            "cloro_http_requests_total",
            &[
                ("route", "/dashboard/data"),
                ("method", "GET"),
                ("status", "200"),
            ],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = get_text(&listen, "/metrics", Some("dash-t0ken"));
        if answered(&m).is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never asked for data: {m}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Submitted after the page showed its first numbers: what it shows now came live.
    let batch: Vec<Value> = [8, 3, 3, 8]
        .iter()
        .map(|p| json!({"taskType": "CHATGPT", "payload": {"prompt": "p", "country": "US"}, "priority": p}))
        .collect();
    let v = http(
        &server.base,
        "POST",
        "/v1/async/task/batch",
        &key,
        Some(&Value::Array(batch)),
    );
    assert_eq!(v["success"], true, "{v}");
    let out = page.wait_with_output().expect("chromium ends");
    let dom = String::from_utf8_lossy(&out.stdout);
    // The first page load asked once; the changes were shown by the requests that followed.
    let (_, m) = get_text(&listen, "/metrics", Some("dash-t0ken"));
    assert!(answered(&m).is_some_and(|n| n >= 2.0), "{m}");
    // A P8 runs first: the slot holds a P8, one P8 and both P3 wait. The node runs with the
    // default `--workers`.
    let workers = format!("1 / {}", cloro::queue::DEFAULT_WORKERS);
    for (id, want) in [
        (format!("{org_id}-queued"), "3"),
        (format!("{org_id}-processing"), "1"),
        (format!("{org_id}-limit"), "1"),
        (format!("{org_id}-p8"), "1"),
        (format!("{org_id}-p3"), "2"),
        ("node-workers".to_owned(), workers.as_str()),
        ("node-backlog".to_owned(), "0"),
    ] {
        assert_eq!(
            text_by_id(&dom, &id).as_deref(),
            Some(want),
            "{id}: {dom}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dom.contains(r#"data-state="live""#), "{dom}");
    assert!(
        !dom.contains("dash-t0ken"),
        "the token left the address bar"
    );

    // Without the token, or with a wrong one, the page says so and the data is refused.
    let no_token = dump_dom(
        &browser,
        &dir.path().join("p2"),
        &format!("{}/dashboard", server.base),
    );
    assert!(
        no_token.contains(r#"data-state="unauthorized""#),
        "{no_token}"
    );
    assert_eq!(text_by_id(&no_token, &format!("{org_id}-queued")), None);
    let wrong = dump_dom(
        &browser,
        &dir.path().join("p3"),
        &format!("{}/dashboard#token=nope", server.base),
    );
    assert!(wrong.contains(r#"data-state="unauthorized""#), "{wrong}");
    let (status, _) = get_text(&listen, "/dashboard/data", None);
    assert_eq!(status, 401);
    let (status, body) = get_text(&listen, "/dashboard/data", Some("dash-t0ken"));
    assert_eq!(status, 200, "{body}");
}

/// Runs `cloro submit --json` with `args`: its exit code and its summary.
fn submit(args: &[&str]) -> (i32, Value) {
    let out = cloro()
        .arg("submit")
        .args(args)
        .arg("--json")
        .output()
        .expect("cloro runs");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{args:?}: no JSON summary; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), summary)
}

#[test]
fn submit_streams_a_file_reports_its_failures_and_resumes_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("submit.db");
    let dbs = db.to_str().expect("path");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "bulk",
        "--credits",
        "1000000",
        "--database",
        dbs,
    ]);
    let key = org["apiKey"].as_str().expect("apiKey").to_owned();
    // Tasks stay queued (or processing): the status counts every task created.
    let server = Serve::start(&db, &["--workers", "1", "--sim-latency-ms", "3600000"]);
    let task = |i: usize| {
        json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("p{i}"), "country": "US" } })
            .to_string()
    };
    let mut lines: Vec<String> = (1..=5).map(task).collect();
    lines.insert(2, "{not json".into()); // line 3
    lines.insert(
        4,
        json!({ "taskType": "CHATGPT", "payload": { "prompt": "no country" } }).to_string(),
    ); // line 5
    lines.push(String::new()); // a blank line: skipped
    lines.push(json!({ "taskType": "CHATGPT", "payload": { "prompt": "own", "country": "US" }, "idempotencyKey": "mine-1" }).to_string());
    // 5 + 1 valid tasks, 2 bad lines. The interruption: a first run on the first 4 lines only.
    let head = dir.path().join("head.jsonl");
    std::fs::write(&head, lines[..4].join("\n")).expect("write");
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let base = server.base.as_str();
    let common = [
        "--url",
        base,
        "--key",
        &key,
        "--batch-size",
        "2",
        "--concurrency",
        "2",
    ];

    let (code, s) = submit(&[&["--file", head.to_str().expect("path")][..], &common].concat());
    assert_eq!(code, 1, "{s}");
    assert_eq!(
        (
            s["submitted"].as_u64(),
            s["already"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(3), Some(0), Some(1)),
        "{s}"
    );

    let (code, s) = submit(&[&["--file", file.to_str().expect("path")][..], &common].concat());
    assert_eq!(code, 1, "{s}");
    assert_eq!(
        (
            s["submitted"].as_u64(),
            s["already"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(3), Some(3), Some(2)),
        "{s}"
    );
    let failures_file = format!("{}.failures.jsonl", file.display());
    assert_eq!(s["failuresFile"], failures_file.as_str());
    let mut failed: Vec<Value> = std::fs::read_to_string(&failures_file)
        .expect("failures file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    failed.sort_by_key(|f| f["line"].as_u64());
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0]["line"], 3);
    assert_eq!(failed[0]["error"]["code"], "INVALID_JSON");
    assert_eq!(failed[0]["input"], "{not json");
    assert_eq!(failed[1]["line"], 5);
    assert_eq!(failed[1]["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(failed[1]["input"], lines[4].as_str());

    // Again: nothing new; a clean file submits with exit code 0 and leaves no failures file.
    let (_, s) = submit(&[&["--file", file.to_str().expect("path")][..], &common].concat());
    assert_eq!(
        (
            s["submitted"].as_u64(),
            s["already"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(0), Some(6), Some(2)),
        "{s}"
    );
    let status = http(base, "GET", "/v1/async/status", &key, None);
    let created = status["queuedTasks"].as_u64().unwrap_or(0)
        + status["processingTasks"].as_u64().unwrap_or(0);
    assert_eq!(created, 6, "{status}");

    let clean = dir.path().join("clean.jsonl");
    std::fs::write(&clean, task(99) + "\n").expect("write");
    let (code, s) = submit(&[&["--file", clean.to_str().expect("path")][..], &common].concat());
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        (s["submitted"].as_u64(), s["failed"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    assert_eq!(s["failuresFile"], Value::Null);
    assert!(!Path::new(&format!("{}.failures.jsonl", clean.display())).exists());
}

/// A fake batch endpoint answering its requests with the statuses of `script` in turn (a 429
/// with `Retry-After: 1`, any other error without it), then 200 with every item accepted; sends
/// each request's arrival time and item count.
fn scripted_batch_server(
    script: Vec<u16>,
) -> (String, std::sync::mpsc::Receiver<(Instant, usize)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            loop {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                }
                if head.is_empty() {
                    break;
                }
                let at = Instant::now();
                let len = header_value(&head, "content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                let items = serde_json::from_slice::<Vec<Value>>(&body).map_or(0, |v| v.len());
                let (status, extra, answer) = match script.next() {
                    Some(429) => (
                        429,
                        "Retry-After: 1\r\n",
                        json!({ "success": false, "error": { "code": "RATE_LIMIT_EXCEEDED", "message": "slow down" } }),
                    ),
                    Some(status) => (
                        status,
                        "",
                        json!({ "success": false, "error": { "code": "INTERNAL_SERVER_ERROR", "message": "boom" } }),
                    ),
                    None => {
                        let results: Vec<Value> = (0..items)
                            .map(|i| json!({ "success": true, "index": i, "task": { "id": format!("t{i}") } }))
                            .collect();
                        (200, "", json!({ "success": true, "results": results }))
                    }
                };
                let answer = answer.to_string();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() || tx.send((at, items)).is_err() {
                    break;
                }
            }
        }
    });
    (base, rx)
}

fn three_tasks(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("t.jsonl");
    let lines: Vec<String> = (0..3)
        .map(|i| json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("r{i}"), "country": "US" } }).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    file
}

#[test]
fn submit_waits_as_long_as_a_429_asks_and_retries_a_5xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = three_tasks(dir.path());
    let (base, requests) = scripted_batch_server(vec![503, 429]);
    let (code, s) = submit(&[
        "--file",
        file.to_str().expect("path"),
        "--url",
        &base,
        "--key",
        "sk_test",
    ]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        (
            s["submitted"].as_u64(),
            s["already"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{s}"
    );
    let sent: Vec<(Instant, usize)> = (0..3)
        .map(|_| requests.recv().expect("a request"))
        .collect();
    assert!(sent.iter().all(|r| r.1 == 3), "the same batch each time");
    let waited = sent[2].0.duration_since(sent[1].0);
    assert!(
        waited >= Duration::from_millis(950),
        "the retry came {waited:?} after the 429"
    );
    assert!(requests.try_recv().is_err(), "three requests in all");
}

#[test]
fn submit_counts_a_batch_as_failed_after_its_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = three_tasks(dir.path());
    let (base, requests) = scripted_batch_server(vec![500, 502, 500]);
    let failures = dir.path().join("failed.jsonl");
    let (code, s) = submit(&[
        "--file",
        file.to_str().expect("path"),
        "--url",
        &base,
        "--key",
        "sk_test",
        "--attempts",
        "2",
        "--failures",
        failures.to_str().expect("path"),
    ]);
    assert_eq!(code, 1, "{s}");
    assert_eq!(
        (s["submitted"].as_u64(), s["failed"].as_u64()),
        (Some(0), Some(3)),
        "{s}"
    );
    let lines = std::fs::read_to_string(&failures).expect("failures file");
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(
        lines.lines().all(|l| l.contains("INTERNAL_SERVER_ERROR")),
        "{lines}"
    );
    for _ in 0..2 {
        requests.recv().expect("an attempt");
    }
    assert!(requests.try_recv().is_err(), "two attempts in all");
}

/// Runs `cloro` with `args`; it must fail with a message on stderr.
fn run_fails(args: &[&str]) -> String {
    let out = cloro().args(args).output().expect("cloro runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.is_empty(), "{args:?}: no message");
    err
}

/// Runs `cloro` with `args`; it must succeed: its stdout.
fn run_text(args: &[&str]) -> String {
    let out = cloro().args(args).output().expect("cloro runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Issue 13: `org list|show|set`, `key list` and `status`, as tables and as JSON, and their
/// errors (a message and a non-zero exit).
#[test]
fn the_admin_commands_show_and_change_organizations_keys_and_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("x.db");
    let db = db.to_str().expect("path");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "acme",
        "--plan",
        "lite",
        "--database",
        db,
    ]);
    let org_id = org["orgId"].as_str().expect("orgId");
    let api_key = org["apiKey"].as_str().expect("apiKey");

    let list = run_json(&["org", "list", "--json", "--database", db]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["orgId"], org_id);
    assert_eq!(list[0]["plan"], "lite");
    let table = run_text(&["org", "list", "--database", db]);
    let mut lines = table.lines();
    assert!(
        lines.next().expect("header").starts_with("ORG ID"),
        "{table}"
    );
    assert!(lines.next().expect("row").starts_with(org_id), "{table}");

    let shown = run_json(&["org", "show", org_id, "--json", "--database", db]);
    assert_eq!(shown, list[0]);
    assert!(run_text(&["org", "show", org_id, "--database", db]).contains("acme"));

    let set = run_json(&[
        "org",
        "set",
        org_id,
        "--concurrency",
        "4",
        "--credits",
        "77",
        "--queue-limit",
        "9",
        "--rate-limit",
        "5",
        "--json",
        "--database",
        db,
    ]);
    assert_eq!(
        (
            &set["concurrency"],
            &set["credits"],
            &set["queueLimit"],
            &set["rateLimit"]
        ),
        (&json!(4), &json!(77), &json!(9), &json!(5)),
        "{set}"
    );
    assert_eq!(
        run_json(&["org", "show", org_id, "--json", "--database", db]),
        set
    );
    let plan = run_json(&[
        "org",
        "set",
        org_id,
        "--plan",
        "free",
        "--json",
        "--database",
        db,
    ]);
    assert_eq!(
        (&plan["plan"], &plan["concurrency"]),
        (&json!("free"), &json!(1))
    );

    let keys = run_json(&["key", "list", "--org", org_id, "--json", "--database", db]);
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(keys[0]["keyId"], org["keyId"]);
    assert_eq!(keys[0]["revoked"], false);
    let table = run_text(&["key", "list", "--org", org_id, "--database", db]);
    assert!(
        table.contains(org["keyId"].as_str().expect("keyId")),
        "{table}"
    );
    assert!(!table.contains(api_key) && !keys.to_string().contains(api_key));

    let status = run_json(&["status", "--json", "--database", db]);
    assert_eq!(
        (&status["queued"], &status["processing"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(status["organizations"][0]["orgId"], org_id);
    assert_eq!(status["organizations"][0]["concurrency"], 1);
    let one = run_json(&["status", "--org", org_id, "--json", "--database", db]);
    assert_eq!(one["organizations"].as_array().map(Vec::len), Some(1));
    assert!(run_text(&["status", "--database", db]).contains(org_id));

    for bad in [
        vec!["org", "show", "nope", "--database", db],
        vec!["org", "set", "nope", "--concurrency", "2", "--database", db],
        vec!["org", "set", org_id, "--database", db],
        vec!["org", "set", org_id, "--plan", "platinum", "--database", db],
        vec!["key", "list", "--org", "nope", "--database", db],
        vec!["status", "--org", "nope", "--database", db],
    ] {
        run_fails(&bad);
    }
    assert!(run_fails(&["org", "show", "nope", "--database", db]).contains("no organization"));
}

/// Issue 13: `org set` on the SQLite file a server runs on is applied without a restart: the
/// status endpoint reports the new limit, a limit below the running tasks cancels none of them
/// (it only stops new starts), and a higher one lets the dispatcher start more at once.
#[test]
fn org_set_on_a_running_servers_database_applies_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("x.db");
    let dbs = db.to_str().expect("path");
    let org = run_json(&[
        "org",
        "create",
        "--name",
        "live",
        "--plan",
        "business",
        "--concurrency",
        "2",
        "--database",
        dbs,
    ]);
    let org_id = org["orgId"].as_str().expect("orgId");
    let key = org["apiKey"].as_str().expect("key").to_owned();
    // Tasks run for a minute: what is PROCESSING stays so for the whole test.
    let server = Serve::start(&db, &["--sim-latency-ms", "60000", "--workers", "8"]);
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({ "taskType": "CHATGPT", "payload": { "prompt": format!("t{i}"), "country": "US" } }))
        .collect();
    let resp = http(
        &server.base,
        "POST",
        "/v1/async/task/batch",
        &key,
        Some(&Value::Array(batch)),
    );
    assert_eq!(resp["summary"]["succeeded"], 6, "{resp}");
    let first = resp["results"][0]["task"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = http(&server.base, "GET", "/v1/async/status", &key, None);
            if ok(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{what}: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("2 running", &|st| st["processingTasks"] == 2);

    run_json(&[
        "org",
        "set",
        org_id,
        "--concurrency",
        "1",
        "--json",
        "--database",
        dbs,
    ]);
    let st = wait_for("the new limit", &|st| st["concurrency"]["max"] == 1);
    assert_eq!(st["processingTasks"], 2, "nothing cancelled: {st}");
    assert_eq!(st["queuedTasks"], 4, "{st}");

    run_json(&[
        "org",
        "set",
        org_id,
        "--concurrency",
        "5",
        "--json",
        "--database",
        dbs,
    ]);
    wait_for("the dispatcher starts 3 more", &|st| {
        st["concurrency"]["max"] == 5 && st["processingTasks"] == 5
    });
    let status = run_json(&["status", "--org", org_id, "--json", "--database", dbs]);
    assert_eq!(
        (&status["processing"], &status["queued"]),
        (&json!(5), &json!(1)),
        "{status}"
    );

    // `task get` reads the task as the API shows it, only for its own organization.
    let got = run_json(&[
        "task",
        "get",
        &first,
        "--org",
        org_id,
        "--json",
        "--database",
        dbs,
    ]);
    let api = http(
        &server.base,
        "GET",
        &format!("/v1/async/task/{first}"),
        &key,
        None,
    );
    assert_eq!(got["task"]["id"], first.as_str());
    assert_eq!(got["task"]["status"], "PROCESSING", "{got}");
    assert_eq!(got, api);
    assert!(
        run_text(&["task", "get", &first, "--org", org_id, "--database", dbs]).contains(&first)
    );
    let other = run_json(&["org", "create", "--name", "other", "--database", dbs]);
    let other_id = other["orgId"].as_str().expect("orgId");
    run_fails(&["task", "get", &first, "--org", other_id, "--database", dbs]);
    run_fails(&[
        "task",
        "get",
        "not-a-uuid",
        "--org",
        org_id,
        "--database",
        dbs,
    ]);
}

/// Issue 13, cluster mode: each node's `/metrics` counts the work it did itself (the finished
/// tasks of the two nodes add up to what was submitted, not twice that), and the queue depth,
/// read from the shared database, is the same on both.
#[test]
fn two_cluster_nodes_each_count_their_own_work_and_show_the_same_queue() {
    let Some((_db, url, _rt)) = cluster_db() else {
        return;
    };
    let org = |name: &str, concurrency: &str| {
        let o = run_json(&[
            "org",
            "create",
            "--name",
            name,
            "--plan",
            "business",
            "--concurrency",
            concurrency,
            "--credits",
            "1000000",
            "--database",
            &url,
        ]);
        (
            o["orgId"].as_str().expect("org id").to_owned(),
            o["apiKey"].as_str().expect("key").to_owned(),
        )
    };
    let (_, wide) = org("wide", "8");
    let (narrow_id, narrow) = org("narrow", "1");
    let metrics: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes: Vec<(Child, String, String)> = metrics
        .iter()
        .map(|m| {
            start_node(
                &url,
                &["--sim-latency-ms", "1500", "--metrics-listen", m.as_str()],
            )
        })
        .collect();
    let scrape = |i: usize| get_text(&metrics[i], "/metrics", None).1;
    let finished = |m: &str| {
        cloro::metrics::sample(
            m,
            "cloro_tasks_finished_total",
            &[("outcome", "completed"), ("task_type", "CHATGPT")],
        )
        .unwrap_or(0.0)
    };

    // Eight tasks through both nodes, all run at once (concurrency 8), wherever they are claimed.
    let mut ids = Vec::new();
    for i in 0..8 {
        let body =
            json!({"taskType": "CHATGPT", "payload": {"prompt": format!("m{i}"), "country": "US"}});
        let resp = http(
            &nodes[i % 2].1,
            "POST",
            "/v1/async/task",
            &wide,
            Some(&body),
        );
        ids.push(resp["task"]["id"].as_str().expect("id").to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let t = http(
                &nodes[0].1,
                "GET",
                &format!("/v1/async/task/{id}"),
                &wide,
                None,
            );
            if t["task"]["status"] == "COMPLETED" {
                break;
            }
            assert!(Instant::now() < deadline, "not completed: {t}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (a, b) = (finished(&scrape(0)), finished(&scrape(1)));
    assert_eq!(a + b, 8.0, "each node counts only its own: {a} + {b}");

    // The narrow organization runs one task at a time (1.5 s each): the rest wait, and both
    // nodes show the same count. It only goes down, so when node 0 shows the same value before
    // and after node 1's scrape, node 1 must show it too.
    for i in 0..5 {
        let body = json!({"taskType": "CHATGPT", "priority": 5,
                          "payload": {"prompt": format!("n{i}"), "country": "US"}});
        let resp = http(&nodes[0].1, "POST", "/v1/async/task", &narrow, Some(&body));
        assert!(resp["task"]["id"].is_string(), "{resp}");
    }
    let queued = |m: &str| {
        cloro::metrics::sample(
            m,
            "cloro_queued_tasks",
            &[("org", narrow_id.as_str()), ("priority", "5")],
        )
        .unwrap_or(0.0)
    };
    let mut compared = false;
    for _ in 0..20 {
        let before = queued(&scrape(0));
        let other = queued(&scrape(1));
        let after = queued(&scrape(0));
        if before == after {
            assert_eq!(other, before, "the same queue on both nodes");
            assert!(before >= 1.0, "tasks wait behind the one running: {before}");
            compared = true;
            break;
        }
    }
    assert!(compared, "the queue never held still between two scrapes");
    for (child, _, _) in &mut nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
}
