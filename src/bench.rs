//! `cloro bench`: a repeatable benchmark of the queue measured THROUGH ITS HTTP API.
//!
//! Every scenario starts its own in-process server (`app::start`) on `127.0.0.1:<random port>`
//! over a fresh SQLite file in a new directory under the system temporary directory (removed
//! afterwards). The organizations are created before the server starts (plan `enterprise-5k`,
//! 10^12 credits, a queue limit above what the scenario enqueues, a concurrency chosen per
//! scenario), and every request is real HTTP/1.1 over loopback with `reqwest`, so the numbers
//! include JSON parsing, validation, authentication, the durable commit (WAL,
//! `synchronous=FULL`) and the response. The client runs in the same process and on the same
//! Tokio runtime as the server, so it competes with the server for the same CPU cores.
//!
//! Scenarios (`--scenario NAME`, default all, in this order):
//!
//! 1. **`enqueue`**: the dispatcher is paused right after start, so nothing is claimed. `--tasks`
//!    (default 200 000) small CHATGPT tasks (`{"prompt":"bench prompt <i>","country":"US"}`,
//!    priority `(i % 10) + 1`) are sent as `POST /v1/async/task/batch` requests of `--batch`
//!    (default 500) tasks by `--clients` (default 4) concurrent clients, each with its own
//!    connection. Reported: tasks/s = tasks / wall time (first request to last response), and
//!    the p50/p99/max latency of one batch request (request sent to whole body received). Every
//!    response must be a 200 whose `summary.succeeded` equals the batch size; any other answer
//!    counts as a failure and fails the bench.
//! 2. **`drain`**: a fresh server with the dispatcher running, the simulated engine at 0 ms
//!    latency, `--workers` (default 256) workers and `--orgs` (default 4) organizations of
//!    concurrency 1000. Each organization submits its share of `--tasks` in batches from its own
//!    client, all at once. Measured from the first request until every task has finished
//!    (`queue::wait_idle` on the server's store after the last submission was answered), then
//!    checked over HTTP: `GET /v1/async/status` shows 0 queued and 0 processing for every
//!    organization, and `GET /v1/credits` shows that exactly the credits of every accepted task
//!    were charged (a charge happens only on COMPLETED). Reported: (enqueue + drain) tasks/s,
//!    and when the last submission was answered.
//! 3. **`latency`**: "from the 200 of a submission to PROCESSING, with a free slot". The engine is
//!    a wrapper that records `Instant::now()` per task id when it is called (a claimed task is
//!    already durably PROCESSING by then), then runs the simulated engine at 0 ms. `--samples`
//!    (default 2000) single-task `POST /v1/async/task` requests are sent one at a time; for each
//!    the instant its 200 arrived (response head received) and its task id are recorded. After
//!    draining, latency = engine start − 200 received, clamped at 0; the number of negative
//!    values (the task was already running before the client read its 200) is reported too.
//!    Reported: p50/p90/p99/max, plus the p50/p99 of the submission round trip itself.
//! 4. **`status`**: the dispatcher is paused; `--queued` (default 1 000 000) tasks across the 10
//!    priorities are enqueued into one organization in batches by `--clients` clients; then
//!    `--status-samples` (default 5000) sequential `GET /v1/async/status` requests are timed
//!    on that organization, and as many on a second organization of the same server whose queue
//!    is empty (each answer is checked: `queuedTasks` must be the expected count). Reported:
//!    p50/p99/max for both, to show that the cost does not grow with queue depth; then the
//!    resident memory with the whole queue in place: `VmRSS` and `VmHWM` from
//!    `/proc/self/status`, which cover the WHOLE bench process (server, client, and whatever
//!    earlier scenarios left in the allocator; `VmHWM` is the peak since the process started),
//!    with `VmRSS` before this scenario's server started for reference.
//!
//! 5. **`load`** (not part of `all`): `--duration-secs` (default 60) of mixed traffic at a fixed
//!    offered rate, `--rate` requests/s in total (default 2000), from `--clients` clients per
//!    organization over `--orgs` organizations (each client its own connection pool). Every
//!    client sends on its own fixed schedule (rate / clients; a late request is sent at once, the
//!    schedule is not skipped), cycling through ten slots: 4 single creates, 1 batch of 10,
//!    3 gets of a task it created earlier, 2 status reads. The dispatcher runs (simulated engine
//!    at 0 ms, `--workers`). Reported per kind: requests, p50, p99, max; the achieved rate; and
//!    errors (any transport error or any status other than 200), which must be 0. The queue must
//!    drain afterwards.
//!
//! Each scenario prints one human line on stdout; with `--json` it prints one JSON object per
//! scenario on stdout instead (the human lines then go to stderr). Progress goes to stderr.
//! Percentiles are nearest-rank over the sorted samples. Numbers from a debug build are
//! meaningless: use `cargo run --release -- bench`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::app::{self, ServeOptions, Server};
use crate::engines::{
    Engine, EngineError, EngineOutput, EngineTask, LatencyRange, SimulatedEngine,
};
use crate::queue::{self, QueueConfig};
use crate::store::OrgSpec;
use crate::store::admin::Admin;
use crate::testing::TestDb;

mod webhooks;

