//! `cloro bench --scenario webhooks`: delivery throughput, and what webhooks cost the queue.
//!
//! A receiver (an axum server in the same process, on `127.0.0.1:<random port>`) answers every
//! POST with 200 after reading its body, and notes when the last request arrived. Runs on fresh
//! servers (`--workers`, `--orgs` organizations of concurrency 1000, simulated engine at 0 ms,
//! `--tasks` tasks submitted in batches of `--batch`, one client per organization, as in
//! `drain`), in the order A B A B … A with `--rounds` runs B:
//!
//! * **A, without webhooks**: tasks/s = tasks / (first request → every task finished);
//! * **B, with webhooks**: the same tasks, each with `webhook.url` pointing at the receiver,
//!   every organization with a signing secret (so each delivery is signed): tasks/s as above
//!   (the queue's throughput while its deliveries go out), and once every delivery arrived:
//!   how many arrived while tasks still ran (the sender yields to a busy queue, see the
//!   `webhooks` module docs), deliveries/s for the rest = deliveries received after the last
//!   task finished / (last task finished → last delivery received), and the time from the
//!   first request until every delivery was received.
//!
//! Each B's slowdown is measured against the mean of the two A runs around it, so neither an
//! order effect nor a slow patch of a shared machine passes for a cost; the medians over the
//! rounds are reported, with every round's slowdown.
//!
//! The receiver, the clients and the server share the process, the runtime and the cores; the
//! sender's per-host limit (8 at once) applies, since every delivery goes to one host.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    target: AtomicUsize,
    last: Mutex<Option<Instant>>,
    reached: tokio::sync::Notify,
}

async fn start_receiver(cancel: CancellationToken) -> anyhow::Result<(String, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    async fn hit(
        axum::extract::State(seen): axum::extract::State<Arc<Seen>>,
        _body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        let now = Instant::now();
        *seen.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        let n = seen.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == seen.target.load(Ordering::SeqCst) {
            seen.reached.notify_one();
        }
        axum::http::StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hit))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    });
    Ok((url, seen))
}

struct Run {
    tasks_wall: Duration,
    deliveries: Option<Deliveries>,
}

struct Deliveries {
    received: usize,
    /// Received while the queue was still running tasks.
    during: usize,
    /// The last task finished → the last delivery received.
    after_drain: Duration,
    /// The first request → the last delivery received.
    to_last: Duration,
}

async fn run_once(args: &BenchArgs, hook: Option<(&str, &Arc<Seen>)>) -> anyhow::Result<Run> {
    let n = args.tasks;
    let norgs = args.orgs.clamp(1, n.max(1));
    let (bounds, plans) = split_tasks(n, norgs, "bench-hooks");
    let bench = BenchServer::start(&plans, args.workers, simulated(), false).await?;
    let store = bench.store()?;
    if let Some((_, seen)) = hook {
        let admin = admin::open(&bench._db.database).await?;
        for o in &bench.orgs {
            admin
                .set_webhook_secret(&o.id, Some(&cloro::webhooks::new_secret()))
                .await?;
        }
        seen.count.store(0, Ordering::SeqCst);
        *seen.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        seen.target.store(n, Ordering::SeqCst);
    }
    let url = hook.map(|(u, _)| u.to_owned());
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for (o, (a, b)) in bounds.iter().copied().enumerate() {
        let base = bench.bases[o % bench.bases.len()].clone();
        let key = bench.orgs[o].key.clone();
        let (batch, url) = (args.batch, url.clone());
        submitters.spawn(async move {
            let label = format!("webhooks org {o}");
            submit_batches_hooked(&[base], &key, a, b, batch, 1, &label, url.as_deref()).await
        });
    }
    while let Some(joined) = submitters.join_next().await {
        joined.context("a submitter panicked")??.check()?;
    }
    queue::wait_idle(&*store).await;
    let tasks_wall = started.elapsed();
    let drained = Instant::now();
    let during = hook.map_or(0, |(_, seen)| seen.count.load(Ordering::SeqCst));
    let deliveries = match hook {
        None => None,
        Some((_, seen)) => {
            let reached = seen.reached.notified();
            tokio::pin!(reached);
            reached.as_mut().enable();
            if seen.count.load(Ordering::SeqCst) < n
                && tokio::time::timeout(Duration::from_secs(600), reached)
                    .await
                    .is_err()
            {
                bench.stop().await;
                bail!(
                    "only {} of {n} deliveries arrived within 600 s",
                    seen.count.load(Ordering::SeqCst)
                );
            }
            let last = seen
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(started);
            Some(Deliveries {
                received: seen.count.load(Ordering::SeqCst),
                during,
                after_drain: last.saturating_duration_since(drained),
                to_last: last.saturating_duration_since(started),
            })
        }
    };
    bench.stop().await;
    Ok(Run {
        tasks_wall,
        deliveries,
    })
}

