//! `cloro bench --scenario load`: mixed traffic at a fixed offered rate (see the module docs of
//! `bench`).

use super::*;

pub(super) const LOAD_KINDS: [&str; 4] = ["create", "batch", "get", "status"];
pub(super) const LOAD_CYCLE: [usize; 10] = [0, 2, 3, 0, 2, 1, 0, 2, 3, 0];

/// What one `load` client measured: latencies per kind, and errors.
#[derive(Default)]
pub(super) struct LoadClient {
    pub(super) latencies: [Vec<Duration>; 4],
    pub(super) errors: usize,
    pub(super) first_error: Option<String>,
    pub(super) accepted: usize,
}

pub(super) async fn load_client(
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

pub(super) async fn bench_load(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
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