/// Credits given to every benchmark organization.
const CREDITS: i64 = 1_000_000_000_000;
/// The concurrency of organizations that must never be the limit.
const WIDE_CONCURRENCY: u32 = 1000;
/// The largest batch the API accepts.
const MAX_BATCH: usize = 500;

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    All,
    Enqueue,
    Drain,
    Latency,
    Status,
    /// Webhook deliveries per second, and task throughput with and without webhooks (run
    /// only when named; see `bench/webhooks.rs`).
    Webhooks,
    /// Mixed traffic at a fixed rate (not part of `all`).
    Load,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenario to run (all: enqueue, drain, latency, status, in this order).
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Tasks to enqueue (`enqueue`), and to enqueue and run (`drain`).
    #[arg(long, default_value_t = 200_000)]
    pub tasks: usize,
    /// Tasks per batch request (1 to 500).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent HTTP clients submitting batches (`enqueue`, `status`).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Server workers (`drain`, `latency`).
    #[arg(long, default_value_t = 256)]
    pub workers: usize,
    /// Organizations submitting concurrently (`drain`).
    #[arg(long, default_value_t = 4)]
    pub orgs: usize,
    /// Sequential single-task submissions timed (`latency`).
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Tasks kept queued while status is timed and memory is read (`status`).
    #[arg(long, default_value_t = 1_000_000)]
    pub queued: usize,
    /// Sequential status requests timed per organization (`status`).
    #[arg(long, default_value_t = 5000)]
    pub status_samples: usize,
    /// Length of the `load` scenario, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Offered requests per second of the `load` scenario, over all clients.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Print one JSON object per scenario on stdout (human lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Benchmark the cluster store: a PostgreSQL URL whose server gets a fresh database per
    /// scenario (the URL's own database is used only to create and drop them). Default: SQLite.
    #[arg(long)]
    pub database: Option<String>,
    /// Server nodes sharing the database (more than 1 needs `--database postgres://…`); clients
    /// spread their requests over them.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Cluster store only: keep a REPEATABLE READ transaction open on the benchmark's database
    /// for the whole scenario, holding back vacuum (as a long report or a forgotten session
    /// would).
    #[arg(long)]
    pub long_transaction: bool,
    /// `--scenario webhooks`: rounds of (with webhooks, without) after a first run without;
    /// each run with webhooks is compared with the runs without on either side of it, and the
    /// median over the rounds is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// Where the scenarios run: set once from the arguments.
static TARGET: std::sync::OnceLock<(Option<String>, usize)> = std::sync::OnceLock::new();
/// `--long-transaction`.
static LONG_TXN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the benchmark (builds its own multi-thread Tokio runtime).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch must be between 1 and {MAX_BATCH}"
    );
    ensure!(args.tasks > 0, "--tasks must be at least 1");
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.workers > 0, "--workers must be at least 1");
    ensure!(args.orgs > 0, "--orgs must be at least 1");
    ensure!(args.samples > 0, "--samples must be at least 1");
    ensure!(args.queued > 0, "--queued must be at least 1");
    ensure!(
        args.status_samples > 0,
        "--status-samples must be at least 1"
    );
    ensure!(args.nodes > 0, "--nodes must be at least 1");
    ensure!(
        args.nodes == 1 || args.database.is_some(),
        "--nodes above 1 needs --database postgres://…"
    );
    ensure!(
        !args.long_transaction || args.database.is_some(),
        "--long-transaction needs --database postgres://…"
    );
    let _ = TARGET.set((args.database.clone(), args.nodes));
    LONG_TXN.store(args.long_transaction, std::sync::atomic::Ordering::Relaxed);

    let machine = machine_info();
    if cfg!(debug_assertions) {
        eprintln!(
            "WARNING: ==========================================================================\n\
             WARNING: this is a DEBUG build: its numbers are MEANINGLESS.\n\
             WARNING: run `cargo run --release -- bench` instead.\n\
             WARNING: =========================================================================="
        );
    }
    let machine_line = format!(
        "machine: {} CPUs, {}; build profile: {}",
        machine["cpus"],
        machine["cpuModel"].as_str().unwrap_or("?"),
        machine["profile"].as_str().unwrap_or("?")
    );
    if args.json {
        eprintln!("{machine_line}");
    } else {
        println!("{machine_line}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    rt.block_on(async {
        let out = Output {
            json: args.json,
            machine,
        };
        let all = args.scenario == Scenario::All;
        if all || args.scenario == Scenario::Enqueue {
            bench_enqueue(&args, &out)
                .await
                .context("scenario enqueue")?;
        }
        if all || args.scenario == Scenario::Drain {
            bench_drain(&args, &out).await.context("scenario drain")?;
        }
        if all || args.scenario == Scenario::Latency {
            bench_latency(&args, &out)
                .await
                .context("scenario latency")?;
        }
        if all || args.scenario == Scenario::Status {
            bench_status(&args, &out).await.context("scenario status")?;
        }
        if args.scenario == Scenario::Webhooks {
            webhooks::bench_webhooks(&args, &out)
                .await
                .context("scenario webhooks")?;
        }
        if args.scenario == Scenario::Load {
            bench_load(&args, &out).await.context("scenario load")?;
        }
        anyhow::Ok(())
    })
}

// ----------------------------------------------------------------------------------------------
// Scenarios.