pub(super) async fn bench_webhooks(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let n = args.tasks;
    let rounds = args.rounds.max(1);
    ensure!(n > 0, "--tasks must be at least 1");
    eprintln!(
        "[bench] webhooks: {n} tasks over {} organizations, {} workers, engine 0 ms; \
         without, then {rounds} rounds of (with webhooks, without)",
        args.orgs, args.workers
    );
    let cancel = CancellationToken::new();
    let (url, seen) = start_receiver(cancel.clone()).await?;
    let rate = |r: &Run| n as f64 / r.tasks_wall.as_secs_f64();
    // A-B-A-B-…-A: every run with webhooks has a run without on either side, so neither an
    // order effect (a warmer or a more tired process) nor a slow patch of a shared machine
    // passes for the cost of webhooks.
    let first = run_once(args, None).await;
    let mut plain = vec![rate(&first?)];
    let mut hooked = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let with = match run_once(args, Some((&url, &seen))).await {
            Ok(r) => r,
            Err(e) => {
                cancel.cancel();
                return Err(e);
            }
        };
        let without = run_once(args, None).await?;
        plain.push(rate(&without));
        let Some(d) = with.deliveries.as_ref() else {
            bail!("no delivery figures");
        };
        let (before, after) = (plain[round - 1], plain[round]);
        let with_rate = rate(&with);
        let slowdown = 100.0 * (1.0 - with_rate / ((before + after) / 2.0));
        let delivery_rate =
            d.received.saturating_sub(d.during) as f64 / d.after_drain.as_secs_f64().max(1e-9);
        eprintln!(
            "[bench] webhooks round {round}: {before:.0} / {with_rate:.0} / {after:.0} tasks/s \
             (without / with / without): {slowdown:.1}% slower; {delivery_rate:.0} deliveries/s"
        );
        hooked.push((with_rate, slowdown, delivery_rate, with));
    }
    cancel.cancel();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[m - 1] + v[m]) / 2.0
        } else {
            v[m]
        }
    };
    let slowdowns: Vec<f64> = hooked.iter().map(|h| h.1).collect();
    let slowdown = median(slowdowns.clone());
    let plain_rate = median(plain.clone());
    let hooked_rate = median(hooked.iter().map(|h| h.0).collect());
    let delivery_rate = median(hooked.iter().map(|h| h.2).collect());
    let deliveries: Vec<&Deliveries> = hooked
        .iter()
        .filter_map(|h| h.3.deliveries.as_ref())
        .collect();
    let received = deliveries.iter().map(|d| d.received).min().unwrap_or(0);
    let during = median(deliveries.iter().map(|d| d.during as f64).collect());
    let to_last = median(deliveries.iter().map(|d| d.to_last.as_secs_f64()).collect());
    let human = format!(
        "webhooks: {n} tasks, {} workers, {rounds} rounds (medians): {plain_rate:.0} tasks/s without \
         webhooks, {hooked_rate:.0} tasks/s with; {slowdown:.1}% slower (rounds: {}); every run \
         delivered all {n} signed deliveries: {during:.0} while tasks ran, the rest at \
         {delivery_rate:.0}/s once the queue was idle; all delivered {to_last:.2} s after the \
         first submission",
        args.workers,
        slowdowns
            .iter()
            .map(|s| format!("{s:.1}%"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.emit(
        &human,
        json!({
            "scenario": "webhooks",
            "tasks": n,
            "orgs": args.orgs,
            "workers": args.workers,
            "rounds": rounds,
            "tasksPerSecondWithout": plain_rate.round(),
            "tasksPerSecondWith": hooked_rate.round(),
            "slowdownPercent": round(slowdown, 1),
            "slowdownPercentRounds": slowdowns.iter().map(|s| round(*s, 1)).collect::<Vec<_>>(),
            "deliveries": received,
            "deliveriesWhileTasksRan": during.round(),
            "deliveriesPerSecond": delivery_rate.round(),
            "allDeliveredSeconds": round(to_last, 3),
        }),
    );
    ensure!(received >= n, "{received} of {n} deliveries arrived");
    Ok(())
}
