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
//!    latency, `--workers` (default: `serve`'s default, 256) workers and `--orgs` (default 4) organizations of
//!    concurrency 1000. Each organization submits its share of `--tasks` in batches from its own
//!    client, all at once. Measured from the first request until every task has finished
//!    (`queue::wait_idle` on the server's store after the last submission was answered), then
//!    checked over HTTP: `GET /v1/async/status` shows 0 queued and 0 processing for every
//!    organization, and `GET /v1/credits` shows that exactly the credits of every accepted task
//!    were charged (a charge happens only on COMPLETED). Reported: (enqueue + drain) tasks/s,
//!    and when the last submission was answered.
//!    **`drain-only`** (not part of `all`): the same organizations, tasks and checks, but every
//!    task is enqueued first with the dispatcher of every node paused; then all nodes are
//!    resumed at once and the clock runs from that instant to the last finish (the dispatch
//!    alone, the way job queues are usually compared: issue 14, `bench/peers/`). Reported: the
//!    drain's tasks/s, and the enqueue time before it.
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
//! 6. **`webhooks`** and **`upstream`** (not part of `all`): see `bench/webhooks.rs` and
//!    `bench/upstream.rs`.
//! 7. **`sync`** (not part of `all`; `bench/sync.rs`): sync calls, `POST /v1/monitor/chatgpt` with
//!    `{"prompt":"bench prompt <i>","country":"US"}`, in three parts, each its own line (JSON:
//!    `"scenario": "sync"` with `"part"`). A call counts as answered when it is a 200 whose body
//!    starts `{"success":true` and that carries `X-Credits-Charged`; anything else (a status,
//!    a transport error) is a failure, counted by status. After each part, over HTTP: the
//!    organization's balance (`GET /v1/credits`) must have dropped by exactly 7 (ChatGPT 5 + the
//!    sync surcharge 2) per answered call and by the sum of the `X-Credits-Charged` headers, and
//!    `GET /v1/async/status` must show `concurrency.used` 0 (no slot left behind). The bench fails
//!    if any part had a failure or a check did not hold, after reporting all three.
//!    - (a) **throughput**: simulator at 0 ms, `--clients` (default 64 for this scenario)
//!      closed-loop clients, each its own connection, share `--tasks` calls (each takes the next
//!      until none are left). Reported: answered calls/s = answered / wall time (first request
//!      to last answer), latency p50/p99/max of the answered calls.
//!    - (b) **rate**: the same server, another organization: `--rate` calls/s (default 2000)
//!      for `--rate-secs` (default 5), open loop: call i is sent at `start + i/rate` whatever the
//!      earlier ones are doing, round-robin over `--clients` connection pools, and its latency is
//!      measured from that scheduled instant to the whole answer (a late sender counts against
//!      the result rather than hiding it; how late the sender was is reported too). Reported:
//!      p50/p99/max, the most calls in flight at once.
//!    - (c) **inflight**: a new server whose simulator takes `--sim-latency-ms` (default 2000)
//!      per call, one organization of concurrency `--inflight` (default 5000), the HTTP edge
//!      serving `--inflight` + 1024 connections at once. `--inflight` calls are started over
//!      half the engine's time (at most 1 s, so the listener's accept queue of 1024 never
//!      overflows) from `--clients` connection pools (one connection per call in flight); all
//!      must answer 200. Reported: the most calls in flight at the client, the most slots in use
//!      at the server (`concurrency.used`, sampled every 50 ms), and the resident memory of the
//!      WHOLE bench process (server and the clients' thousands of connections): `VmHWM`, reset
//!      to the current `VmRSS` just before the calls start (`/proc/self/clear_refs`; if that
//!      fails it is the peak since the process started, and the line says so), the highest
//!      `VmRSS` sampled every 50 ms, and `VmRSS` before this part's server started. It needs
//!      about two file descriptors per call (client and server ends in one process).
//! 8. **`soak`** (not part of `all`; `bench/soak.rs`): issue 12's fault soak. Three `cloro serve`
//!    child processes on a scratch PostgreSQL database (`--database` required), each behind its
//!    own TCP proxy, under mixed submissions (`--soak-rate`, `--clients`) for `--soak-secs`
//!    while a fault injector seeded with `--seed` drops connections, stalls one or all proxies
//!    for 1–2 leases (`--soak-lease-ms`) and kills and restarts nodes. Then, after waiting at
//!    most `--soak-settle-secs`: every accepted task terminal with a record of one completion,
//!    credits = the COMPLETED tasks' charges, PROCESSING never above an organization's cap, no
//!    node without a heartbeat for more than its lease outside a fault, counters = rows; it
//!    exits non-zero naming what failed (`docs/RELIABILITY.md`).
//! 9. **`inflight`** (not part of `all`; `bench/inflight.rs`): many slow tasks in flight on one
//!    node: `--workers` W, the simulated engine at exactly `--sim-latency-ms` L, `--orgs`
//!    organizations of concurrency ⌈W/orgs⌉, `--tasks` (default W × 10) enqueued with the
//!    dispatcher paused, then resumed. Reported: tasks/s against the ideal W / L, the most tasks
//!    PROCESSING sampled, and the resident memory of the whole bench process.
//!
//! `inflight` and `upstream` also report the **steady rate**: tasks/s from the first 100 ms
//! sample with 20% of the tasks finished to the first with 80% (`support::steady_rate`), the
//! pipeline's own rate without the first wave's start and the last wave's end.
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

