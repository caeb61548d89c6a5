//! `cloro submit`: a bulk loader. It streams a JSONL file of tasks (one batch item per line)
//! through `POST /v1/async/task/batch` of a running server, a few batches in flight, so a large
//! file is queued without a script of one's own and without holding the file in memory.
//!
//! Resumable by construction: a line without its own `idempotencyKey` is sent with a derived
//! one, `<prefix>-<first 32 hex digits of the SHA-256 of the line's canonical JSON (keys
//! sorted, no whitespace)>-<line number>` (prefix `--key-prefix`, default `submit`). The same
//! file re-run after an interruption (or a lost answer, or a retried request) sends the same
//! keys, and the server answers the lines it already accepted `RESOURCE_ALREADY_EXISTS`: they
//! are counted as "already submitted", not as failures. The key depends on the content and the
//! position, not on the file's name: a moved or copied file resumes too; an edited line is a new
//! task; two identical lines are two tasks. A line that brings its own key keeps it (the server
//! deduplicates on it the same way).
//!
//! Whole-request answers: a 429 (`RATE_LIMIT_EXCEEDED`, `QUEUE_LIMIT_EXCEEDED`, …) waits
//! `Retry-After` (else `X-RateLimit-Reset`, else a backoff; at most a minute) and sends the
//! same batch again, without limit; a 5xx or a transport error is retried with a backoff up to
//! `--attempts` times, then the batch's lines count as failed; a 413 splits the batch in two;
//! a 401 stops the run (every batch would get it); any other answer fails the batch's lines.
//! Per-line failures (invalid JSON, items the server refused) go to the failures file, one JSON
//! object per line: `{"line", "error": {"code", "message", "details"?}, "input"}`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::config::SubmitArgs;

/// Longest single wait before a retry, whatever the server asks.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Time limit of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One line of the file that parsed as a JSON object, ready to send.
#[derive(Debug)]
struct Line {
    no: u64,
    input: String,
    task: Value,
}

/// What the reader thread hands over.
enum Read {
    /// Up to `--batch-size` lines, and the bytes of the file they span.
    Batch(Vec<Line>, u64),
    /// A line that is not a JSON object.
    Invalid {
        no: u64,
        input: String,
        error: String,
        bytes: u64,
    },
    /// The file cannot be read on.
    Error(String),
}

/// The answer to one batch (after retries).
enum Outcome {
    /// One error (or `None`: accepted) per line, in order.
    Items(Vec<Option<Value>>),
    /// Every line failed with this error.
    Failed(Value),
    /// Too large: send each half on its own.
    Split,
    /// The run cannot go on.
    Fatal(String),
}

/// The counts of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    submitted: u64,
    already: u64,
    failed: u64,
}

/// Runs `cloro submit`; the process's exit code: 0 if no line failed, else 1.
pub fn run(args: SubmitArgs) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(submit(args))
}

