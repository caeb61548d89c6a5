//! `--scenario upstream`: many calls in flight through a real adapter.
//!
//! A local fake of OpenAI's Responses API (`POST /v1/responses`, the documented answer layout
//! of https://platform.openai.com/docs/api-reference/responses/object: a `web_search_call`
//! with 40 consulted sources and a `message` of ~6 KB with 20 `url_citation` annotations)
//! answers every call after `--upstream-latency-ms` (default 2000). The server runs CHATGPT on the
//! `openai-responses` adapter through an engines file pointing at the fake, with
//! `max_in_flight = --workers` (default here: 5000) and as many workers, one organization of
//! that concurrency. `--tasks` tasks (default 50 000) are enqueued with the dispatcher paused,
//! then it is resumed; the clock runs from the resume to the last finish. Reported: tasks/s
//! against the ideal `workers / latency`, the most calls the fake saw at once, and resident
//! memory (`VmHWM` of the whole process: server, fake upstream and client).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use axum::Router;
use axum::routing::post;
use serde_json::json;

use super::BenchArgs;
use super::support::*;
use cloro::queue::EngineRoutes;

/// The answer every call gets: the layout OpenAI documents for a web-search answer.
fn answer() -> String {
    let mut text = String::new();
    let mut annotations = Vec::new();
    let mut sources = Vec::new();
    for i in 0..20 {
        let sentence =
            format!("Paragraph {i}: brand number {i} is praised ☕ for its quality and price. ");
        let start = text.chars().count();
        text.push_str(&sentence);
        let end = text.chars().count();
        annotations.push(
            json!({"type": "url_citation", "start_index": start, "end_index": end,
            "url": format!("https://site{i}.example.com/article-{i}?utm_source=openai"),
            "title": format!("Article {i}")}),
        );
        sources.push(
            json!({"type": "url", "url": format!("https://site{i}.example.com/article-{i}")}),
        );
        sources.push(json!({"type": "url", "url": format!("https://other{i}.example.org/")}));
        text.push_str(
            "More details on durability, repairability and the warranty follow in the review. ",
        );
        text.push_str("Owners report few failures over the first three years of daily use. ");
    }
    json!({"id": "resp_bench", "object": "response", "status": "completed", "error": null,
        "model": "gpt-5-mini-2025-08-07", "output": [
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "queries": ["best brands", "brand reviews"], "sources": sources}},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": text, "annotations": annotations}]}],
        "usage": {"input_tokens": 812, "output_tokens": 1404, "total_tokens": 2216}})
    .to_string()
}

/// The fake upstream, in a child process of its own (`cloro bench --scenario upstream-fake`), so
/// that its CPU and memory are not the server's: answers after `latency`, counting calls in
/// flight; `GET /stats` tells `{"most": …, "served": …}`. It listens with a backlog of 4096 (the
/// default 1024 would drop the SYNs of 5,000 connections opened at once, and each dropped SYN
/// costs the client a retransmission a second later). It exits when its stdin closes.
pub(super) fn serve_fake(latency: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Shared, not copied per answer: the fake stands in for a remote service, so the less of
        // the two cores it takes, the closer the run is to a node whose upstream is elsewhere.
        let body = bytes::Bytes::from(answer());
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (n, m, d) = (now.clone(), most.clone(), served.clone());
        let app = Router::new()
            .route(
                "/v1/responses",
                post(move || {
                    let (body, now, most, served) = (body.clone(), n.clone(), m.clone(), d.clone());
                    async move {
                        let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(in_flight, Ordering::SeqCst);
                        tokio::time::sleep(latency).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        served.fetch_add(1, Ordering::SeqCst);
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }
                }),
            )
            .route(
                "/stats",
                axum::routing::get(move || {
                    let (most, served) = (most.clone(), served.clone());
                    async move {
                        axum::Json(json!({"most": most.load(Ordering::SeqCst),
                                          "served": served.load(Ordering::SeqCst)}))
                    }
                }),
            );
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], 0).into())?;
        let listener = socket.listen(4096)?;
        println!("{}", listener.local_addr()?);
        // Exit when the parent closes our stdin (or dies).
        let eof = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = eof.await;
            })
            .await?;
        anyhow::Ok(())
    })
}

/// The running fake: its address and process.
struct Fake {
    addr: std::net::SocketAddr,
    child: std::process::Child,
}

impl Fake {
    fn start(latency: Duration) -> anyhow::Result<Fake> {
        let exe = std::env::current_exe().context("the bench's own executable")?;
        let mut child = std::process::Command::new(exe)
            .args([
                "bench",
                "--scenario",
                "upstream-fake",
                "--upstream-latency-ms",
            ])
            .arg(latency.as_millis().to_string())
            .env("CLORO_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the fake upstream")?;
        let stdout = child.stdout.take().context("the fake's stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the fake upstream's address: {line:?}"))?;
        Ok(Fake { addr, child })
    }

    /// Its peak resident memory (`VmHWM`, KiB).
    fn peak_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