use cloro::app::{self, ServeOptions, Server};
use cloro::engines::{
    Engine, EngineError, EngineOutput, EngineTask, LatencyRange, SimulatedEngine,
};
use cloro::queue::{self, QueueConfig};
use cloro::store::OrgSpec;
use cloro::store::admin;

mod inflight;
mod load;
mod scratch;
mod soak;
mod support;
mod sync;
mod upstream;
mod webhooks;

use self::load::bench_load;
use self::scratch::ScratchDb;
use self::support::*;

/// Credits given to every benchmark organization.
const CREDITS: i64 = 1_000_000_000_000;
/// The concurrency of organizations that must never be the limit.
const WIDE_CONCURRENCY: u32 = 1000;
/// The largest batch the API accepts.
const MAX_BATCH: usize = 500;

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    All,
    Enqueue,
    Drain,
    /// Everything enqueued first with the dispatcher paused, then the dispatch alone timed
    /// (not part of `all`).
    DrainOnly,
    Latency,
    Status,
    /// Webhook deliveries per second, and task throughput with and without webhooks (run
    /// only when named; see `bench/webhooks.rs`).
    Webhooks,
    /// Mixed traffic at a fixed rate (not part of `all`).
    Load,
    /// Many calls in flight through the real `openai-responses` adapter against a local fake
    /// upstream (not part of `all`; see `bench/upstream.rs`).
    Upstream,
    /// Sync calls (`POST /v1/monitor/chatgpt`): throughput, latency at a fixed rate, and many
    /// in flight with the memory they take (not part of `all`; see `bench/sync.rs`).
    Sync,
    /// Issue 12's fault soak: three node processes on PostgreSQL under mixed load while their
    /// connections are dropped, the database paused and nodes killed; then the invariants are
    /// checked (not part of `all`; needs `--database`; see `bench/soak.rs`).
    Soak,
    /// Many slow tasks in flight on one node: tasks/s against the ideal `workers / latency`,
    /// and resident memory (not part of `all`; see `bench/inflight.rs`).
    Inflight,
    /// The fake upstream of `upstream`, run by it as a child process.
    #[value(hide = true)]
    UpstreamFake,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Scenario to run (all: enqueue, drain, latency, status, in this order).
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub(crate) scenario: Scenario,
    /// Tasks to enqueue (`enqueue`), and to enqueue and run (`drain`).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) tasks: usize,
    /// Tasks per batch request (1 to 500).
    #[arg(long, default_value_t = 500)]
    pub(crate) batch: usize,
    /// Concurrent HTTP clients submitting batches (`enqueue`, `status`), per organization
    /// (`load`), or making sync calls (`sync`). Default: 4, and 64 for `sync`.
    #[arg(long = "clients")]
    pub(crate) clients_arg: Option<usize>,
    /// `--clients` or its default for the scenario (set by [`run`]).
    #[arg(skip)]
    pub(crate) clients: usize,
    /// Server workers per node (default: `serve`'s own default).
    #[arg(long, default_value_t = cloro::queue::DEFAULT_WORKERS as usize)]
    pub(crate) workers: usize,
    /// Organizations submitting concurrently (`drain`).
    #[arg(long, default_value_t = 4)]
    pub(crate) orgs: usize,
    /// Sequential single-task submissions timed (`latency`).
    #[arg(long, default_value_t = 2000)]
    pub(crate) samples: usize,
    /// Tasks kept queued while status is timed and memory is read (`status`).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) queued: usize,
    /// Sequential status requests timed per organization (`status`).
    #[arg(long, default_value_t = 5000)]
    pub(crate) status_samples: usize,
    /// Length of the `load` scenario, seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration_secs: u64,
    /// Offered requests per second of the `load` scenario, over all clients, and of the
    /// fixed-rate part of `sync`.
    #[arg(long, default_value_t = 2000)]
    pub(crate) rate: u64,
    /// `--scenario sync`: length of the fixed-rate part, seconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) rate_secs: u64,
    /// `--scenario sync`: calls in flight at once in the last part (also the organization's
    /// concurrency).
    #[arg(long, default_value_t = 5000)]
    pub(crate) inflight: usize,
    /// `--scenario sync` (its in-flight part) and `inflight`: the simulated engine's time per call, ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) sim_latency_ms: u64,
    /// Print one JSON object per scenario on stdout (human lines go to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Benchmark the cluster store: a PostgreSQL URL whose server gets a fresh database per
    /// scenario (the URL's own database is used only to create and drop them). Default: SQLite.
    #[arg(long)]
    pub(crate) database: Option<String>,
    /// Server nodes sharing the database (more than 1 needs `--database postgres://…`); clients
    /// spread their requests over them.
    #[arg(long, default_value_t = 1)]
    pub(crate) nodes: usize,
    /// Cluster store only: keep a REPEATABLE READ transaction open on the benchmark's database
    /// for the whole scenario, holding back vacuum (as a long report or a forgotten session
    /// would).
    #[arg(long)]
    pub(crate) long_transaction: bool,
    /// Scrape every node's `/metrics` once a second for the whole scenario (what a Prometheus
    /// server costs the queue).
    #[arg(long)]
    pub(crate) scrape_metrics: bool,
    /// `--scenario webhooks`: rounds of (with webhooks, without) after a first run without;
    /// each run with webhooks is compared with the runs without on either side of it, and the
    /// median over the rounds is reported.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// `--scenario upstream`: calls in flight (the engine's `max_in_flight`, the workers and the
    /// organization's concurrency).
    #[arg(long, default_value_t = 5000)]
    pub(crate) upstream_in_flight: usize,
    /// `--scenario upstream`: how long the fake upstream takes to answer, ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) upstream_latency_ms: u64,
    /// `--scenario upstream`: tasks to run.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) upstream_tasks: usize,
    /// `--scenario soak`: seconds of load and faults.
    #[arg(long, default_value_t = 300)]
    pub(crate) soak_secs: u64,
    /// `--scenario soak`: submission requests per second over all clients.
    #[arg(long, default_value_t = 20)]
    pub(crate) soak_rate: u64,
    /// `--scenario soak`: the nodes' lease, ms (heartbeat: a sixth of it).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(600..))]
    pub(crate) soak_lease_ms: u64,
    /// `--scenario soak`: the longest wait, after the load, for every task to be terminal.
    #[arg(long, default_value_t = 120)]
    pub(crate) soak_settle_secs: u64,
    /// `--scenario soak`: the fault schedule's seed (the same seed, the same faults).
    #[arg(long, default_value_t = 12)]
    pub(crate) seed: u64,
}