async fn submit(args: SubmitArgs) -> anyhow::Result<i32> {
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let failures_path = args.failures.clone().unwrap_or_else(|| {
        let mut p = args.file.clone().into_os_string();
        p.push(".failures.jsonl");
        PathBuf::from(p)
    });
    let mut failures = Failures::create(&failures_path)?;
    let url = batch_url(&args.url)?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;

    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(size);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {elapsed} {msg}")
        {
            bar.set_style(style);
        }
        bar
    };

    let concurrency = args.concurrency as usize;
    let (tx, mut rx) = tokio::sync::mpsc::channel(concurrency);
    let batch_size = args.batch_size as usize;
    let prefix = args.key_prefix.clone();
    std::thread::spawn(move || read_file(file, batch_size, &prefix, tx));

    let mut counts = Counts::default();
    let mut inflight: JoinSet<(Vec<Line>, u64, Outcome)> = JoinSet::new();
    // Halves of batches answered 413, sent before new ones.
    let mut pending: VecDeque<(Vec<Line>, u64)> = VecDeque::new();
    let mut reading = true;
    let attempts = args.attempts;
    loop {
        while inflight.len() < concurrency {
            let Some((lines, bytes)) = pending.pop_front() else {
                break;
            };
            let (client, url, key) = (client.clone(), url.clone(), args.key.clone());
            inflight.spawn(async move {
                let outcome = send(&client, &url, &key, &lines, attempts).await;
                (lines, bytes, outcome)
            });
        }
        tokio::select! {
            read = rx.recv(), if reading && inflight.len() < concurrency => match read {
                Some(Read::Batch(lines, bytes)) => pending.push_back((lines, bytes)),
                Some(Read::Invalid { no, input, error, bytes }) => {
                    counts.failed += 1;
                    failures.write(no, &json!({ "code": "INVALID_JSON", "message": error }), &input)?;
                    bar.inc(bytes);
                }
                Some(Read::Error(e)) => bail!("reading {}: {e}", args.file.display()),
                None => reading = false,
            },
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                let (lines, bytes, outcome) = done.context("a request task died")?;
                match outcome {
                    Outcome::Items(errors) => {
                        for (line, error) in lines.iter().zip(errors) {
                            match error {
                                None => counts.submitted += 1,
                                Some(e) if e["code"] == "RESOURCE_ALREADY_EXISTS" => counts.already += 1,
                                Some(e) => {
                                    counts.failed += 1;
                                    failures.write(line.no, &e, &line.input)?;
                                }
                            }
                        }
                        bar.inc(bytes);
                    }
                    Outcome::Failed(e) => {
                        for line in &lines {
                            counts.failed += 1;
                            failures.write(line.no, &e, &line.input)?;
                        }
                        bar.inc(bytes);
                    }
                    Outcome::Split => {
                        let mut first = lines;
                        let second = first.split_off(first.len() / 2);
                        let half = bytes / 2;
                        pending.push_front((second, bytes - half));
                        pending.push_front((first, half));
                    }
                    Outcome::Fatal(e) => bail!("{e}"),
                }
                bar.set_message(format!(
                    "submitted {}, already {}, failed {}",
                    counts.submitted, counts.already, counts.failed
                ));
            },
            // Nothing to read, nothing in flight (so nothing pending either: see above).
            else => break,
        }
    }
    bar.finish_and_clear();
    let kept = failures.finish()?;
    let failures_file = kept.then(|| failures_path.display().to_string());
    if args.json {
        println!(
            "{}",
            json!({
                "submitted": counts.submitted,
                "already": counts.already,
                "failed": counts.failed,
                "failuresFile": failures_file,
            })
        );
    } else {
        println!(
            "Submitted {}, already submitted {}, failed {}.",
            counts.submitted, counts.already, counts.failed
        );
        if let Some(path) = failures_file {
            println!("Failed lines (with their errors): {path}");
        }
    }
    Ok(i32::from(counts.failed > 0))
}

/// The batch endpoint under `base` (a full endpoint URL is taken as it is).
fn batch_url(base: &str) -> anyhow::Result<reqwest::Url> {
    let base = base.trim_end_matches('/');
    let full = if base.ends_with("/v1/async/task/batch") {
        base.to_owned()
    } else {
        format!("{base}/v1/async/task/batch")
    };
    let url = reqwest::Url::parse(&full).with_context(|| format!("--url {base:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--url must be http:// or https://");
    }
    Ok(url)
}

/// The failures file: truncated when the run starts, removed at the end if nothing failed (so
/// a stale one from an earlier run never lingers).
struct Failures {
    path: PathBuf,
    out: BufWriter<File>,
    written: bool,
}

impl Failures {
    fn create(path: &Path) -> anyhow::Result<Failures> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Failures {
            path: path.to_owned(),
            out: BufWriter::new(file),
            written: false,
        })
    }

    fn write(&mut self, line: u64, error: &Value, input: &str) -> anyhow::Result<()> {
        let record = json!({ "line": line, "error": error, "input": input });
        writeln!(self.out, "{record}")
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.written = true;
        Ok(())
    }

    /// Flushes; whether the file was kept.
    fn finish(mut self) -> anyhow::Result<bool> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))?;
        if !self.written {
            drop(self.out);
            let _ = std::fs::remove_file(&self.path);
        }
        Ok(self.written)
    }
}

