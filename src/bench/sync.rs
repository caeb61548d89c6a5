//! `cloro bench --scenario sync`: sync calls (`POST /v1/monitor/chatgpt`) in three parts, each
//! reported on its own line (see the module docs of `bench`):
//! (a) throughput with `--clients` closed-loop clients, (b) latency at a fixed offered rate,
//! (c) `--inflight` calls in flight at once against a slow simulated engine, with the resident
//! memory.

use std::collections::BTreeMap;

use super::*;

/// What a ChatGPT sync call costs: its price 5 plus the sync surcharge 2.
const CHATGPT_SYNC_CREDITS: i64 = 7;
/// Calls of the fixed-rate part still unanswered this long after the last was sent are failures.
const RATE_DRAIN: Duration = Duration::from_secs(60);

/// A sync call's body.
fn call_json(i: usize) -> String {
    format!(r#"{{"prompt":"bench prompt {i}","country":"US"}}"#)
}

/// One sync call: `Ok(credits charged)` for a 200 `{"success":true,...}` carrying
/// `X-Credits-Charged`, else the HTTP status (if any) and what went wrong.
async fn call(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    i: usize,
) -> Result<i64, (Option<u16>, String)> {
    let resp = client
        .post(url)
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(call_json(i))
        .send()
        .await
        .map_err(|e| (None, format!("request error: {e}")))?;
    let status = resp.status();
    let charged = resp
        .headers()
        .get("x-credits-charged")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| (Some(status.as_u16()), format!("reading the answer: {e}")))?;
    if status != reqwest::StatusCode::OK {
        return Err((
            Some(status.as_u16()),
            format!("HTTP {status}: {}", snippet(&bytes)),
        ));
    }
    // The wire answer starts with its `success` field; this avoids parsing every result.
    if !bytes.starts_with(br#"{"success":true"#) {
        return Err((
            Some(200),
            format!("200 without success: {}", snippet(&bytes)),
        ));
    }
    charged.ok_or_else(|| (Some(200), "200 without X-Credits-Charged".to_owned()))
}

/// What a set of calls saw.
#[derive(Default)]
struct Tally {
    /// Latency of each answered 200.
    ok: Vec<Duration>,
    /// Answers by HTTP status (`0`: no answer at all).
    statuses: BTreeMap<u16, usize>,
    errors: usize,
    first_error: Option<String>,
    /// Sum of `X-Credits-Charged` over the 200s.
    charged: i64,
}