/// Where the scenarios run: set once from the arguments.
static TARGET: std::sync::OnceLock<(Option<String>, usize)> = std::sync::OnceLock::new();
/// `--long-transaction`.
static LONG_TXN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// `--scrape-metrics`.
static SCRAPE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the benchmark (builds its own multi-thread Tokio runtime).
pub(crate) fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    args.clients = args
        .clients_arg
        .unwrap_or(if args.scenario == Scenario::Sync {
            64
        } else {
            4
        });
    if args.scenario == Scenario::UpstreamFake {
        return upstream::serve_fake(Duration::from_millis(args.upstream_latency_ms));
    }
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
    SCRAPE.store(args.scrape_metrics, std::sync::atomic::Ordering::Relaxed);

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
        if args.scenario == Scenario::DrainOnly {
            bench_drain_only(&args, &out)
                .await
                .context("scenario drain-only")?;
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
        if args.scenario == Scenario::Sync {
            sync::bench_sync(&args, &out)
                .await
                .context("scenario sync")?;
        }
        if args.scenario == Scenario::Upstream {
            upstream::bench_upstream(&args, &out)
                .await
                .context("scenario upstream")?;
        }
        if args.scenario == Scenario::Inflight {
            inflight::bench_inflight(&args, &out)
                .await
                .context("scenario inflight")?;
        }
        if args.scenario == Scenario::Soak {
            soak::bench_soak(&args, &out)
                .await
                .context("scenario soak")?;
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
    let progress = drain_progress("drain", &store);

    let started = Instant::now();
    let subs = match submit_all(&bench, &bounds, args.batch).await {
        Ok(subs) => subs,
        Err(e) => {
            bench.stop().await;
            return Err(e);
        }
    };
    let submitted_after = started.elapsed();
    queue::wait_idle(&*store).await;
    let wall = started.elapsed();
    drop(progress);
    let checked = verify_drained(&bench, &subs).await?;
    bench.stop().await;

    let rate = n as f64 / wall.as_secs_f64();
    let human = format!(
        "drain: {n} tasks from {norgs} organizations, {} workers, engine 0 ms: all COMPLETED in {:.2} s \
         (last submission answered at {:.2} s), {:.0} tasks/s enqueue+drain; failures {}",
        args.workers,
        wall.as_secs_f64(),
        submitted_after.as_secs_f64(),
        rate,
        checked.failures,
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
            "accepted": checked.accepted,
            "failures": checked.failures,
            "verifyErrors": checked.errors,
        }),
    );
    checked.ensure_clean(&subs)
}

