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
    ] {
        let out = cloro().args(&bad).output().expect("runs");
        assert!(!out.status.success(), "{bad:?}");
        assert!(!out.stderr.is_empty());
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
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (_, body) = raw.split_once("\r\n\r\n").expect("http response");
    serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
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
