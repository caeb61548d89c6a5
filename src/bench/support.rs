//! What every scenario shares: the server under test on a scratch database, the HTTP client
//! and its request bodies, the answers it parses, and the report (percentiles, memory, JSON
//! lines).

use super::*;

// ----------------------------------------------------------------------------------------------
// The server under test.

/// An organization to create before the server starts.
pub(super) struct OrgPlan {
    pub(super) name: String,
    pub(super) concurrency: u32,
    pub(super) queue_limit: i64,
}

/// `n` tasks over `norgs` organizations of wide concurrency: organization `o` gets the global task
/// indices `[o·n/norgs, (o+1)·n/norgs)`, and is named `<prefix>-<o>`.
pub(super) fn split_tasks(
    n: usize,
    norgs: usize,
    prefix: &str,
) -> (Vec<(usize, usize)>, Vec<OrgPlan>) {
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
    pub(super) fn new(name: &str, concurrency: u32, tasks: usize) -> OrgPlan {
        OrgPlan {
            name: name.to_owned(),
            concurrency,
            queue_limit: (tasks as i64).saturating_add(1000),
        }
    }
}

pub(super) struct BenchOrg {
    pub(super) key: String,
    /// The public organization id.
    pub(super) id: String,
}

/// One or more server nodes over a fresh database (SQLite in a scratch directory, or a new
/// PostgreSQL database with `--database`).
pub(super) struct BenchServer {
    pub(super) servers: Vec<Server>,
    /// The first node's base URL.
    pub(super) base: String,
    /// Every node's base URL.
    pub(super) bases: Vec<String>,
    pub(super) orgs: Vec<BenchOrg>,
    /// The session holding a snapshot open (`--long-transaction`); dropped before the database.
    pub(super) _holder: Option<tokio_postgres::Client>,
    /// `--scrape-metrics`: the scrapers, stopped with the server.
    pub(super) scrapers: Vec<tokio::task::JoinHandle<()>>,
    pub(super) _db: ScratchDb,
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        for s in &self.scrapers {
            s.abort();
        }
    }
}

/// The admin token of `--scrape-metrics`.
const SCRAPE_TOKEN: &str = "bench-scrape-token";

/// GETs `{base}/metrics` once a second until aborted (a Prometheus server's load).
async fn scrape_every_second(base: String) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let scraped = client
            .get(format!("{base}/metrics"))
            .bearer_auth(SCRAPE_TOKEN)
            .send()
            .await;
        if let Ok(resp) = scraped {
            let _ = resp.bytes().await;
        }
    }
}

impl BenchServer {
    pub(super) async fn start(
        plans: &[OrgPlan],
        workers: usize,
        engine: Arc<dyn Engine>,
        paused: bool,
    ) -> anyhow::Result<BenchServer> {
        Self::start_with_routes(plans, workers, engine, Arc::default(), paused).await
    }

    /// [`BenchServer::start`] with configured engines (`routes`) beside the default `engine`.
    pub(super) async fn start_with_routes(
        plans: &[OrgPlan],
        workers: usize,
        engine: Arc<dyn Engine>,
        routes: Arc<cloro::queue::EngineRoutes>,
        paused: bool,
    ) -> anyhow::Result<BenchServer> {
        Self::start_tuned(plans, workers, engine, routes, paused, bench_edge()).await
    }

    /// [`BenchServer::start_with_routes`] with the HTTP edge's settings given (e.g. more
    /// connections served at once than the default 4096).
    pub(super) async fn start_tuned(
        plans: &[OrgPlan],
        workers: usize,
        engine: Arc<dyn Engine>,
        routes: Arc<cloro::queue::EngineRoutes>,
        paused: bool,
        edge: cloro::api::edge::EdgeConfig,
    ) -> anyhow::Result<BenchServer> {
        let (pg, nodes) = TARGET.get().cloned().unwrap_or((None, 1));
        let db = match &pg {
            None => ScratchDb::sqlite().context("creating the scratch database")?,
            Some(url) => ScratchDb::postgres(url).await?,
        };
        let admin = admin::open(&db.database)
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
            cloro::store::Database::Postgres(url)
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
                engines: routes.clone(),
                max_body_bytes: 10 * 1024 * 1024,
                default_plan: "free".into(),
                edge: edge.clone(),
                webhooks: cloro::webhooks::WebhookConfig {
                    allow_private: true,
                    ..Default::default()
                },
                pages: Default::default(),
                goto: Default::default(),
                operator: cloro::api::admin::OperatorConfig {
                    admin_token: SCRAPE
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .then(|| cloro::api::admin::AdminToken::new(SCRAPE_TOKEN))
                        .flatten(),
                    ..Default::default()
                },
                clock: cloro::clock::Clock::system(),
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
        let scrapers = if SCRAPE.load(std::sync::atomic::Ordering::Relaxed) {
            bases
                .iter()
                .map(|b| tokio::spawn(scrape_every_second(b.clone())))
                .collect()
        } else {
            Vec::new()
        };
        Ok(BenchServer {
            scrapers,
            base: bases[0].clone(),
            bases,
            servers,
            orgs,
            _holder: holder,
            _db: db,
        })
    }

