//! `--scenario inflight`: many slow tasks in flight on one node (issue 14).
//!
//! What a node does when its engine is slow and its `--workers` are many: the simulated engine
//! takes exactly `--sim-latency-ms` (L, default 2000) per call, the node runs `--workers` (W)
//! tasks at once, and `--orgs` (K) organizations each have concurrency ⌈W/K⌉, so the
//! organizations are never the limit. `--tasks` tasks (default W × 10: about ten engine
//! latencies of ideal work; the global default 200 000 counts as "not given") are spread evenly
//! over the organizations and enqueued first with the dispatcher paused (`Server::gate`); then
//! it is resumed, and the clock runs from the resume to the last finish.
//!
//! Reported: tasks/s against the ideal `W / L` (a node that always has W tasks running, each
//! taking exactly L), the most tasks PROCESSING sampled every 50 ms (from the store's totals),
//! and the resident memory of the WHOLE bench process (server and client): `VmHWM` reset to the
//! current `VmRSS` just before the resume (`/proc/self/clear_refs`; if that fails it is the
//! peak since the process started, and the line says so), the highest `VmRSS` sampled, and
//! `VmRSS` before the resume; and the CPU time the process used from the resume to the end
//! (per task, and in cores on average: on a shared machine, a node short of the ideal while
//! using less than the machine's cores was starved of CPU, not slow). With `--database postgres://…` the node runs on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::BenchArgs;
use super::support::*;
use cloro::engines::{Engine, LatencyRange, SimulatedEngine};

/// `--tasks`' global default: here it means "W × 10".
const TASKS_NOT_GIVEN: usize = 200_000;

/// Resets this process's `VmHWM` to its current `VmRSS` (Linux: `5` into `clear_refs`).
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub(super) async fn bench_inflight(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let workers = args.workers;
    let norgs = args.orgs.max(1);
    let latency_ms = args.sim_latency_ms;
    ensure!(latency_ms > 0, "--sim-latency-ms must be above 0");
    let n = if args.tasks == TASKS_NOT_GIVEN {
        workers.saturating_mul(10)
    } else {
        args.tasks
    };
    let norgs = norgs.min(n);
    let per_org = workers.div_ceil(norgs);
    let engine: Arc<dyn Engine> = Arc::new(SimulatedEngine {
        latency: LatencyRange {
            min_ms: latency_ms,
            max_ms: latency_ms,
        },
        failure_rate: 0.0,
    });
    let bounds: Vec<(usize, usize)> = (0..norgs)
        .map(|o| (o * n / norgs, (o + 1) * n / norgs))
        .collect();
    let plans: Vec<OrgPlan> = bounds
        .iter()
        .enumerate()
        .map(|(o, (a, b))| {
            OrgPlan::new(
                &format!("bench-inflight-{o}"),
                u32::try_from(per_org).unwrap_or(u32::MAX),
                b - a,
            )
        })
        .collect();
    let bench = BenchServer::start(&plans, workers, engine, true).await?;
    let result = run(args, &bench, &bounds, n, per_org, latency_ms).await;
    bench.stop().await;
    let (human, object) = result?;
    out.emit(&human, object);
    Ok(())
}

async fn run(
    args: &BenchArgs,
    bench: &BenchServer,
    bounds: &[(usize, usize)],
    n: usize,
    per_org: usize,
    latency_ms: u64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let workers = args.workers;
    let norgs = bounds.len();
    eprintln!(
        "[bench] inflight: enqueueing {n} tasks over {norgs} organizations (concurrency {per_org} each), \
         dispatcher paused"
    );
    // Four organizations submit at a time, each from one client.
    let mut subs =
        futures_util::stream::iter(bounds.iter().copied().enumerate())
            .map(|(o, (a, b))| {
                let base = bench.bases[o % bench.bases.len()].clone();
                let key = bench.orgs[o].key.clone();
                async move {
                    submit_batches(&[base], &key, a, b, args.batch, 1, "inflight enqueue").await
                }
            })
            .buffer_unordered(4);
    while let Some(sub) = subs.next().await {
        sub?.check()?;
    }
    drop(subs);
    let store = bench.store()?;

    let before = read_memory()?;
    let peak_reset = reset_peak_memory();
    // The sampler: tasks PROCESSING (the store's totals) and VmRSS, every 50 ms.
    let stop = CancellationToken::new();
    let sampler = {
        let (stop, store) = (stop.clone(), store.clone());
        tokio::spawn(async move {
            let (mut most_processing, mut most_rss) = (0u64, 0u64);
            loop {
                if let Ok((_, p)) = store.totals().await {
                    most_processing = most_processing.max(p);
                }
                if let Ok(m) = read_memory() {
                    most_rss = most_rss.max(m.rss_kib);
                }
                tokio::select! {
                    _ = stop.cancelled() => return (most_processing, most_rss),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
    };
    eprintln!(
        "[bench] inflight: resuming the dispatcher, {workers} workers, engine {latency_ms} ms"
    );
    let Drained { wall, cpu, steady } =
        resume_until_idle(bench, &store, "inflight", "processing", n).await;
    stop.cancel();
    let (most_processing, most_rss) = sampler.await.context("the sampler panicked")?;
    let mem = read_memory()?;

    let rate = n as f64 / wall.as_secs_f64();
    let ideal = workers as f64 / (latency_ms as f64 / 1000.0);
    let share = rate / ideal;
    let peak_scope = if peak_reset {
        "peak since the resume"
    } else {
        "peak since the process started"
    };
    let human = format!(
        "inflight: {n} tasks over {norgs} organizations (concurrency {per_org} each), {workers} workers, \
         engine {latency_ms} ms: {:.2} s from the resume, {:.0} tasks/s = {:.1}% of the ideal {:.0} \
         (steady, from 20% to 80% done: {}); most PROCESSING sampled {most_processing}; resident memory of the WHOLE bench process: \
         VmHWM {} MiB ({peak_scope}), highest VmRSS sampled {} MiB, VmRSS {} MiB at the resume; \
         CPU {} (the whole process, from the resume)",
        wall.as_secs_f64(),
        rate,
        100.0 * share,
        ideal,
        steady_summary(steady, ideal),
        mem.hwm_kib / 1024,
        most_rss / 1024,
        before.rss_kib / 1024,
        cpu_summary(cpu, n, wall),
    );
    let object = json!({
        "scenario": "inflight",
        "tasks": n,
        "orgs": norgs,
        "orgConcurrency": per_org,
        "workers": workers,
        "simLatencyMs": latency_ms,
        "wallSeconds": round(wall.as_secs_f64(), 3),
        "tasksPerSecond": rate.round(),
        "idealTasksPerSecond": ideal.round(),
        "shareOfIdeal": round(share, 3),
        "steadyTasksPerSecond": steady.map(f64::round),
        "steadyShareOfIdeal": steady.map(|r| round(r / ideal, 3)),
        "mostProcessingSampled": most_processing,
        "cpuSeconds": cpu.map(|c| round(c, 2)),
        "cpuUsPerTask": cpu.map(|c| (c * 1e6 / n as f64).round()),
        "memory": {
            "scope": "whole bench process (server and client)",
            "vmHwmKiB": mem.hwm_kib,
            "vmHwmIs": peak_scope,
            "mostVmRssSampledKiB": most_rss,
            "vmRssAtResumeKiB": before.rss_kib,
        },
    });
    Ok((human, object))
}
