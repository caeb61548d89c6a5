//! `cloro engines list|check` through the built binary: output and exit codes (0: all passed,
//! 1: a check failed, 2: a bad engines file), against a local fake upstream in SerpApi's
//! documented Account API format (serpapi.com/account-api).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Output};

use axum::extract::RawQuery;
use axum::http::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "serp-cli-secret-42";

fn cloro() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloro"));
    c.env_remove("CLORO_ENGINES")
        .env_remove("DATABASE_URL")
        .env("CLORO_LOG", "warn");
    c
}

/// A fake SerpApi answering `account.json`: 200 with the account for [`KEY`], else 401.
fn fake_serpapi() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/account.json",
                axum::routing::get(|RawQuery(q): RawQuery| async move {
                    if q.as_deref() == Some(&format!("api_key={KEY}")) {
                        (
                            StatusCode::OK,
                            axum::Json(json!({"api_key": KEY, "plan_name": "Developer Plan",
                                "total_searches_left": 4990, "account_rate_limit_per_hour": 1000})),
                        )
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"})),
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let _ = axum::serve(listener, app).await;
        });
    });
    rx.recv().expect("the fake starts")
}

fn file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("engines.toml");
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

fn serp_file(addr: SocketAddr) -> String {
    format!(
        "[engines.serp]\nkind = \"serpapi\"\nbase_url = \"http://{addr}\"\napi_key_env = \"CLI_SERP_KEY\"\n\n[task_types]\nGOOGLE = \"serp\"\nAIMODE = \"serp\"\n"
    )
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_no_key(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(KEY),
            "the key leaked"
        );
    }
}

#[test]
fn without_a_file_everything_is_listed_on_the_simulator() {
    let out = cloro()
        .args(["engines", "list", "--json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let rows = stdout_json(&out);
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter()
            .all(|r| r["engine"].is_null() && r["kind"] == "simulated")
    );

    let out = cloro().args(["engines", "list"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(text.contains("simulated (default)"), "{text}");

    let out = cloro().args(["engines", "check"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "nothing to check passes");
}

#[test]
fn check_passes_with_a_good_key_and_fails_with_a_wrong_one() {
    let addr = fake_serpapi();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(&dir, &serp_file(addr));

    let out = cloro()
        .args(["engines", "check", "--json", "--engines", &path])
        .env("CLI_SERP_KEY", KEY)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout_json(&out);
    assert_eq!(rows[0]["engine"], "serp");
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(
        rows[0]["message"],
        "Developer Plan, 4990 searches left, 1000 per hour"
    );
    assert_eq!(rows[1]["engine"], "simulated (default)");
    assert_no_key(&out);

    // The same through CLORO_ENGINES, with a wrong key: exit code 1.
    let out = cloro()
        .args(["engines", "check"])
        .env("CLORO_ENGINES", &path)
        .env("CLI_SERP_KEY", "wrong-key")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ENGINE"), "{text}");
    assert!(text.contains("error"), "{text}");
    assert!(text.contains("Invalid API key"), "{text}");

    let out = cloro()
        .args(["engines", "list", "--json", "--engines", &path])
        .env("CLI_SERP_KEY", KEY)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let rows = stdout_json(&out);
    let google = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["taskType"] == "GOOGLE"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(google["engine"], "serp");
    assert_eq!(google["baseUrl"], format!("http://{addr}"));
    assert_no_key(&out);
}

#[test]
fn a_bad_file_exits_with_2_and_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        &dir,
        "[engines.serp]\nkind = \"serpapi\"\napi_key_env = \"CLI_SERP_KEY\"\nmodle = \"x\"\n",
    );
    for cmd in ["list", "check"] {
        let out = cloro()
            .args(["engines", cmd, "--engines", &path])
            .env("CLI_SERP_KEY", KEY)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{path}:4: unknown key \"modle\" in [engines.serp]"
            )),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    // A variable that is not set: exit code 2 too, naming the variable.
    let path = file(&dir, &serp_file("127.0.0.1:9".parse().expect("addr")));
    let out = cloro()
        .args(["engines", "check", "--engines", &path])
        .env_remove("CLI_SERP_KEY")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLI_SERP_KEY"));
}

#[test]
fn an_unreachable_engine_fails_the_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        &dir,
        &serp_file(format!("127.0.0.1:{port}").parse().expect("addr")),
    );
    let out = cloro()
        .args(["engines", "check", "--json", "--engines", &path])
        .env("CLI_SERP_KEY", KEY)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let rows = stdout_json(&out);
    assert_eq!(rows[0]["status"], "error");
    assert!(
        rows[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach the upstream")),
        "{rows}"
    );
}

#[test]
fn serve_takes_the_engines_flag() {
    let out = cloro().args(["serve", "--help"]).output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--engines <ENGINES>"), "{help}");
    assert!(help.contains("CLORO_ENGINES"), "{help}");
}

/// A SQLite database at `path` where a server recorded `serp` as failing.
fn database_with_a_failing_engine(path: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let db = cloro::store::Database::Sqlite(path.to_owned());
        let dir = cloro::store::admin::open(&db).await.expect("database");
        dir.record_engine_health(
            "serp",
            "failing",
            Some(
                "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key",
            ),
            1_775_746_800_000,
            1_775_746_860_000,
        )
        .await
        .expect("health row");
    });
}

#[test]
fn list_shows_the_health_recorded_in_the_database_and_still_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(&dir, &serp_file("127.0.0.1:9".parse().expect("addr")));
    let db = dir.path().join("health.db");
    database_with_a_failing_engine(&db);
    let db = db.to_str().expect("utf-8 path").to_owned();

    let out = cloro()
        .args([
            "engines",
            "list",
            "--json",
            "--engines",
            &path,
            "--database",
            &db,
        ])
        .env("CLI_SERP_KEY", KEY)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "an unhealthy engine does not fail list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout_json(&out);
    let row = |t: &str| {
        rows.as_array()
            .and_then(|a| a.iter().find(|r| r["taskType"] == t))
            .cloned()
            .unwrap_or_default()
    };
    let google = row("GOOGLE");
    assert_eq!(google["engine"], "serp");
    assert_eq!(google["health"], "failing");
    assert!(
        google["healthMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid API key")),
        "{google}"
    );
    assert_eq!(google["healthSince"], "2026-04-09T15:00:00.000Z");
    assert_eq!(row("CHATGPT")["health"], "ok", "the simulator");
    assert_no_key(&out);

    // The table, with the database from DATABASE_URL.
    let out = cloro()
        .args(["engines", "list", "--engines", &path])
        .env("DATABASE_URL", format!("sqlite://{db}"))
        .env("CLI_SERP_KEY", KEY)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().next().is_some_and(|l| l.ends_with("HEALTH")),
        "{text}"
    );
    let google = text
        .lines()
        .find(|l| l.starts_with("GOOGLE "))
        .unwrap_or_default();
    assert!(google.contains("failing: Invalid API key."), "{text}");

    // A database that does not exist: health unknown, and nothing is created.
    let missing = dir.path().join("missing.db");
    let out = cloro()
        .args([
            "engines",
            "list",
            "--json",
            "--engines",
            &path,
            "--database",
        ])
        .arg(&missing)
        .env("CLI_SERP_KEY", KEY)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let rows = stdout_json(&out);
    let google = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["taskType"] == "GOOGLE"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(google["health"], "unknown");
    assert_eq!(google["healthMessage"], Value::Null);
    assert!(!missing.exists(), "list does not create a database");
}