    pub(super) fn store(&self) -> anyhow::Result<Arc<dyn cloro::store::Store>> {
        self.servers
            .first()
            .map(|s| s.store.clone())
            .context("the server is stopped")
    }

    /// Shuts the nodes down gracefully; the database goes when `self` is dropped.
    pub(super) async fn stop(mut self) {
        for s in self.scrapers.drain(..) {
            s.abort();
        }
        for server in self.servers.drain(..) {
            server.shutdown();
            server.stopped(Duration::from_secs(60)).await;
        }
    }
}

/// The edge of a bench server: the defaults, without the rate limit nor the per-address share
/// of connections (the benchmarks measure the queue, and every client is on loopback).
pub(super) fn bench_edge() -> cloro::api::edge::EdgeConfig {
    cloro::api::edge::EdgeConfig {
        rate_limit: u32::MAX,
        max_connections_per_address: usize::MAX,
        ..Default::default()
    }
}

/// Opens a session on `url` with a REPEATABLE READ transaction that has taken its snapshot
/// and an xid: until it ends, no row version deleted after it can be vacuumed away.
pub(super) async fn hold_snapshot(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = cloro::store::postgres::tls::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("connecting the long transaction: {e}"))?;
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
pub(super) fn simulated() -> Arc<dyn Engine> {
    Arc::new(SimulatedEngine {
        latency: LatencyRange {
            min_ms: 0,
            max_ms: 0,
        },
        failure_rate: 0.0,
    })
}

/// Records when each task first reached the engine, then runs the simulated engine.
pub(super) struct RecordingEngine {
    pub(super) started: Mutex<HashMap<Uuid, Instant>>,
    pub(super) inner: SimulatedEngine,
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

pub(super) fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .context("building the HTTP client")
}

/// One task of the benchmark, `i` its global index.
pub(super) fn task_json(i: usize) -> String {
    let mut s = String::with_capacity(112);
    push_task(&mut s, i);
    s
}

pub(super) fn push_task(s: &mut String, i: usize) {
    push_task_hooked(s, i, None);
}

