//! `cloro engines list` and `cloro engines check` (`--engines FILE` or `CLORO_ENGINES`; with
//! neither, every task type is shown on the default simulator).
//!
//! Exit codes: 0 when everything is fine (`check`: every engine passed), 1 when a check
//! failed, 2 when the engines file cannot be used (the message names the file and the line).

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ConfiguredEngine, EngineSet, Kind, load, process_env};
use crate::config::{EnginesArgs, EnginesCommand};
use crate::domain::types::TaskType;
use crate::engines::upstream;

/// What the default simulator is called in listings.
pub(crate) const DEFAULT_ENGINE: &str = "simulated (default)";

/// Runs the command; returns the process exit code.
pub fn run(cmd: &EnginesCommand) -> i32 {
    let (args, check) = match cmd {
        EnginesCommand::List(a) => (a, false),
        EnginesCommand::Check(a) => (a, true),
    };
    let set = match open(args) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let (out, code) = if check {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                return 1;
            }
        };
        let results = rt.block_on(check_all(&set));
        let code = i32::from(results.iter().any(|r| !r.ok));
        let out = if args.json {
            check_json(&results)
        } else {
            check_table(&results)
        };
        (out, code)
    } else {
        let rows = list_rows(&set);
        let out = if args.json {
            list_json(&rows)
        } else {
            list_table(&rows)
        };
        (out, 0)
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
    let _ = stdout.flush();
    code
}

fn open(args: &EnginesArgs) -> Result<EngineSet, String> {
    match &args.engines {
        Some(path) => load(path, &process_env),
        None => Ok(EngineSet::empty()),
    }
}

/// One row of `engines list`: a task type and what runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListRow {
    pub(crate) task_type: TaskType,
    /// None: the default simulator.
    pub(crate) engine: Option<String>,
    pub(crate) kind: Kind,
    pub(crate) model: Option<String>,
    pub(crate) base_url: Option<String>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) requests_per_minute: Option<u32>,
    pub(crate) timeout_ms: Option<u64>,
}

/// All 8 task types, in `TaskType::ALL` order.
pub(crate) fn list_rows(set: &EngineSet) -> Vec<ListRow> {
    TaskType::ALL
        .into_iter()
        .map(|task_type| match set.engine_for(task_type) {
            Some(e) => ListRow {
                task_type,
                engine: Some(e.name.clone()),
                kind: e.kind,
                model: e.model.clone(),
                base_url: e.base_url.clone(),
                max_in_flight: e.max_in_flight,
                requests_per_minute: e.requests_per_minute,
                timeout_ms: Some(u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX)),
            },
            None => ListRow {
                task_type,
                engine: None,
                kind: Kind::Simulated,
                model: None,
                base_url: None,
                max_in_flight: None,
                requests_per_minute: None,
                timeout_ms: None,
            },
        })
        .collect()
}

/// `[{taskType, engine, kind, model, baseUrl, maxInFlight, requestsPerMinute, timeoutMs}]`;
/// `engine` is null for the default simulator, absent values are null.
pub(crate) fn list_json(rows: &[ListRow]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "taskType": r.task_type.as_str(),
                "engine": r.engine,
                "kind": r.kind.as_str(),
                "model": r.model,
                "baseUrl": r.base_url,
                "maxInFlight": r.max_in_flight,
                "requestsPerMinute": r.requests_per_minute,
                "timeoutMs": r.timeout_ms,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

fn dash<T: ToString>(v: Option<&T>) -> String {
    v.map_or_else(|| "-".to_owned(), ToString::to_string)
}

pub(crate) fn list_table(rows: &[ListRow]) -> String {
    let header = [
        "TASK TYPE",
        "ENGINE",
        "KIND",
        "MODEL",
        "BASE URL",
        "MAX IN FLIGHT",
        "REQUESTS/MIN",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.task_type.as_str().to_owned(),
                r.engine
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ENGINE.to_owned()),
                r.kind.as_str().to_owned(),
                dash(r.model.as_ref()),
                dash(r.base_url.as_ref()),
                dash(r.max_in_flight.as_ref()),
                dash(r.requests_per_minute.as_ref()),
            ]
        })
        .collect();
    table(&header, &cells)
}

/// Left-aligned columns two spaces apart, no trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(w - cell.chars().count()));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// The outcome of one engine's check.
#[derive(Debug, Clone)]
pub(crate) struct CheckResult {
    pub(crate) engine: String,
    pub(crate) kind: Kind,
    pub(crate) ok: bool,
    pub(crate) latency: Duration,
    /// The adapter's note, or the error (redacted).
    pub(crate) message: String,
}

/// Checks every configured engine at once, each within its own timeout; the default
/// simulator gets a row (nothing to check) when some task type runs on it.
pub(crate) async fn check_all(set: &EngineSet) -> Vec<CheckResult> {
    let mut results = futures_util::future::join_all(set.engines.iter().map(check_one)).await;
    if set.route.iter().any(Option::is_none) {
        results.push(CheckResult {
            engine: DEFAULT_ENGINE.to_owned(),
            kind: Kind::Simulated,
            ok: true,
            latency: Duration::ZERO,
            message: "nothing to check".into(),
        });
    }
    results
}

async fn check_one(e: &ConfiguredEngine) -> CheckResult {
    let start = Instant::now();
    let outcome = tokio::time::timeout(e.timeout, e.engine.check()).await;
    let latency = start.elapsed();
    let (ok, message) = match outcome {
        Ok(Ok(note)) => (true, note),
        Ok(Err(err)) => (false, err.to_string()),
        Err(_) => (
            false,
            format!("no answer within {} ms", e.timeout.as_millis()),
        ),
    };
    // The adapters already keep the key out of their messages; this is the second lock.
    let secret = e
        .api_key_env
        .as_deref()
        .and_then(process_env)
        .unwrap_or_default();
    CheckResult {
        engine: e.name.clone(),
        kind: e.kind,
        ok,
        latency,
        message: upstream::redact(&message, secret.trim()).replace('\n', " "),
    }
}

/// `[{engine, kind, status: "ok"|"error", latencyMs, message}]`
pub(crate) fn check_json(results: &[CheckResult]) -> String {
    let rows: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "engine": r.engine,
                "kind": r.kind.as_str(),
                "status": if r.ok { "ok" } else { "error" },
                "latencyMs": u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
                "message": r.message,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

pub(crate) fn check_table(results: &[CheckResult]) -> String {
    let cells: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.engine.clone(),
                r.kind.as_str().to_owned(),
                if r.ok { "ok" } else { "error" }.to_owned(),
                r.latency.as_millis().to_string(),
                r.message.clone(),
            ]
        })
        .collect();
    table(
        &["ENGINE", "KIND", "STATUS", "LATENCY MS", "MESSAGE"],
        &cells,
    )
}