async fn bench_enqueue(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let n = args.tasks;
    let orgs = [OrgPlan::new("bench-enqueue", WIDE_CONCURRENCY, n)];
    let bench = BenchServer::start(&orgs, args.workers, simulated(), true).await?;
    eprintln!(
        "[bench] enqueue: {n} tasks, batches of {}, {} clients",
        args.batch, args.clients
    );
    let started = Instant::now();
    let result = submit_batches(
        &bench.bases,
        &bench.orgs[0].key,
        0,
        n,
        args.batch,
        args.clients,
        "enqueue",
    )
    .await;
    let wall = started.elapsed();
    bench.stop().await;
    let sub = result?;
    let mut lat = sub.latencies.clone();
    lat.sort_unstable();
    let rate = n as f64 / wall.as_secs_f64();
    let human = format!(
        "enqueue: {n} tasks in {} batches of {} by {} clients, dispatcher paused: {:.2} s, {:.0} tasks/s; \
         batch request latency p50 {}, p99 {}, max {}; failures {}",
        sub.latencies.len(),
        args.batch,
        args.clients,
        wall.as_secs_f64(),
        rate,
        fmt_dur(pct(&lat, 50.0)),
        fmt_dur(pct(&lat, 99.0)),
        fmt_dur(pct(&lat, 100.0)),
        sub.failures,
    );
    out.emit(
        &human,
        json!({
            "scenario": "enqueue",
            "tasks": n,
            "batch": args.batch,
            "clients": args.clients,
            "wallSeconds": round(wall.as_secs_f64(), 3),
            "tasksPerSecond": rate.round(),
            "batchLatencyMs": {
                "p50": ms(pct(&lat, 50.0)),
                "p99": ms(pct(&lat, 99.0)),
                "max": ms(pct(&lat, 100.0)),
            },
            "failures": sub.failures,
        }),
    );
    sub.check()
}

async fn bench_drain(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let n = args.tasks;
    let norgs = args.orgs.min(n);
    let (bounds, plans) = split_tasks(n, norgs, "bench-drain");
    let bench = BenchServer::start(&plans, args.workers, simulated(), false).await?;
    let store = bench.store()?;
    eprintln!(
        "[bench] drain: {n} tasks over {norgs} organizations (one client each, batches of {}), \
         {} workers, engine latency 0 ms",
        args.batch, args.workers
    );
    let progress_store = store.clone();
    let progress = progress("drain", move || {
        let store = progress_store.clone();
        async move {
            match store.totals().await {
                Ok((q, p)) => format!("{q} queued, {p} processing"),
                Err(e) => format!("totals unavailable: {e}"),
            }
        }
    });

    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for (o, (a, b)) in bounds.iter().copied().enumerate() {
        let base = bench.bases[o % bench.bases.len()].clone();
        let key = bench.orgs[o].key.clone();
        let batch = args.batch;
        submitters.spawn(async move {
            let label = format!("drain org {o}");
            let r = submit_batches(&[base], &key, a, b, batch, 1, &label).await;
            (o, r)
        });
    }
    let mut subs: Vec<Option<Submitted>> = (0..norgs).map(|_| None).collect();
    let mut first_error = None;
    while let Some(joined) = submitters.join_next().await {
        match joined {
            Ok((o, Ok(sub))) => subs[o] = Some(sub),
            Ok((_, Err(e))) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("a submitter panicked: {e}"));
            }
        }
    }
    let submitted_after = started.elapsed();
    if let Some(e) = first_error {
        bench.stop().await;
        return Err(e);
    }
    queue::wait_idle(&*store).await;
    let wall = started.elapsed();
    drop(progress);

    // Verify over HTTP: nothing left, and every accepted task charged (charges happen only on
    // COMPLETED).
    let client = http_client()?;
    let mut failures = 0usize;
    let mut accepted = 0usize;
    let mut verify_errors = Vec::new();
    for (o, sub) in subs.iter().enumerate() {
        let Some(sub) = sub else { continue };
        failures += sub.failures;
        accepted += sub.accepted;
        let key = &bench.orgs[o].key;
        let st: StatusReply = get_json(&client, &bench.base, "/v1/async/status", key).await?;
        if st.queued_tasks != 0 || st.processing_tasks != 0 {
            verify_errors.push(format!(
                "org {o}: {} queued, {} processing after the drain",
                st.queued_tasks, st.processing_tasks
            ));
        }
        let cr: CreditsReply = get_json(&client, &bench.base, "/v1/credits", key).await?;
        if CREDITS - cr.remaining != sub.credits {
            verify_errors.push(format!(
                "org {o}: {} credits charged, expected {} (not every task COMPLETED)",
                CREDITS - cr.remaining,
                sub.credits
            ));
        }
    }
    bench.stop().await;

    let rate = n as f64 / wall.as_secs_f64();
    let human = format!(
        "drain: {n} tasks from {norgs} organizations, {} workers, engine 0 ms: all COMPLETED in {:.2} s \
         (last submission answered at {:.2} s), {:.0} tasks/s enqueue+drain; failures {}",
        args.workers,
        wall.as_secs_f64(),
        submitted_after.as_secs_f64(),
        rate,
        failures,
    );
    out.emit(
        &human,
        json!({
            "scenario": "drain",
            "tasks": n,
            "orgs": norgs,
            "workers": args.workers,
            "batch": args.batch,
            "wallSeconds": round(wall.as_secs_f64(), 3),
            "submittedSeconds": round(submitted_after.as_secs_f64(), 3),
            "tasksPerSecond": rate.round(),
            "accepted": accepted,
            "failures": failures,
            "verifyErrors": verify_errors,
        }),
    );
    ensure!(
        failures == 0,
        "{failures} batch requests failed (first: {})",
        subs.iter()
            .flatten()
            .find_map(|s| s.first_error.clone())
            .unwrap_or_default()
    );
    ensure!(verify_errors.is_empty(), "{}", verify_errors.join("; "));
    Ok(())
}