/// A task of the benchmark with, optionally, a `webhook.url`.
pub(super) fn push_task_hooked(s: &mut String, i: usize, hook: Option<&str>) {
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
pub(super) struct Submitted {
    /// One per batch request, in completion order.
    pub(super) latencies: Vec<Duration>,
    /// Batch requests that were not a 200 with every item accepted.
    pub(super) failures: usize,
    pub(super) first_error: Option<String>,
    /// Tasks accepted.
    pub(super) accepted: usize,
    /// Sum of `creditsToCharge` over the accepted tasks.
    pub(super) credits: i64,
}

impl Submitted {
    pub(super) fn check(&self) -> anyhow::Result<()> {
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
pub(super) async fn submit_batches(
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
pub(super) async fn submit_batches_hooked(
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

pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
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

pub(super) fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.chars().take(300).collect()
}

#[derive(Deserialize)]
pub(super) struct BatchReply {
    pub(super) summary: BatchSummary,
    pub(super) results: Vec<BatchItem>,
}

#[derive(Deserialize)]
pub(super) struct BatchSummary {
    pub(super) succeeded: usize,
}

#[derive(Deserialize)]
pub(super) struct BatchItem {
    #[serde(default)]
    pub(super) credits: Option<ItemCredits>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ItemCredits {
    pub(super) credits_to_charge: i64,
}

#[derive(Deserialize)]
pub(super) struct TaskReply {
    pub(super) task: TaskId,
}

#[derive(Deserialize)]
pub(super) struct TaskId {
    pub(super) id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusReply {
    pub(super) queued_tasks: u64,
    pub(super) processing_tasks: u64,
}

#[derive(Deserialize)]
pub(super) struct CreditsReply {
    pub(super) remaining: i64,
}

// ----------------------------------------------------------------------------------------------
// Reporting.

pub(super) struct Output {
    pub(super) json: bool,
    pub(super) machine: Value,
}

impl Output {
    /// The human line on stdout, or with `--json` the object on stdout and the line on stderr.
    pub(super) fn emit(&self, human: &str, mut object: Value) {
        if self.json {
            eprintln!("{human}");
            object["machine"] = self.machine.clone();
            println!("{object}");
        } else {
            println!("{human}");
        }
    }
}

pub(super) fn machine_info() -> Value {
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
pub(super) fn progress<F>(label: &str, what: impl Fn() -> F + Send + 'static) -> DropGuard
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
pub(super) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds, to the microsecond (for JSON).
pub(super) fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 3)
}

/// Microseconds, to a tenth (for JSON).
pub(super) fn us(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e6, 1)
}

pub(super) fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

pub(super) fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", us(d))
    } else {
        format!("{:.2} ms", ms(d))
    }
}

pub(super) struct Memory {
    pub(super) rss_kib: u64,
    pub(super) hwm_kib: u64,
}

/// `VmRSS` and `VmHWM` of this process (Linux).
pub(super) fn read_memory() -> anyhow::Result<Memory> {
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

/// CPU time this process used so far (user + system, all threads), from `/proc/self/stat`
/// (its ticks are `USER_HZ`, 100 a second on Linux); `None` where that file is unreadable.
pub(super) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// What [`resume_until_idle`] saw: the wall time from the resume, the CPU seconds this process
/// used in it (`None` where `/proc` cannot tell), and the steady rate.
pub(super) struct Drained {
    pub(super) wall: Duration,
    pub(super) cpu: Option<f64>,
    /// Tasks a second while the middle of the run was done: from the first sample (every
    /// 100 ms) with at least 20% of the tasks finished to the first with at least 80%. The
    /// first wave's start and the last wave's end are outside it. `None` when the run was too
    /// short to have two such samples apart.
    pub(super) steady: Option<f64>,
}

/// Resumes every node's dispatcher, then waits until the store is idle, showing "`q` queued,
/// `p` `busy`" under `label` meanwhile, and sampling how many of the `n` tasks are finished
/// every 100 ms (for [`Drained::steady`]).
pub(super) async fn resume_until_idle(
    bench: &BenchServer,
    store: &Arc<dyn cloro::store::Store>,
    label: &str,
    busy: &'static str,
    n: usize,
) -> Drained {
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for s in &bench.servers {
        s.gate.resume();
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(Duration, u64)>::new()));
    {
        let _p = progress(label, {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move {
                    match store.totals().await {
                        Ok((q, p)) => format!("{q} queued, {p} {busy}"),
                        Err(e) => e.to_string(),
                    }
                }
            }
        });
        let stop = CancellationToken::new();
        let _sampler = stop.clone().drop_guard();
        tokio::spawn({
            let (store, samples) = (store.clone(), samples.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    if let Ok((q, p)) = store.totals().await {
                        let done = (n as u64).saturating_sub(q + p);
                        if let Ok(mut s) = samples.lock() {
                            s.push((started.elapsed(), done));
                        }
                    }
                }
            }
        });
        cloro::queue::wait_idle(&**store).await;
    }
    let wall = started.elapsed();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Drained {
        wall,
        cpu: cpu_before.zip(cpu_seconds()).map(|(a, b)| b - a),
        steady: steady_rate(&samples, n as u64),
    }
}

/// Tasks a second between the first sample with at least 20% of `n` done and the first with
/// at least 80% (see [`Drained::steady`]).
pub(super) fn steady_rate(samples: &[(Duration, u64)], n: u64) -> Option<f64> {
    let first = |share: u64| samples.iter().find(|(_, done)| *done * 100 >= n * share);
    let ((t0, d0), (t1, d1)) = (first(20)?, first(80)?);
    let secs = t1.checked_sub(*t0)?.as_secs_f64();
    (secs > 0.0 && d1 > d0).then(|| (d1 - d0) as f64 / secs)
}

/// "`r` tasks/s = `p`% of the ideal" for a steady rate, or why there is none.
pub(super) fn steady_summary(steady: Option<f64>, ideal: f64) -> String {
    match steady {
        Some(r) => format!("{r:.0} tasks/s = {:.1}%", 100.0 * r / ideal),
        None => "too short to tell".into(),
    }
}

/// "`c` s = `µs` µs per task, `k` cores on average" for `cpu` seconds over `n` tasks in `wall`.
pub(super) fn cpu_summary(cpu: Option<f64>, n: usize, wall: Duration) -> String {
    match cpu {
        Some(c) => format!(
            "{c:.1} s = {:.0} µs per task, {:.2} cores on average",
            c * 1e6 / n as f64,
            c / wall.as_secs_f64()
        ),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, done: u64) -> (Duration, u64) {
        (Duration::from_millis(ms), done)
    }

    #[test]
    fn the_steady_rate_counts_from_20_to_80_percent_done() {
        // 1,000 tasks: 200 done at 1 s, 300 at 2 s, 800 at 4 s: 600 tasks in 3 s.
        let s = [
            at(0, 0),
            at(1000, 200),
            at(2000, 300),
            at(4000, 800),
            at(5000, 1000),
        ];
        assert_eq!(steady_rate(&s, 1000), Some(200.0));
        // The first sample at or past each mark counts, not the last one before it.
        let s = [at(500, 150), at(1500, 250), at(3500, 790), at(4500, 850)];
        assert_eq!(steady_rate(&s, 1000), Some(200.0));
    }

    #[test]
    fn no_steady_rate_without_two_samples_apart() {
        assert_eq!(steady_rate(&[], 10), None);
        assert_eq!(steady_rate(&[at(100, 0), at(200, 10)], 10), None);
        assert_eq!(steady_rate(&[at(100, 5)], 10), None);
    }
}