/// The reader thread: lines to batches, with derived keys; stops when the receiver is gone.
fn read_file(file: File, batch_size: usize, prefix: &str, tx: tokio::sync::mpsc::Sender<Read>) {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut no = 0u64;
    let mut batch = Vec::with_capacity(batch_size);
    let mut batch_bytes = 0u64;
    loop {
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n as u64,
            Err(e) => {
                let _ = tx.blocking_send(Read::Error(e.to_string()));
                return;
            }
        };
        no += 1;
        let text = String::from_utf8_lossy(&buf);
        let input = text.trim();
        if input.is_empty() {
            batch_bytes += n;
            continue;
        }
        let parsed = match std::str::from_utf8(&buf) {
            Err(_) => Err("the line is not UTF-8".to_owned()),
            Ok(_) => match serde_json::from_str::<Value>(input) {
                Ok(Value::Object(task)) => Ok(task),
                Ok(_) => Err("the line is not a JSON object".to_owned()),
                Err(e) => Err(format!("invalid JSON: {e}")),
            },
        };
        match parsed {
            Ok(mut task) => {
                if !task.contains_key("idempotencyKey") {
                    let key = derived_key(prefix, &task, no);
                    task.insert("idempotencyKey".into(), Value::String(key));
                }
                batch.push(Line {
                    no,
                    input: input.to_owned(),
                    task: Value::Object(task),
                });
                batch_bytes += n;
                if batch.len() == batch_size {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    if tx
                        .blocking_send(Read::Batch(full, std::mem::take(&mut batch_bytes)))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(error) => {
                let invalid = Read::Invalid {
                    no,
                    input: input.to_owned(),
                    error,
                    bytes: n,
                };
                if tx.blocking_send(invalid).is_err() {
                    return;
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Read::Batch(batch, batch_bytes));
    }
}

/// `<prefix>-<32 hex digits of SHA-256(canonical JSON)>-<line number>` (at most 100 + 54
/// characters, within the API's 256).
fn derived_key(prefix: &str, task: &Map<String, Value>, line: u64) -> String {
    let mut canonical = String::new();
    write_canonical(&mut canonical, &Value::Object(task.clone()));
    let digest = Sha256::digest(canonical.as_bytes());
    format!("{prefix}-{}-{line}", hex::encode(&digest[..16]))
}

/// JSON with object keys sorted and no whitespace, so a reformatted line keeps its key.
fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = m.get(k) {
                    write_canonical(out, v);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Sends one batch until it is answered (retrying as the module's docs say).
async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    key: &str,
    lines: &[Line],
    attempts: u32,
) -> Outcome {
    let body: Vec<&Value> = lines.iter().map(|l| &l.task).collect();
    let mut failures = 0u32;
    let mut limited = 0u32;
    loop {
        let answer = client
            .post(url.clone())
            .bearer_auth(key)
            .json(&body)
            .send()
            .await;
        let (error, wait) = match answer {
            Err(e) => (
                json!({ "code": "TRANSPORT_ERROR", "message": e.to_string() }),
                None,
            ),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let wait = retry_after(resp.headers());
                let text = match resp.text().await {
                    Ok(t) => t,
                    Err(e) => {
                        failures += 1;
                        let e = json!({ "code": "TRANSPORT_ERROR", "message": e.to_string() });
                        if failures >= attempts {
                            return Outcome::Failed(e);
                        }
                        tokio::time::sleep(backoff(failures)).await;
                        continue;
                    }
                };
                let body: Option<Value> = serde_json::from_str(&text).ok();
                match status {
                    200 => {
                        return match body.as_ref().and_then(|b| b["results"].as_array()) {
                            Some(results) => Outcome::Items(item_errors(results, lines.len())),
                            None => Outcome::Failed(json!({
                                "code": "BAD_ANSWER",
                                "message": "the server's answer has no `results`",
                            })),
                        };
                    }
                    429 => {
                        limited += 1;
                        let wait = wait.unwrap_or_else(|| backoff(limited)).min(MAX_WAIT);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    401 => {
                        return Outcome::Fatal(format!(
                            "the server refused the API key (401): {}",
                            error_of(body.as_ref(), status, &text)["message"]
                        ));
                    }
                    413 if lines.len() > 1 => return Outcome::Split,
                    s if s >= 500 => (error_of(body.as_ref(), status, &text), wait),
                    _ => return Outcome::Failed(error_of(body.as_ref(), status, &text)),
                }
            }
        };
        failures += 1;
        if failures >= attempts {
            return Outcome::Failed(error);
        }
        tokio::time::sleep(wait.unwrap_or_else(|| backoff(failures)).min(MAX_WAIT)).await;
    }
}

/// Each line's error from a 200's `results` (`None`: accepted); a missing item is an error.
fn item_errors(results: &[Value], n: usize) -> Vec<Option<Value>> {
    (0..n)
        .map(|i| match results.get(i) {
            Some(r) if r["success"] == true => None,
            Some(r) if r["error"].is_object() => Some(r["error"].clone()),
            _ => Some(
                json!({ "code": "NO_ANSWER", "message": "the server did not answer this item" }),
            ),
        })
        .collect()
}

/// The cloro envelope's `error` of an answer, else one made of its status and text.
fn error_of(body: Option<&Value>, status: u16, text: &str) -> Value {
    match body.map(|b| &b["error"]) {
        Some(e) if e.is_object() => e.clone(),
        _ => {
            let text: String = text.chars().take(500).collect();
            json!({ "code": format!("HTTP_{status}"), "message": text })
        }
    }
}

/// The wait a 429 or 503 asks for: `Retry-After` (seconds), else `X-RateLimit-Reset` (seconds
/// from now, or a Unix time in seconds when it is that large).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(secs) = number("retry-after") {
        return Some(Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())));
    }
    let reset = number("x-ratelimit-reset")?;
    let secs = if reset > 1e9 {
        let now = crate::clock::Clock::system().now_ms() as f64 / 1000.0;
        (reset - now).max(0.0)
    } else {
        reset
    };
    Some(Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

/// 0.5 s doubling per attempt, at most 30 s, each drawn from 0.5 to 1.5 times that.
fn backoff(attempt: u32) -> Duration {
    let base = 0.5 * f64::from(1u32 << attempt.saturating_sub(1).min(6));
    let secs = base.min(30.0) * rand::random_range(0.5..1.5);
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_derived_key_ignores_key_order_and_whitespace_but_not_content_or_position() {
        let a =
            obj(json!({ "taskType": "CHATGPT", "payload": { "prompt": "x", "country": "US" } }));
        let b =
            obj(json!({ "payload": { "country": "US", "prompt": "x" }, "taskType": "CHATGPT" }));
        let c =
            obj(json!({ "taskType": "CHATGPT", "payload": { "prompt": "y", "country": "US" } }));
        let k = derived_key("submit", &a, 7);
        assert_eq!(k, derived_key("submit", &b, 7));
        assert_ne!(k, derived_key("submit", &c, 7));
        assert_ne!(k, derived_key("submit", &a, 8));
        assert_ne!(k, derived_key("other", &a, 7));
        assert!(k.starts_with("submit-") && k.ends_with("-7"), "{k}");
        assert_eq!(k.len(), "submit-".len() + 32 + "-7".len());
    }

    #[test]
    fn retry_after_then_the_reset_header_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-ratelimit-reset", "2".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "99999".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(MAX_WAIT));
    }

    #[test]
    fn a_missing_or_refused_item_is_an_error_of_its_line() {
        let results = [
            json!({ "success": true, "index": 0 }),
            json!({ "success": false, "index": 1, "error": { "code": "VALIDATION_ERROR" } }),
        ];
        let e = item_errors(&results, 3);
        assert_eq!(e[0], None);
        assert_eq!(e[1], Some(json!({ "code": "VALIDATION_ERROR" })));
        assert_eq!(
            e[2].as_ref().map(|e| e["code"].clone()),
            Some(json!("NO_ANSWER"))
        );
    }
}