async fn bench_latency(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let m = args.samples;
    let recorder = Arc::new(RecordingEngine {
        started: Mutex::new(HashMap::with_capacity(m)),
        inner: SimulatedEngine {
            latency: LatencyRange {
                min_ms: 0,
                max_ms: 0,
            },
            failure_rate: 0.0,
        },
    });
    let orgs = [OrgPlan::new("bench-latency", WIDE_CONCURRENCY, m)];
    let bench = BenchServer::start(&orgs, args.workers, recorder.clone(), false).await?;
    let store = bench.store()?;
    eprintln!(
        "[bench] latency: {m} sequential single-task submissions, {} workers",
        args.workers
    );
    let client = http_client()?;
    let url = format!("{}/v1/async/task", bench.base);
    let key = bench.orgs[0].key.clone();
    let mut received: Vec<(Uuid, Instant)> = Vec::with_capacity(m);
    let mut round_trips: Vec<Duration> = Vec::with_capacity(m);
    let result: anyhow::Result<()> = async {
        for i in 0..m {
            let body = task_json(i);
            let sent = Instant::now();
            let resp = client
                .post(&url)
                .bearer_auth(&key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .context("POST /v1/async/task")?;
            let arrived = Instant::now();
            let status = resp.status();
            let bytes = resp.bytes().await.context("reading a submission answer")?;
            round_trips.push(sent.elapsed());
            if status != reqwest::StatusCode::OK {
                bail!("submission {i} answered {status}: {}", snippet(&bytes));
            }
            let reply: TaskReply =
                serde_json::from_slice(&bytes).context("parsing a submission answer")?;
            received.push((reply.task.id, arrived));
        }
        queue::wait_idle(&*store).await;
        Ok(())
    }
    .await;
    bench.stop().await;
    result?;

    let started = recorder
        .started
        .lock()
        .map_err(|_| anyhow::anyhow!("the recording engine's lock is poisoned"))?;
    let mut lat = Vec::with_capacity(m);
    let mut negative = 0usize;
    for (id, arrived) in &received {
        let at = started
            .get(id)
            .with_context(|| format!("task {id} never reached the engine"))?;
        if at < arrived {
            negative += 1;
        }
        lat.push(at.saturating_duration_since(*arrived));
    }
    drop(started);
    lat.sort_unstable();
    round_trips.sort_unstable();
    let human = format!(
        "latency (200 received -> PROCESSING, free slot): {m} samples: p50 {}, p90 {}, p99 {}, max {}; \
         {negative} of {m} started before the client read the 200 (counted as 0); \
         submission round trip p50 {}, p99 {}",
        fmt_dur(pct(&lat, 50.0)),
        fmt_dur(pct(&lat, 90.0)),
        fmt_dur(pct(&lat, 99.0)),
        fmt_dur(pct(&lat, 100.0)),
        fmt_dur(pct(&round_trips, 50.0)),
        fmt_dur(pct(&round_trips, 99.0)),
    );
    out.emit(
        &human,
        json!({
            "scenario": "latency",
            "samples": m,
            "workers": args.workers,
            "latencyUs": {
                "p50": us(pct(&lat, 50.0)),
                "p90": us(pct(&lat, 90.0)),
                "p99": us(pct(&lat, 99.0)),
                "max": us(pct(&lat, 100.0)),
            },
            "startedBeforeResponseRead": negative,
            "submitRoundTripUs": {
                "p50": us(pct(&round_trips, 50.0)),
                "p99": us(pct(&round_trips, 99.0)),
                "max": us(pct(&round_trips, 100.0)),
            },
        }),
    );
    Ok(())
}

async fn bench_status(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let q = args.queued;
    let k = args.status_samples;
    let rss_before = read_memory()?;
    let orgs = [
        OrgPlan::new("bench-status-deep", WIDE_CONCURRENCY, q),
        OrgPlan::new("bench-status-empty", WIDE_CONCURRENCY, 0),
    ];
    let bench = BenchServer::start(&orgs, args.workers, simulated(), true).await?;
    eprintln!(
        "[bench] status: enqueueing {q} tasks (batches of {}, {} clients), then {k} status requests per organization",
        args.batch, args.clients
    );
    let result: anyhow::Result<_> = async {
        let enqueue_started = Instant::now();
        let sub = submit_batches(
            &bench.bases,
            &bench.orgs[0].key,
            0,
            q,
            args.batch,
            args.clients,
            "status enqueue",
        )
        .await?;
        let enqueue_wall = enqueue_started.elapsed();
        sub.check()?;
        let client = http_client()?;
        eprintln!("[bench] status: timing {k} requests on the deep queue");
        let deep = time_status(&client, &bench.base, &bench.orgs[0].key, k, q as u64).await?;
        eprintln!("[bench] status: timing {k} requests on the empty queue");
        let empty = time_status(&client, &bench.base, &bench.orgs[1].key, k, 0).await?;
        let mem = read_memory()?;
        Ok((enqueue_wall, deep, empty, mem))
    }
    .await;
    bench.stop().await;
    let (enqueue_wall, mut deep, mut empty, mem) = result?;
    deep.sort_unstable();
    empty.sort_unstable();
    let human = format!(
        "status: {k} sequential GET /v1/async/status with {q} queued: p50 {}, p99 {}, max {}; \
         empty queue on the same server: p50 {}, p99 {}, max {}; \
         memory with {q} queued (WHOLE bench process, client included): VmRSS {} MiB, VmHWM {} MiB \
         (VmRSS {} MiB before this scenario); enqueue took {:.2} s ({:.0} tasks/s)",
        fmt_dur(pct(&deep, 50.0)),
        fmt_dur(pct(&deep, 99.0)),
        fmt_dur(pct(&deep, 100.0)),
        fmt_dur(pct(&empty, 50.0)),
        fmt_dur(pct(&empty, 99.0)),
        fmt_dur(pct(&empty, 100.0)),
        mem.rss_kib / 1024,
        mem.hwm_kib / 1024,
        rss_before.rss_kib / 1024,
        enqueue_wall.as_secs_f64(),
        q as f64 / enqueue_wall.as_secs_f64(),
    );
    out.emit(
        &human,
        json!({
            "scenario": "status",
            "queued": q,
            "samples": k,
            "deepQueueUs": {
                "p50": us(pct(&deep, 50.0)),
                "p99": us(pct(&deep, 99.0)),
                "max": us(pct(&deep, 100.0)),
            },
            "emptyQueueUs": {
                "p50": us(pct(&empty, 50.0)),
                "p99": us(pct(&empty, 99.0)),
                "max": us(pct(&empty, 100.0)),
            },
            "memory": {
                "scope": "whole bench process (server and client); VmHWM is the peak since start",
                "vmRssKiB": mem.rss_kib,
                "vmHwmKiB": mem.hwm_kib,
                "vmRssBeforeKiB": rss_before.rss_kib,
            },
            "enqueueSeconds": round(enqueue_wall.as_secs_f64(), 3),
            "enqueueTasksPerSecond": (q as f64 / enqueue_wall.as_secs_f64()).round(),
        }),
    );
    Ok(())
}

/// Times `k` sequential status requests, checking each answer's `queuedTasks`.
/// The request kinds of the `load` scenario, in the order of a client's ten-slot cycle.
const LOAD_KINDS: [&str; 4] = ["create", "batch", "get", "status"];
const LOAD_CYCLE: [usize; 10] = [0, 2, 3, 0, 2, 1, 0, 2, 3, 0];

/// What one `load` client measured: latencies per kind, and errors.
#[derive(Default)]
struct LoadClient {
    latencies: [Vec<Duration>; 4],
    errors: usize,
    first_error: Option<String>,
    accepted: usize,
}

async fn load_client(
    client: reqwest::Client,
    base: String,
    key: String,
    id: usize,
    interval: Duration,
    until: Instant,
) -> LoadClient {
    let mut out = LoadClient::default();
    let mut own: Vec<Uuid> = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    while Instant::now() < until {
        ticker.tick().await;
        let mut kind = LOAD_CYCLE[n % LOAD_CYCLE.len()];
        n += 1;
        if kind == 2 && own.is_empty() {
            kind = 0;
        }
        let i = id * 1_000_000_000 + n * 10;
        let req = match kind {
            0 => client
                .post(format!("{base}/v1/async/task"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(task_json(i)),
            1 => {
                let mut body = String::from("[");
                for j in 0..10 {
                    if j > 0 {
                        body.push(',');
                    }
                    push_task(&mut body, i + j);
                }
                body.push(']');
                client
                    .post(format!("{base}/v1/async/task/batch"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
            }
            2 => {
                let t = own[(n * 7919) % own.len()];
                client.get(format!("{base}/v1/async/task/{t}"))
            }
            _ => client.get(format!("{base}/v1/async/status")),
        };
        let sent = Instant::now();
        let result = async {
            let resp = req.bearer_auth(&key).send().await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let took = sent.elapsed();
        match result {
            Ok((status, bytes)) if status == reqwest::StatusCode::OK => {
                out.latencies[kind].push(took);
                if kind == 0 {
                    if let Ok(reply) = serde_json::from_slice::<TaskReply>(&bytes) {
                        own.push(reply.task.id);
                        out.accepted += 1;
                    }
                } else if kind == 1 {
                    out.accepted += 10;
                }
            }
            Ok((status, bytes)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!(
                        "{} answered {status}: {}",
                        LOAD_KINDS[kind],
                        snippet(&bytes)
                    )
                });
            }
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("{}: {e}", LOAD_KINDS[kind]));
            }
        }
    }
    out
}

async fn bench_load(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    ensure!(args.rate > 0, "--rate must be at least 1");
    ensure!(args.duration_secs > 0, "--duration-secs must be at least 1");
    let norgs = args.orgs;
    let clients = norgs * args.clients;
    // A generous queue limit: at most one task per request per second of the run, times ten.
    let most = (args.rate * args.duration_secs * 10) as usize;
    let plans: Vec<OrgPlan> = (0..norgs)
        .map(|o| OrgPlan::new(&format!("bench-load-{o}"), WIDE_CONCURRENCY, most))
        .collect();
    let bench = BenchServer::start(&plans, args.workers, simulated(), false).await?;
    let store = bench.store()?;
    let interval = Duration::from_secs_f64(clients as f64 / args.rate as f64);
    eprintln!(
        "[bench] load: {} s at {} requests/s from {clients} clients over {norgs} organizations \
         (40% create, 10% batch of 10, 30% get, 20% status), {} workers",
        args.duration_secs, args.rate, args.workers
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_secs);
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let o = c % norgs;
        let base = bench.bases[c % bench.bases.len()].clone();
        let key = bench.orgs[o].key.clone();
        let client = http_client()?;
        set.spawn(load_client(client, base, key, c, interval, until));
    }
    let mut latencies: [Vec<Duration>; 4] = Default::default();
    let mut errors = 0usize;
    let mut first_error = None;
    let mut accepted = 0usize;
    while let Some(joined) = set.join_next().await {
        let r = joined.map_err(|e| anyhow::anyhow!("a load client panicked: {e}"))?;
        for (all, mine) in latencies.iter_mut().zip(r.latencies) {
            all.extend(mine);
        }
        errors += r.errors;
        accepted += r.accepted;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let wall = started.elapsed();
    let drain_started = Instant::now();
    tokio::time::timeout(Duration::from_secs(300), queue::wait_idle(&*store))
        .await
        .context("the queue did not drain within 300 s of the end of the load")?;
    let drained_after = drain_started.elapsed();
    bench.stop().await;

    let total: usize = latencies.iter().map(Vec::len).sum::<usize>() + errors;
    let achieved = total as f64 / wall.as_secs_f64();
    let mut parts = Vec::new();
    let mut kinds = serde_json::Map::new();
    for (k, lat) in latencies.iter_mut().enumerate() {
        lat.sort_unstable();
        parts.push(format!(
            "{} {} p50 {} p99 {} max {}",
            LOAD_KINDS[k],
            lat.len(),
            fmt_dur(pct(lat, 50.0)),
            fmt_dur(pct(lat, 99.0)),
            fmt_dur(pct(lat, 100.0)),
        ));
        kinds.insert(
            LOAD_KINDS[k].to_owned(),
            json!({
                "requests": lat.len(),
                "p50Ms": ms(pct(lat, 50.0)),
                "p99Ms": ms(pct(lat, 99.0)),
                "maxMs": ms(pct(lat, 100.0)),
            }),
        );
    }
    let human = format!(
        "load: {:.1} s, offered {} req/s, achieved {:.0} req/s from {clients} clients over {norgs} organizations; \
         {}; {accepted} tasks accepted, queue drained {:.2} s after the load; errors {errors}",
        wall.as_secs_f64(),
        args.rate,
        achieved,
        parts.join("; "),
        drained_after.as_secs_f64(),
    );
    out.emit(
        &human,
        json!({
            "scenario": "load",
            "durationSeconds": round(wall.as_secs_f64(), 3),
            "offeredPerSecond": args.rate,
            "achievedPerSecond": achieved.round(),
            "clients": clients,
            "orgs": norgs,
            "workers": args.workers,
            "kinds": kinds,
            "tasksAccepted": accepted,
            "drainedAfterSeconds": round(drained_after.as_secs_f64(), 3),
            "errors": errors,
        }),
    );
    ensure!(
        errors == 0,
        "{errors} requests failed (first: {})",
        first_error.unwrap_or_default()
    );
    Ok(())
}

async fn time_status(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    k: usize,
    expect_queued: u64,
) -> anyhow::Result<Vec<Duration>> {
    let url = format!("{base}/v1/async/status");
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let t0 = Instant::now();
        let resp = client
            .get(&url)
            .bearer_auth(key)
            .send()
            .await
            .context("GET /v1/async/status")?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading a status answer")?;
        out.push(t0.elapsed());
        ensure!(
            status == reqwest::StatusCode::OK,
            "status answered {status}: {}",
            snippet(&bytes)
        );
        let st: StatusReply = serde_json::from_slice(&bytes).context("parsing a status answer")?;
        ensure!(
            st.queued_tasks == expect_queued,
            "status shows {} queued, expected {expect_queued}",
            st.queued_tasks
        );
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------------
// The server under test.

/// An organization to create before the server starts.
struct OrgPlan {
    name: String,
    concurrency: u32,
    queue_limit: i64,
}

/// `n` tasks over `norgs` organizations of wide concurrency: organization `o` gets the global task
/// indices `[o·n/norgs, (o+1)·n/norgs)`, and is named `<prefix>-<o>`.
fn split_tasks(n: usize, norgs: usize, prefix: &str) -> (Vec<(usize, usize)>, Vec<OrgPlan>) {
    let bounds: Vec<(usize, usize)> = (0..norgs)
        .map(|o| (o * n / norgs, (o + 1) * n / norgs))
        .collect();
    let plans = bounds
        .iter()
        .enumerate()
        .map(|(o, (a, b))| OrgPlan::new(&format!("{prefix}-{o}"), WIDE_CONCURRENCY, b - a))
        .collect();
    (bounds, plans)
}

impl OrgPlan {
    /// `tasks`: the most this organization will ever have queued.
    fn new(name: &str, concurrency: u32, tasks: usize) -> OrgPlan {
        OrgPlan {
            name: name.to_owned(),
            concurrency,
            queue_limit: (tasks as i64).saturating_add(1000),
        }
    }
}

struct BenchOrg {
    key: String,
    /// The public organization id.
    id: String,
}

/// One or more server nodes over a fresh database (SQLite in a scratch directory, or a new
/// PostgreSQL database with `--database`).
struct BenchServer {
    servers: Vec<Server>,
    /// The first node's base URL.
    base: String,
    /// Every node's base URL.
    bases: Vec<String>,
    orgs: Vec<BenchOrg>,
    /// The session holding a snapshot open (`--long-transaction`); dropped before the database.
    _holder: Option<tokio_postgres::Client>,
    _db: TestDb,
}

impl BenchServer {
    async fn start(
        plans: &[OrgPlan],
        workers: usize,
        engine: Arc<dyn Engine>,
        paused: bool,
    ) -> anyhow::Result<BenchServer> {
        let (pg, nodes) = TARGET.get().cloned().unwrap_or((None, 1));
        let db = match &pg {
            None => TestDb::sqlite().context("creating the scratch database")?,
            Some(url) => TestDb::postgres(url).await.map_err(anyhow::Error::msg)?,
        };
        let admin = Admin::open(&db.database)
            .await
            .context("opening the database")?;
        let mut orgs = Vec::with_capacity(plans.len());
        for p in plans {
            let spec = OrgSpec {
                name: p.name.clone(),
                plan: "enterprise-5k".into(),
                concurrency: Some(p.concurrency),
                credits: Some(CREDITS),
                queue_limit: Some(p.queue_limit),
                rate_limit: None,
            };
            let created = admin
                .create_org(&spec)
                .await
                .with_context(|| format!("creating organization {}", spec.name))?;
            orgs.push(BenchOrg {
                key: created.api_key.expose().to_owned(),
                id: created.org.public_id.clone(),
            });
        }
        drop(admin);
        let holder = match &db.database {
            crate::store::Database::Postgres(url)
                if LONG_TXN.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Some(hold_snapshot(url).await?)
            }
            _ => None,
        };
        let mut servers = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            let server = app::start(ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                database: db.database.clone(),
                cluster: Default::default(),
                queue: QueueConfig {
                    workers,
                    ..QueueConfig::default()
                },
                engine: engine.clone(),
                max_body_bytes: 10 * 1024 * 1024,
                default_plan: "free".into(),
                // The benchmarks measure the queue, not the rate limit.
                edge: crate::api::edge::EdgeConfig {
                    rate_limit: u32::MAX,
                    ..Default::default()
                },
                webhooks: crate::webhooks::WebhookConfig {
                    allow_private: true,
                    ..Default::default()
                },
            })
            .await
            .context("starting the server")?;
            if paused {
                server.gate.pause();
            }
            servers.push(server);
        }
        let bases: Vec<String> = servers
            .iter()
            .map(|s| format!("http://{}", s.addr))
            .collect();
        Ok(BenchServer {
            base: bases[0].clone(),
            bases,
            servers,
            orgs,
            _holder: holder,
            _db: db,
        })
    }

    fn store(&self) -> anyhow::Result<Arc<dyn crate::store::Store>> {
        self.servers
            .first()
            .map(|s| s.store.clone())
            .context("the server is stopped")
    }

    /// Shuts the nodes down gracefully; the database goes when `self` is dropped.
    async fn stop(mut self) {
        for server in self.servers.drain(..) {
            server.shutdown();
            server.stopped(Duration::from_secs(60)).await;
        }
    }
}