/// `--scenario drain-only`: everything enqueued first with the dispatcher paused, then the
/// dispatch alone is timed (from resuming every node to the last finish).
async fn bench_drain_only(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let n = args.tasks;
    let norgs = args.orgs.min(n);
    let (bounds, plans) = split_tasks(n, norgs, "bench-drain-only");
    let bench = BenchServer::start(&plans, args.workers, simulated(), true).await?;
    let store = bench.store()?;
    eprintln!(
        "[bench] drain-only: {n} tasks over {norgs} organizations enqueued with the dispatcher \
         paused (batches of {}), then {} workers per node, engine latency 0 ms",
        args.batch, args.workers
    );
    let enqueue_started = Instant::now();
    let subs = match submit_all(&bench, &bounds, args.batch).await {
        Ok(subs) => subs,
        Err(e) => {
            bench.stop().await;
            return Err(e);
        }
    };
    let enqueued = enqueue_started.elapsed();
    let progress = drain_progress("drain-only", &store);
    let started = Instant::now();
    for s in &bench.servers {
        s.gate.resume();
    }
    queue::wait_idle(&*store).await;
    let drained = started.elapsed();
    drop(progress);
    let checked = verify_drained(&bench, &subs).await?;
    let nodes = bench.servers.len();
    bench.stop().await;

    let rate = n as f64 / drained.as_secs_f64();
    let human = format!(
        "drain-only: {n} tasks from {norgs} organizations, {} workers x {} node(s), engine 0 ms: \
         enqueued in {:.2} s, then all COMPLETED in {:.2} s: {:.0} tasks/s drain; failures {}",
        args.workers,
        nodes,
        enqueued.as_secs_f64(),
        drained.as_secs_f64(),
        rate,
        checked.failures,
    );
    out.emit(
        &human,
        json!({
            "scenario": "drain-only",
            "tasks": n,
            "orgs": norgs,
            "workers": args.workers,
            "nodes": nodes,
            "batch": args.batch,
            "enqueueSeconds": round(enqueued.as_secs_f64(), 3),
            "drainSeconds": round(drained.as_secs_f64(), 3),
            "tasksPerSecond": rate.round(),
            "accepted": checked.accepted,
            "failures": checked.failures,
            "verifyErrors": checked.errors,
        }),
    );
    checked.ensure_clean(&subs)
}