pub(super) async fn bench_upstream(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let workers = args.upstream_in_flight;
    let latency = Duration::from_millis(args.upstream_latency_ms);
    let n = args.upstream_tasks;
    ensure!(
        workers > 0 && n > 0,
        "--upstream-in-flight and --upstream-tasks must be above 0"
    );
    let fake = Fake::start(latency)?;
    let file =
        std::env::temp_dir().join(format!("cloro-bench-engines-{}.toml", uuid::Uuid::new_v4()));
    let _remove = RemoveOnDrop(file.clone());
    std::fs::write(
        &file,
        format!(
            "[engines.openai]\nkind = \"openai-responses\"\nprovider = \"openai\"\n\
             base_url = \"http://{}/v1\"\napi_key_env = \"BENCH_OPENAI_KEY\"\nmodel = \"gpt-5-mini\"\n\
             max_in_flight = {workers}\ntimeout_ms = 60000\n\n[task_types]\nCHATGPT = \"openai\"\n",
            fake.addr
        ),
    )?;
    let routes = EngineRoutes::load(&file, &|name| {
        (name == "BENCH_OPENAI_KEY").then(|| "sk-bench-not-a-real-key".to_owned())
    })
    .map_err(anyhow::Error::msg)?;
    let orgs = [OrgPlan {
        concurrency: u32::try_from(workers).unwrap_or(u32::MAX),
        ..OrgPlan::new("bench-upstream", 1, n)
    }];
    let bench =
        BenchServer::start_with_routes(&orgs, workers, simulated(), Arc::new(routes), true).await?;
    eprintln!(
        "[bench] upstream: {n} CHATGPT tasks through the openai-responses adapter, \
         {workers} in flight, fake upstream at {} ms",
        latency.as_millis()
    );
    let sub = submit_batches(&bench.bases, &bench.orgs[0].key, 0, n, 500, 4, "upstream").await?;
    sub.check()?;
    let store = bench.store()?;
    let before = read_memory()?;
    let Drained { wall, cpu, steady } =
        resume_until_idle(&bench, &store, "upstream", "running", n).await;
    let after = read_memory()?;
    let stats: serde_json::Value = http_client()?
        .get(format!("http://{}/stats", fake.addr))
        .send()
        .await?
        .json()
        .await?;
    let completed = stats["served"].as_u64().unwrap_or(0);
    let most = stats["most"].as_u64().unwrap_or(0) as usize;
    let fake_peak_mb = fake.peak_kib().unwrap_or(0) / 1024;
    bench.stop().await;
    let rate = n as f64 / wall.as_secs_f64();
    let ideal = workers as f64 / latency.as_secs_f64();
    let human = format!(
        "upstream: {n} tasks, {workers} in flight, {} ms upstream: {:.2} s, {:.0} tasks/s = {:.1}% of the ideal {:.0} \
         (steady, from 20% to 80% done: {}); most calls in flight at the fake {most}; calls answered {completed}; server RSS before {} MB, peak {} MB \
         (the fake upstream, a separate process: peak {fake_peak_mb} MB); CPU {} (server and client, from \
         the resume; the fake's not included)",
        latency.as_millis(),
        wall.as_secs_f64(),
        rate,
        100.0 * rate / ideal,
        ideal,
        steady_summary(steady, ideal),
        before.rss_kib / 1024,
        after.hwm_kib / 1024,
        cpu_summary(cpu, n, wall),
    );
    out.emit(
        &human,
        json!({
            "scenario": "upstream",
            "tasks": n,
            "inFlight": workers,
            "upstreamLatencyMs": latency.as_millis() as u64,
            "wallSeconds": round(wall.as_secs_f64(), 3),
            "tasksPerSecond": rate.round(),
            "idealTasksPerSecond": ideal.round(),
            "shareOfIdeal": round(rate / ideal, 3),
            "steadyTasksPerSecond": steady.map(f64::round),
            "steadyShareOfIdeal": steady.map(|r| round(r / ideal, 3)),
            "mostInFlightAtUpstream": most,
            "callsAnswered": completed,
            "rssBeforeMb": before.rss_kib / 1024,
            "peakRssMb": after.hwm_kib / 1024,
            "fakeUpstreamPeakRssMb": fake_peak_mb,
            "cpuSeconds": cpu.map(|c| round(c, 2)),
            "cpuUsPerTask": cpu.map(|c| (c * 1e6 / n as f64).round()),
        }),
    );
    ensure!(
        completed == n as u64,
        "the fake answered {completed} calls for {n} tasks"
    );
    ensure!(
        most <= workers,
        "the fake saw {most} calls at once, above max_in_flight {workers}"
    );
    Ok(())
}

/// Removes the engines file when the scenario ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