/// Opens a session on `url` with a REPEATABLE READ transaction that has taken its snapshot
/// and an xid: until it ends, no row version deleted after it can be vacuumed away.
async fn hold_snapshot(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting the long transaction")?;
    tokio::spawn(conn);
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current(); SELECT count(*) FROM tasks",
        )
        .await
        .context("opening the long transaction")?;
    eprintln!("holding a transaction open on the benchmark database (--long-transaction)");
    Ok(client)
}

/// The simulated engine at 0 ms latency and no failures.
fn simulated() -> Arc<dyn Engine> {
    Arc::new(SimulatedEngine {
        latency: LatencyRange {
            min_ms: 0,
            max_ms: 0,
        },
        failure_rate: 0.0,
    })
}

/// Records when each task first reached the engine, then runs the simulated engine.
struct RecordingEngine {
    started: Mutex<HashMap<Uuid, Instant>>,
    inner: SimulatedEngine,
}

#[async_trait]
impl Engine for RecordingEngine {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let now = Instant::now();
        if let Ok(mut started) = self.started.lock() {
            started.entry(task.id).or_insert(now);
        }
        self.inner.execute(task).await
    }
}

// ----------------------------------------------------------------------------------------------
// The client side.

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .context("building the HTTP client")
}

/// One task of the benchmark, `i` its global index.
fn task_json(i: usize) -> String {
    let mut s = String::with_capacity(112);
    push_task(&mut s, i);
    s
}

