//! `cloro bench --scenario webhooks`: delivery throughput, and what webhooks cost the queue.
//!
//! A receiver (an axum server in the same process, on `127.0.0.1:<random port>`) answers every
//! POST with 200 after reading its body, and notes when the first and the last request
//! arrived. Three runs on fresh servers (`--workers`, `--orgs` organizations of concurrency 1000,
//! simulated engine at 0 ms, `--tasks` tasks submitted in batches of `--batch`, one client per
//! organization, as in `drain`):
//!
//! 1. **without webhooks**: tasks/s = tasks / (first request → every task finished);
//! 2. **with webhooks**: the same tasks, each with `webhook.url` pointing at the receiver, every
//!    organization with a signing secret (so each delivery is signed). Reported: tasks/s as
//!    above (the queue's throughput while its deliveries go out), the slowdown against the mean
//!    of runs 1 and 3,
//!    how many deliveries arrived while tasks still ran (the sender yields to a busy queue, see
//!    the `webhooks` module docs), deliveries/s for the rest = deliveries received after the
//!    last task finished / (last task finished → last delivery received), and the time from
//!    the first request until every delivery was received;
//! 3. **without webhooks** again (A-B-A), so that an order effect does not pass for a cost.
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
        let admin = Admin::open(&bench._db.database).await?;
        for o in &bench.orgs {
            admin
                .set_webhook_secret(&o.id, Some(&crate::webhooks::new_secret()))
                .await?;
        }
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
    ensure!(n > 0, "--tasks must be at least 1");
    eprintln!(
        "[bench] webhooks: {n} tasks over {} organizations, {} workers, engine 0 ms; without, then with webhooks",
        args.orgs, args.workers
    );
    let cancel = CancellationToken::new();
    let (url, seen) = start_receiver(cancel.clone()).await?;
    // A-B-A: the run without webhooks goes before and after the run with them, so an order
    // effect (a warmer or a more tired process) does not pass for the cost of webhooks.
    let before = run_once(args, None).await?;
    let hooked = run_once(args, Some((&url, &seen))).await;
    cancel.cancel();
    let hooked = hooked?;
    let after = run_once(args, None).await?;
    let plain_before = n as f64 / before.tasks_wall.as_secs_f64();
    let plain_after = n as f64 / after.tasks_wall.as_secs_f64();
    eprintln!(
        "[bench] webhooks: without {plain_before:.0} tasks/s before, {plain_after:.0} after the run with webhooks"
    );
    let Some(d) = hooked.deliveries else {
        bail!("no delivery figures");
    };
    let received = d.received;
    let plain_rate = (plain_before + plain_after) / 2.0;
    let hooked_rate = n as f64 / hooked.tasks_wall.as_secs_f64();
    let slowdown = 100.0 * (1.0 - hooked_rate / plain_rate);
    let delivery_rate =
        received.saturating_sub(d.during) as f64 / d.after_drain.as_secs_f64().max(1e-9);
    let human = format!(
        "webhooks: {n} tasks, {} workers: {:.0} tasks/s without webhooks, {:.0} tasks/s with \
         ({slowdown:.1}% slower); {received} signed deliveries: {} while tasks ran, the rest at \
         {delivery_rate:.0}/s once the queue was idle; all delivered {:.2} s after the first submission",
        args.workers,
        plain_rate,
        hooked_rate,
        d.during,
        d.to_last.as_secs_f64(),
    );
    out.emit(
        &human,
        json!({
            "scenario": "webhooks",
            "tasks": n,
            "orgs": args.orgs,
            "workers": args.workers,
            "tasksPerSecondWithout": plain_rate.round(),
            "tasksPerSecondWith": hooked_rate.round(),
            "slowdownPercent": round(slowdown, 1),
            "deliveries": received,
            "deliveriesWhileTasksRan": d.during,
            "deliveriesPerSecond": delivery_rate.round(),
            "allDeliveredSeconds": round(d.to_last.as_secs_f64(), 3),
        }),
    );
    ensure!(received >= n, "{received} of {n} deliveries arrived");
    Ok(())
}
