//! `cloro engines list` and `cloro engines check` (`--engines FILE` or `CLORO_ENGINES`; with
//! neither, every task type is shown on the default simulator).
//!
//! Exit codes: 0 when everything is fine (`check`: every engine passed), 1 when a check
//! failed, 2 when the engines file (or `list`'s `--database` URL) cannot be used (the message
//! names the file and the line).
//!
//! `list` shows each engine's health as the servers last recorded it in the database
//! (`engine_health`): `--database`/`DATABASE_URL`, else the default embedded database if that
//! file exists. The database is only read (never created or migrated); when it cannot be read
//! the health is `unknown` and a warning goes to stderr. An unhealthy engine does not change the
//! exit code of `list` (`check` is the command that fails).

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ConfiguredEngine, EngineSet, Kind, load, process_env};
use crate::config::{EnginesArgs, EnginesCommand};
use crate::domain::types::TaskType;
use crate::engines::upstream;
use crate::store::EngineHealthRow;

/// What the default simulator is called in listings.
pub(crate) const DEFAULT_ENGINE: &str = "simulated (default)";

/// Runs the command; returns the process exit code.
pub fn run(cmd: &EnginesCommand) -> i32 {
    let (args, list) = match cmd {
        EnginesCommand::List(a) => (&a.engines, Some(a)),
        EnginesCommand::Check(a) => (a, None),
    };
    let set = match open(args) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let database = match list.map(|l| crate::config::parse_database(l.db.database.as_deref())) {
        Some(Err(e)) => {
            eprintln!("{e}");
            return 2;
        }
        Some(Ok(db)) => Some(db),
        None => None,
    };
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
    let (out, code) = if let Some(db) = database {
        let health = rt.block_on(read_health(&db, &set));
        let mut rows = list_rows(&set);
        apply_health(&mut rows, &health);
        let out = if args.json {
            list_json(&rows)
        } else {
            list_table(&rows)
        };
        (out, 0)
    } else {
        let results = rt.block_on(check_all(&set));
        let code = i32::from(results.iter().any(|r| !r.ok));
        let out = if args.json {
            check_json(&results)
        } else {
            check_table(&results)
        };
        (out, code)
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

/// Longest `engines list` waits for the database's engine health.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine health recorded in `db`; nothing (every engine `unknown`) when no engine is
/// configured or the database cannot be read (a warning on stderr says why).
async fn read_health(db: &crate::store::Database, set: &EngineSet) -> Vec<EngineHealthRow> {
    if set.engines.is_empty() {
        return Vec::new();
    }
    let read = tokio::time::timeout(
        HEALTH_READ_TIMEOUT,
        crate::store::admin::read_engine_health(db),
    )
    .await;
    match read {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            eprintln!("warning: cannot read the engines' health from the database: {e}");
            Vec::new()
        }
        Err(_) => {
            eprintln!(
                "warning: the database did not answer within {} s; health unknown",
                HEALTH_READ_TIMEOUT.as_secs()
            );
            Vec::new()
        }
    }
}

/// An engine's health as `engines list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCell {
    /// `ok`, `rate-limited`, `failing` or `unknown` (no row in the database).
    pub(crate) state: String,
    pub(crate) message: Option<String>,
    /// Since when (epoch ms), if recorded.
    pub(crate) since_ms: Option<i64>,
}

impl HealthCell {
    fn of(state: &str) -> HealthCell {
        HealthCell {
            state: state.to_owned(),
            message: None,
            since_ms: None,
        }
    }

    /// `ok`, `rate-limited`, `failing: <message>`, `unknown`.
    fn cell(&self) -> String {
        match (self.state.as_str(), &self.message) {
            ("failing", Some(m)) => format!("failing: {m}"),
            (state, _) => state.to_owned(),
        }
    }
}

/// Fills in each configured engine's recorded health (rows of the default simulator stay `ok`).
pub(crate) fn apply_health(rows: &mut [ListRow], health: &[EngineHealthRow]) {
    for row in rows {
        let Some(name) = &row.engine else { continue };
        if let Some(h) = health.iter().find(|h| &h.name == name) {
            row.health = HealthCell {
                state: h.health.clone(),
                message: h.message.clone().map(|m| m.replace('\n', " ")),
                since_ms: Some(h.since_ms),
            };
        }
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
    /// `unknown` for a configured engine until [`apply_health`]; `ok` on a simulator.
    pub(crate) health: HealthCell,
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
                // The simulator has no key to refuse: `ok` until a server says otherwise.
                health: HealthCell::of(if e.kind == Kind::Simulated {
                    "ok"
                } else {
                    "unknown"
                }),
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
                health: HealthCell::of("ok"),
            },
        })
        .collect()
}

/// `[{taskType, engine, kind, model, baseUrl, maxInFlight, requestsPerMinute, timeoutMs,
/// health, healthMessage, healthSince}]`; `engine` is null for the default simulator, absent
/// values are null; `healthSince` is an ISO 8601 UTC time.
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
                "health": r.health.state,
                "healthMessage": r.health.message,
                "healthSince": r.health.since_ms.map(crate::time_fmt::format_ms),
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
        "HEALTH",
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
                r.health.cell(),
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