fn push_task(s: &mut String, i: usize) {
    push_task_hooked(s, i, None);
}

/// A task of the benchmark with, optionally, a `webhook.url`.
fn push_task_hooked(s: &mut String, i: usize, hook: Option<&str>) {
    let _ = write!(
        s,
        r#"{{"taskType":"CHATGPT","payload":{{"prompt":"bench prompt {i}","country":"US"}},"priority":{}"#,
        i % 10 + 1
    );
    match hook {
        Some(url) => {
            let _ = write!(s, r#","webhook":{{"url":{}}}}}"#, Value::from(url));
        }
        None => s.push('}'),
    }
}

/// What a run of batch submissions saw.
struct Submitted {
    /// One per batch request, in completion order.
    latencies: Vec<Duration>,
    /// Batch requests that were not a 200 with every item accepted.
    failures: usize,
    first_error: Option<String>,
    /// Tasks accepted.
    accepted: usize,
    /// Sum of `creditsToCharge` over the accepted tasks.
    credits: i64,
}

impl Submitted {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.failures == 0,
            "{} batch requests failed (first: {})",
            self.failures,
            self.first_error.as_deref().unwrap_or("?")
        );
        Ok(())
    }
}

/// Submits tasks `first..end` (global indices) in batches of `batch`, from `clients` concurrent
/// clients (each with its own connection) taking the next batch as they go.
async fn submit_batches(
    bases: &[String],
    key: &str,
    first: usize,
    end: usize,
    batch: usize,
    clients: usize,
    label: &str,
) -> anyhow::Result<Submitted> {
    submit_batches_hooked(bases, key, first, end, batch, clients, label, None).await
}