/// Progress lines of a drain: the first node's queued and running totals every 2 s.
fn drain_progress(label: &str, store: &Arc<dyn cloro::store::Store>) -> DropGuard {
    let store = store.clone();
    progress(label, move || {
        let store = store.clone();
        async move {
            match store.totals().await {
                Ok((q, p)) => format!("{q} queued, {p} processing"),
                Err(e) => format!("totals unavailable: {e}"),
            }
        }
    })
}

/// Submits organization `o`'s share `bounds[o]` from its own client (all organizations at
/// once), spread over the nodes; the first failure of any submitter is the error.
async fn submit_all(
    bench: &BenchServer,
    bounds: &[(usize, usize)],
    batch: usize,
) -> anyhow::Result<Vec<Option<Submitted>>> {
    let mut submitters = tokio::task::JoinSet::new();
    for (o, (a, b)) in bounds.iter().copied().enumerate() {
        let base = bench.bases[o % bench.bases.len()].clone();
        let key = bench.orgs[o].key.clone();
        submitters.spawn(async move {
            let label = format!("drain org {o}");
            let r = submit_batches(&[base], &key, a, b, batch, 1, &label).await;
            (o, r)
        });
    }
    let mut subs: Vec<Option<Submitted>> = (0..bounds.len()).map(|_| None).collect();
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
    match first_error {
        Some(e) => Err(e),
        None => Ok(subs),
    }
}

/// What [`verify_drained`] found.
struct Drained {
    failures: usize,
    accepted: usize,
    errors: Vec<String>,
}

impl Drained {
    /// Fails the scenario on a failed batch or a broken check.
    fn ensure_clean(&self, subs: &[Option<Submitted>]) -> anyhow::Result<()> {
        ensure!(
            self.failures == 0,
            "{} batch requests failed (first: {})",
            self.failures,
            subs.iter()
                .flatten()
                .find_map(|s| s.first_error.clone())
                .unwrap_or_default()
        );
        ensure!(self.errors.is_empty(), "{}", self.errors.join("; "));
        Ok(())
    }
}

/// Checks over HTTP that nothing is left and that every accepted task was charged (charges
/// happen only on COMPLETED).
async fn verify_drained(
    bench: &BenchServer,
    subs: &[Option<Submitted>],
) -> anyhow::Result<Drained> {
    let client = http_client()?;
    let mut checked = Drained {
        failures: 0,
        accepted: 0,
        errors: Vec::new(),
    };
    for (o, sub) in subs.iter().enumerate() {
        let Some(sub) = sub else { continue };
        checked.failures += sub.failures;
        checked.accepted += sub.accepted;
        let key = &bench.orgs[o].key;
        let st: StatusReply = get_json(&client, &bench.base, "/v1/async/status", key).await?;
        if st.queued_tasks != 0 || st.processing_tasks != 0 {
            checked.errors.push(format!(
                "org {o}: {} queued, {} processing after the drain",
                st.queued_tasks, st.processing_tasks
            ));
        }
        let cr: CreditsReply = get_json(&client, &bench.base, "/v1/credits", key).await?;
        if CREDITS - cr.remaining != sub.credits {
            checked.errors.push(format!(
                "org {o}: {} credits charged, expected {} (not every task COMPLETED)",
                CREDITS - cr.remaining,
                sub.credits
            ));
        }
    }
    Ok(checked)
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