impl Tally {
    fn add(&mut self, took: Duration, outcome: Result<i64, (Option<u16>, String)>) {
        match outcome {
            Ok(charged) => {
                self.ok.push(took);
                self.charged += charged;
                *self.statuses.entry(200).or_default() += 1;
            }
            Err((status, e)) => {
                self.errors += 1;
                *self.statuses.entry(status.unwrap_or(0)).or_default() += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok.extend(other.ok);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        self.charged += other.charged;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn statuses_text(&self) -> String {
        let parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| {
                if *s == 0 {
                    format!("no answer: {n}")
                } else {
                    format!("{s}: {n}")
                }
            })
            .collect();
        parts.join(", ")
    }

    fn statuses_json(&self) -> Value {
        let m: serde_json::Map<String, Value> = self
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        Value::Object(m)
    }
}

/// One part's report, and what it found wrong.
struct Part {
    human: String,
    object: Value,
    problems: Vec<String>,
}

#[derive(Deserialize)]
struct SyncStatus {
    concurrency: SyncConcurrency,
}

#[derive(Deserialize)]
struct SyncConcurrency {
    used: i64,
}

/// The organization's balance.
async fn balance(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<i64> {
    let cr: CreditsReply = get_json(client, base, "/v1/credits", key).await?;
    Ok(cr.remaining)
}

/// What [`verify`] found: the credits the balance dropped by, and whether that is right.
struct Charged {
    dropped: i64,
    ok: bool,
}

impl Charged {
    fn text(&self) -> String {
        let verdict = if self.ok { "as expected" } else { "WRONG" };
        format!("{} credits charged ({verdict})", self.dropped)
    }
}

/// Checks after the part `part`: the balance dropped by exactly 7 per answered call and by the
/// sum of `X-Credits-Charged`, no slot is left in use, and no call failed.
async fn verify(
    part: &str,
    base: &str,
    key: &str,
    before: i64,
    tally: &Tally,
    problems: &mut Vec<String>,
) -> anyhow::Result<Charged> {
    let found = problems.len();
    let client = http_client()?;
    let after = balance(&client, base, key).await?;
    let dropped = before - after;
    let expected = CHATGPT_SYNC_CREDITS * tally.ok.len() as i64;
    if dropped != expected {
        problems.push(format!(
            "credits dropped by {dropped}, expected {expected} (7 x {} answered calls)",
            tally.ok.len()
        ));
    }
    if dropped != tally.charged {
        problems.push(format!(
            "credits dropped by {dropped}, but the answers' X-Credits-Charged add up to {}",
            tally.charged
        ));
    }
    let charged = Charged {
        dropped,
        ok: problems.len() == found,
    };
    let st: SyncStatus = get_json(&client, base, "/v1/async/status", key).await?;
    if st.concurrency.used != 0 {
        problems.push(format!(
            "{} concurrency slots still in use after every call was answered",
            st.concurrency.used
        ));
    }
    if tally.errors > 0 {
        problems.push(format!(
            "{} calls failed ({}; first: {})",
            tally.errors,
            tally.statuses_text(),
            tally.first_error.as_deref().unwrap_or("?")
        ));
    }
    for p in &mut problems[found..] {
        *p = format!("{part}: {p}");
    }
    Ok(charged)
}

pub(super) async fn bench_sync(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    ensure!(args.rate > 0, "--rate must be at least 1");
    ensure!(args.rate_secs > 0, "--rate-secs must be at least 1");
    ensure!(args.inflight > 0, "--inflight must be at least 1");
    let mut problems = Vec::new();
    // (a) and (b) share a server (simulator at 0 ms), each with its own organization.
    {
        let orgs = [
            OrgPlan::new(
                "bench-sync-throughput",
                WIDE_CONCURRENCY.max(u32::try_from(args.clients).unwrap_or(u32::MAX)),
                0,
            ),
            OrgPlan::new("bench-sync-rate", WIDE_CONCURRENCY, 0),
        ];
        let bench = BenchServer::start(&orgs, args.workers, simulated(), false).await?;
        let parts = async {
            let a = throughput(args, &bench).await.context("part throughput")?;
            let b = fixed_rate(args, &bench).await.context("part rate")?;
            anyhow::Ok([a, b])
        }
        .await;
        bench.stop().await;
        for part in parts? {
            out.emit(&part.human, part.object);
            problems.extend(part.problems);
        }
    }
    let c = inflight(args).await.context("part inflight")?;
    out.emit(&c.human, c.object);
    problems.extend(c.problems);
    ensure!(problems.is_empty(), "sync: {}", problems.join("; "));
    Ok(())
}

/// (a) `--tasks` calls from `--clients` closed-loop clients.
async fn throughput(args: &BenchArgs, bench: &BenchServer) -> anyhow::Result<Part> {
    let n = args.tasks;
    let key = Arc::new(bench.orgs[0].key.clone());
    let before = balance(&http_client()?, &bench.base, &key).await?;
    eprintln!(
        "[bench] sync throughput: {n} ChatGPT sync calls from {} clients, engine 0 ms",
        args.clients
    );
    let next = Arc::new(AtomicUsize::new(0));
    let progress_next = next.clone();
    let progress_guard = progress("sync throughput", move || {
        let sent = progress_next.load(Ordering::Relaxed).min(n);
        async move { format!("{sent}/{n} calls sent") }
    });
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..args.clients.min(n) {
        let url = format!("{}/v1/monitor/chatgpt", bench.bases[c % bench.bases.len()]);
        let (client, next, key) = (http_client()?, next.clone(), key.clone());
        set.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t0 = Instant::now();
                let outcome = call(&client, &url, &key, i).await;
                tally.add(t0.elapsed(), outcome);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = set.join_next().await {
        tally.merge(joined.context("a sync client panicked")?);
    }
    let wall = started.elapsed();
    drop(progress_guard);
    let mut problems = Vec::new();
    let charged = verify(
        "throughput",
        &bench.base,
        &key,
        before,
        &tally,
        &mut problems,
    )
    .await?;
    tally.ok.sort_unstable();
    let lat = &tally.ok;
    let rate = lat.len() as f64 / wall.as_secs_f64();
    let human = format!(
        "sync throughput: {n} ChatGPT sync calls from {} clients, engine 0 ms: {:.2} s, {:.0} answered calls/s; \
         latency p50 {}, p99 {}, max {}; answers {}; {}",
        args.clients,
        wall.as_secs_f64(),
        rate,
        fmt_dur(pct(lat, 50.0)),
        fmt_dur(pct(lat, 99.0)),
        fmt_dur(pct(lat, 100.0)),
        tally.statuses_text(),
        charged.text(),
    );
    let object = json!({
        "scenario": "sync",
        "part": "throughput",
        "calls": n,
        "clients": args.clients,
        "wallSeconds": round(wall.as_secs_f64(), 3),
        "answeredPerSecond": rate.round(),
        "latencyMs": {
            "p50": ms(pct(lat, 50.0)),
            "p99": ms(pct(lat, 99.0)),
            "max": ms(pct(lat, 100.0)),
        },
        "answers": tally.statuses_json(),
        "creditsCharged": charged.dropped,
        "creditsAsExpected": charged.ok,
        "problems": problems,
    });
    Ok(Part {
        human,
        object,
        problems,
    })
}

/// (b) `--rate` calls/s for `--rate-secs`, open loop: each call is sent at its scheduled instant
/// whatever the earlier ones are doing; its latency runs from that instant to the whole answer,
/// so a late sender is counted against the server, never hidden.
async fn fixed_rate(args: &BenchArgs, bench: &BenchServer) -> anyhow::Result<Part> {
    let rate = args.rate;
    let n = usize::try_from(rate.saturating_mul(args.rate_secs)).unwrap_or(usize::MAX);
    let key = Arc::new(bench.orgs[1].key.clone());
    let before = balance(&http_client()?, &bench.base, &key).await?;
    eprintln!(
        "[bench] sync rate: {rate} calls/s offered for {} s ({n} calls) over {} client pools, engine 0 ms",
        args.rate_secs, args.clients
    );
    let clients: Vec<reqwest::Client> = (0..args.clients)
        .map(|_| http_client())
        .collect::<anyhow::Result<_>>()?;
    let urls: Vec<Arc<str>> = bench
        .bases
        .iter()
        .map(|b| Arc::from(format!("{b}/v1/monitor/chatgpt")))
        .collect();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let client = clients[i % clients.len()].clone();
        let url = urls[i % urls.len()].clone();
        let (key, in_flight, most) = (key.clone(), in_flight.clone(), most.clone());
        set.spawn(async move {
            let lag = due.elapsed();
            let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            most.fetch_max(now, Ordering::Relaxed);
            let outcome = call(&client, &url, &key, i).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            (due.elapsed(), lag, outcome)
        });
    }
    let sent_by = start.elapsed();
    let mut tally = Tally::default();
    let mut lags = Vec::with_capacity(n);
    let drained = tokio::time::timeout(RATE_DRAIN, async {
        while let Some(joined) = set.join_next().await {
            let (took, lag, outcome) = joined.context("a sync call panicked")?;
            lags.push(lag);
            tally.add(took, outcome);
        }
        anyhow::Ok(())
    })
    .await;
    let mut problems = Vec::new();
    match drained {
        Ok(r) => r?,
        Err(_) => {
            problems.push(format!(
                "{} calls unanswered {} s after the last was sent",
                set.len(),
                RATE_DRAIN.as_secs()
            ));
            set.abort_all();
        }
    }
    let wall = start.elapsed();
    let charged = verify("rate", &bench.base, &key, before, &tally, &mut problems).await?;
    tally.ok.sort_unstable();
    lags.sort_unstable();
    let lat = &tally.ok;
    let achieved = lat.len() as f64 / sent_by.as_secs_f64().max(1e-9);
    let human = format!(
        "sync rate: {rate} calls/s offered for {} s, engine 0 ms: {} answered ({:.0}/s); latency from the \
         scheduled send p50 {}, p99 {}, max {}; sender late p99 {}; most in flight {}; answers {}; {}",
        args.rate_secs,
        lat.len(),
        achieved,
        fmt_dur(pct(lat, 50.0)),
        fmt_dur(pct(lat, 99.0)),
        fmt_dur(pct(lat, 100.0)),
        fmt_dur(pct(&lags, 99.0)),
        most.load(Ordering::Relaxed),
        tally.statuses_text(),
        charged.text(),
    );
    let object = json!({
        "scenario": "sync",
        "part": "rate",
        "offeredPerSecond": rate,
        "seconds": args.rate_secs,
        "calls": n,
        "answered": lat.len(),
        "answeredPerSecond": achieved.round(),
        "wallSeconds": round(wall.as_secs_f64(), 3),
        "latencyMs": {
            "p50": ms(pct(lat, 50.0)),
            "p99": ms(pct(lat, 99.0)),
            "max": ms(pct(lat, 100.0)),
        },
        "senderLateMs": { "p99": ms(pct(&lags, 99.0)), "max": ms(pct(&lags, 100.0)) },
        "mostInFlight": most.load(Ordering::Relaxed),
        "answers": tally.statuses_json(),
        "creditsCharged": charged.dropped,
        "creditsAsExpected": charged.ok,
        "problems": problems,
    });
    Ok(Part {
        human,
        object,
        problems,
    })
}

/// Resets this process's `VmHWM` to its current `VmRSS` (Linux: `5` into `clear_refs`).
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// (c) `--inflight` calls at once on a simulator that takes `--sim-latency-ms`; the
/// organization's concurrency is `--inflight`.
async fn inflight(args: &BenchArgs) -> anyhow::Result<Part> {
    let n = args.inflight;
    let latency = Duration::from_millis(args.sim_latency_ms);
    let engine: Arc<dyn Engine> = Arc::new(SimulatedEngine {
        latency: LatencyRange {
            min_ms: args.sim_latency_ms,
            max_ms: args.sim_latency_ms,
        },
        failure_rate: 0.0,
    });
    let concurrency = u32::try_from(n).unwrap_or(u32::MAX);
    let orgs = [OrgPlan::new("bench-sync-inflight", concurrency, 0)];
    // Every call's connection is served at once (the default edge serves 4096), all from
    // loopback (`bench_edge` lifts the per-address share).
    let edge = cloro::api::edge::EdgeConfig {
        max_connections: n + 1024,
        ..bench_edge()
    };
    let rss_before = read_memory()?;
    let bench =
        BenchServer::start_tuned(&orgs, args.workers, engine, Arc::default(), false, edge).await?;
    let result = inflight_on(args, &bench, n, latency, concurrency, rss_before).await;
    bench.stop().await;
    result
}

async fn inflight_on(
    args: &BenchArgs,
    bench: &BenchServer,
    n: usize,
    latency: Duration,
    concurrency: u32,
    rss_before: Memory,
) -> anyhow::Result<Part> {
    let key = Arc::new(bench.orgs[0].key.clone());
    let before = balance(&http_client()?, &bench.base, &key).await?;
    // Connections are opened over `ramp` (half the engine's time, at most 1 s), so that the
    // listener's accept queue (1024) never overflows and every call is still in flight when the
    // last one starts.
    let ramp = (latency / 2).min(Duration::from_secs(1));
    eprintln!(
        "[bench] sync inflight: {n} calls at once (started over {} ms) from {} client pools, \
         engine {} ms, concurrency {concurrency}",
        ramp.as_millis(),
        args.clients,
        latency.as_millis()
    );
    let peak_reset = reset_peak_memory();
    let clients: Vec<reqwest::Client> = (0..args.clients.min(n))
        .map(|_| http_client())
        .collect::<anyhow::Result<_>>()?;
    let url: Arc<str> = Arc::from(format!("{}/v1/monitor/chatgpt", bench.base));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));

    // The sampler: the server's `concurrency.used`, and VmRSS.
    let stop = CancellationToken::new();
    let sampler = {
        let (stop, base, key) = (stop.clone(), bench.base.clone(), key.clone());
        let client = http_client()?;
        tokio::spawn(async move {
            let (mut most_used, mut most_rss) = (0i64, 0u64);
            loop {
                if let Ok(st) =
                    get_json::<SyncStatus>(&client, &base, "/v1/async/status", &key).await
                {
                    most_used = most_used.max(st.concurrency.used);
                }
                if let Ok(m) = read_memory() {
                    most_rss = most_rss.max(m.rss_kib);
                }
                tokio::select! {
                    _ = stop.cancelled() => return (most_used, most_rss),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
    };

    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let at = started + ramp.mul_f64(i as f64 / n as f64);
        let client = clients[i % clients.len()].clone();
        let (url, key, in_flight, most) =
            (url.clone(), key.clone(), in_flight.clone(), most.clone());
        set.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let t0 = Instant::now();
            let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            most.fetch_max(now, Ordering::Relaxed);
            let outcome = call(&client, &url, &key, i).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            (t0.elapsed(), outcome)
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = set.join_next().await {
        let (took, outcome) = joined.context("a sync call panicked")?;
        tally.add(took, outcome);
    }
    let wall = started.elapsed();
    stop.cancel();
    let (most_used, most_rss) = sampler.await.context("the sampler panicked")?;
    let most_client = most.load(Ordering::Relaxed);
    let mem = read_memory()?;
    let mut problems = Vec::new();
    let charged = verify("inflight", &bench.base, &key, before, &tally, &mut problems).await?;
    if tally.ok.len() != n {
        problems.push(format!(
            "inflight: {} of {n} calls answered 200",
            tally.ok.len()
        ));
    }
    tally.ok.sort_unstable();
    let lat = &tally.ok;
    let peak_scope = if peak_reset {
        "peak during this part"
    } else {
        "peak since the process started"
    };
    let human = format!(
        "sync inflight: {n} calls at once, engine {} ms, concurrency {concurrency}: done in {:.2} s; \
         latency p50 {}, p99 {}, max {}; most in flight: {most_client} at the client, {most_used} slots in use \
         at the server (sampled every 50 ms); answers {}; resident memory of the WHOLE bench process \
         (server and clients): VmHWM {} MiB ({peak_scope}), highest VmRSS sampled {} MiB, VmRSS {} MiB \
         before this part's server started; {}",
        latency.as_millis(),
        wall.as_secs_f64(),
        fmt_dur(pct(lat, 50.0)),
        fmt_dur(pct(lat, 99.0)),
        fmt_dur(pct(lat, 100.0)),
        tally.statuses_text(),
        mem.hwm_kib / 1024,
        most_rss / 1024,
        rss_before.rss_kib / 1024,
        charged.text(),
    );
    let object = json!({
        "scenario": "sync",
        "part": "inflight",
        "calls": n,
        "simLatencyMs": latency.as_millis() as u64,
        "concurrency": concurrency,
        "rampMs": ramp.as_millis() as u64,
        "wallSeconds": round(wall.as_secs_f64(), 3),
        "latencyMs": {
            "p50": ms(pct(lat, 50.0)),
            "p99": ms(pct(lat, 99.0)),
            "max": ms(pct(lat, 100.0)),
        },
        "mostInFlightAtClient": most_client,
        "mostSlotsUsedAtServer": most_used,
        "answers": tally.statuses_json(),
        "memory": {
            "scope": "whole bench process (server and clients)",
            "vmHwmKiB": mem.hwm_kib,
            "vmHwmIs": peak_scope,
            "mostVmRssSampledKiB": most_rss,
            "vmRssBeforeKiB": rss_before.rss_kib,
        },
        "creditsCharged": charged.dropped,
        "creditsAsExpected": charged.ok,
        "problems": problems,
    });
    Ok(Part {
        human,
        object,
        problems,
    })
}