/// [`submit_batches`] whose tasks carry `hook` as their `webhook.url`.
#[allow(clippy::too_many_arguments)]
async fn submit_batches_hooked(
    bases: &[String],
    key: &str,
    first: usize,
    end: usize,
    batch: usize,
    clients: usize,
    label: &str,
    hook: Option<&str>,
) -> anyhow::Result<Submitted> {
    let hook: Option<Arc<str>> = hook.map(Arc::from);
    let total = end.saturating_sub(first);
    let batches = total.div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let urls: Vec<String> = bases
        .iter()
        .map(|b| format!("{b}/v1/async/task/batch"))
        .collect();
    let key = Arc::new(key.to_owned());
    let progress_done = done.clone();
    let _progress = progress(label, move || {
        let n = progress_done.load(Ordering::Relaxed);
        async move { format!("{n}/{total} tasks submitted") }
    });
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients.min(batches.max(1)) {
        // Clients spread over the nodes.
        let url = Arc::new(urls[c % urls.len().max(1)].clone());
        let (next, done, key, hook) = (next.clone(), done.clone(), key.clone(), hook.clone());
        let client = http_client()?;
        set.spawn(async move {
            let mut sub = Submitted {
                latencies: Vec::new(),
                failures: 0,
                first_error: None,
                accepted: 0,
                credits: 0,
            };
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    break;
                }
                let lo = first + b * batch;
                let hi = (lo + batch).min(end);
                let mut body = String::with_capacity((hi - lo) * 112 + 2);
                body.push('[');
                for i in lo..hi {
                    if i > lo {
                        body.push(',');
                    }
                    push_task_hooked(&mut body, i, hook.as_deref());
                }
                body.push(']');
                let t0 = Instant::now();
                let answer = async {
                    let resp = client
                        .post(url.as_str())
                        .bearer_auth(key.as_str())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await?;
                    let status = resp.status();
                    let bytes = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, bytes))
                }
                .await;
                sub.latencies.push(t0.elapsed());
                let verdict = match answer {
                    Err(e) => Err(format!("request error: {e}")),
                    Ok((status, bytes)) if status != reqwest::StatusCode::OK => {
                        Err(format!("HTTP {status}: {}", snippet(&bytes)))
                    }
                    Ok((_, bytes)) => match serde_json::from_slice::<BatchReply>(&bytes) {
                        Err(e) => Err(format!("unparsable answer: {e}")),
                        Ok(r) if r.summary.succeeded != hi - lo => Err(format!(
                            "{} of {} tasks accepted: {}",
                            r.summary.succeeded,
                            hi - lo,
                            snippet(&bytes)
                        )),
                        Ok(r) => Ok(r),
                    },
                };
                match verdict {
                    Ok(r) => {
                        sub.accepted += r.summary.succeeded;
                        sub.credits += r
                            .results
                            .iter()
                            .filter_map(|item| item.credits.as_ref())
                            .map(|c| c.credits_to_charge)
                            .sum::<i64>();
                    }
                    Err(e) => {
                        sub.failures += 1;
                        sub.first_error.get_or_insert(e);
                    }
                }
                done.fetch_add(hi - lo, Ordering::Relaxed);
            }
            sub
        });
    }
    let mut all = Submitted {
        latencies: Vec::with_capacity(batches),
        failures: 0,
        first_error: None,
        accepted: 0,
        credits: 0,
    };
    while let Some(joined) = set.join_next().await {
        let sub = joined.context("a client task panicked")?;
        all.latencies.extend(sub.latencies);
        all.failures += sub.failures;
        all.accepted += sub.accepted;
        all.credits += sub.credits;
        if all.first_error.is_none() {
            all.first_error = sub.first_error;
        }
    }
    Ok(all)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
) -> anyhow::Result<T> {
    let resp = client
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.with_context(|| format!("GET {path}"))?;
    ensure!(
        status == reqwest::StatusCode::OK,
        "GET {path} answered {status}: {}",
        snippet(&bytes)
    );
    serde_json::from_slice(&bytes).with_context(|| format!("parsing the answer of GET {path}"))
}

fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.chars().take(300).collect()
}

#[derive(Deserialize)]
struct BatchReply {
    summary: BatchSummary,
    results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchSummary {
    succeeded: usize,
}

#[derive(Deserialize)]
struct BatchItem {
    #[serde(default)]
    credits: Option<ItemCredits>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemCredits {
    credits_to_charge: i64,
}

#[derive(Deserialize)]
struct TaskReply {
    task: TaskId,
}

#[derive(Deserialize)]
struct TaskId {
    id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusReply {
    queued_tasks: u64,
    processing_tasks: u64,
}

#[derive(Deserialize)]
struct CreditsReply {
    remaining: i64,
}

// ----------------------------------------------------------------------------------------------
// Reporting.

struct Output {
    json: bool,
    machine: Value,
}

impl Output {
    /// The human line on stdout, or with `--json` the object on stdout and the line on stderr.
    fn emit(&self, human: &str, mut object: Value) {
        if self.json {
            eprintln!("{human}");
            object["machine"] = self.machine.clone();
            println!("{object}");
        } else {
            println!("{human}");
        }
    }
}

fn machine_info() -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let profile = if cfg!(debug_assertions) {
        "debug (numbers are meaningless)"
    } else {
        "release"
    };
    json!({ "cpus": cpus, "cpuModel": model, "profile": profile })
}

/// Prints `label: <what>` on stderr every 2 s until the guard is dropped.
fn progress<F>(label: &str, what: impl Fn() -> F + Send + 'static) -> DropGuard
where
    F: std::future::Future<Output = String> + Send,
{
    let token = CancellationToken::new();
    let stop = token.clone();
    let label = label.to_owned();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    eprintln!("[bench] {label}: {}", what().await);
                }
            }
        }
    });
    token.drop_guard()
}

/// Nearest-rank percentile of sorted samples (`p` = 100 is the maximum).
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds, to the microsecond (for JSON).
fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 3)
}

/// Microseconds, to a tenth (for JSON).
fn us(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e6, 1)
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", us(d))
    } else {
        format!("{:.2} ms", ms(d))
    }
}

struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

/// `VmRSS` and `VmHWM` of this process (Linux).
fn read_memory() -> anyhow::Result<Memory> {
    let s = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/self/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 50.0), Duration::from_millis(50));
        assert_eq!(pct(&v, 99.0), Duration::from_millis(99));
        assert_eq!(pct(&v, 100.0), Duration::from_millis(100));
        assert_eq!(pct(&v[..1], 50.0), Duration::from_millis(1));
        assert_eq!(pct(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn tasks_are_valid_json() {
        let v: Value = serde_json::from_str(&task_json(19)).expect("json");
        assert_eq!(v["priority"], 10);
        assert_eq!(v["payload"]["prompt"], "bench prompt 19");
    }
}
