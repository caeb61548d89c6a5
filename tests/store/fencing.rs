//! Cluster fencing and reconciliation (issue 12, items 3 and 1), PostgreSQL only: a node
//! whose lease ran out claims and commits nothing until it joins again; the counters always
//! equal the PROCESSING rows, whatever the interleaving of claims, finishes and reaps; a claim
//! whose reply was lost is given back by its own live node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A node of its own: a real lease, and a heartbeat only when the test wants one.
fn node_cfg(lease_ms: i64, heartbeat_ms: u64) -> PgConfig {
    PgConfig {
        lease_ms,
        heartbeat_ms,
        poll_ms: 1_000,
        pool_size: 8,
        ..PgConfig::default()
    }
}

const NO_HEARTBEAT: u64 = 3_600_000;

async fn node(url: &str, cfg: PgConfig) -> Arc<PgStore> {
    Arc::new(PgStore::open(url, cfg).await.expect("node opens"))
}

/// A node with a lease of ten minutes and no heartbeat: its lease runs out only when the test
/// says so (`expire`).
async fn idle_node(url: &str) -> Arc<PgStore> {
    node(url, node_cfg(600_000, NO_HEARTBEAT)).await
}

/// A fresh PostgreSQL fixture with organizations of `caps`, its database's URL and a plain
/// connection to it; `None` (the skip announced) when no PostgreSQL is configured.
async fn cluster(caps: &[(u32, i64, i64)]) -> Option<(Fixture, String, tokio_postgres::Client)> {
    let Some(url) = cloro::testing::pg_admin_url() else {
        cloro::testing::announce_pg_skipped();
        return None;
    };
    let f = Fixture::new(&Backend::Postgres(url), caps).await;
    let url = pg_url(&f);
    let db = sql(&url).await;
    Some((f, url, db))
}

fn pg_url(f: &Fixture) -> String {
    match &f.db.database {
        Database::Postgres(url) => url.clone(),
        Database::Sqlite(_) => unreachable!("a PostgreSQL fixture"),
    }
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Node `node`'s lease ran out by the database's clock (it stopped renewing a lease ago).
async fn expire(db: &tokio_postgres::Client, node: uuid::Uuid) {
    db.execute(
        "UPDATE nodes SET alive_until_ms = 0 WHERE id = $1",
        &[&node],
    )
    .await
    .expect("expire");
}

/// The invariants: per organization, the running counts in `org_nodes` equal its PROCESSING
/// rows and stay within its cap, and every PROCESSING task belongs to a registered node (or
/// no reaper would ever give it back).
async fn assert_counters(db: &tokio_postgres::Client, when: &str) {
    let rows = db
        .query(
            "SELECT o.id, o.concurrency,
                    (SELECT COALESCE(sum(processing), 0)::bigint FROM org_nodes n WHERE n.org = o.id),
                    (SELECT count(*) FROM tasks t WHERE t.org = o.id AND t.status = 1),
                    (SELECT count(*) FROM tasks t WHERE t.org = o.id AND t.status = 1
                        AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = t.node))
               FROM orgs o ORDER BY o.id",
            &[],
        )
        .await
        .expect("counters");
    for r in rows {
        let (org, cap, counted, processing, orphaned): (i64, i32, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(
            counted, processing,
            "{when}: org {org} counts {counted} running but has {processing} PROCESSING rows"
        );
        assert!(
            processing <= i64::from(cap),
            "{when}: org {org} runs {processing} tasks over its cap {cap}"
        );
        assert_eq!(
            orphaned, 0,
            "{when}: org {org} has PROCESSING tasks of nodes that are not registered"
        );
    }
    // Per node and task type, the running counts the lanes read equal the PROCESSING rows.
    let lanes = db
        .query(
            "SELECT COALESCE(l.node, t.node), COALESCE(l.task_type, t.task_type),
                    COALESCE(l.n, 0), COALESCE(t.n, 0)
               FROM (SELECT node, task_type, sum(n)::bigint AS n FROM run_lanes
                      GROUP BY node, task_type) l
               FULL JOIN (SELECT node, task_type, count(*) AS n FROM tasks WHERE status = 1
                           GROUP BY node, task_type) t
                 ON l.node = t.node AND l.task_type = t.task_type",
            &[],
        )
        .await
        .expect("lane counters");
    for r in lanes {
        let (node, kind, counted, processing): (Option<uuid::Uuid>, i16, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(
            counted, processing,
            "{when}: node {node:?} counts {counted} running tasks of type {kind} but has {processing}"
        );
    }
}

/// Task `id`'s (status, attempts).
async fn row(db: &tokio_postgres::Client, id: uuid::Uuid) -> (i16, i32) {
    let r = db
        .query_one("SELECT status, attempts FROM tasks WHERE id = $1", &[&id])
        .await
        .expect("task");
    (r.get(0), r.get(1))
}

/// Polls `claim` on `store` until it hands out a task, for at most `within`.
async fn claim_one(store: &PgStore, within: Duration, what: &str) -> ClaimedTask {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut got) = store.claim(1).await
            && !got.is_empty()
        {
            return got.remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: nothing claimed in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Item 3: node A's lease runs out while it runs a task; B reaps it and runs the task. A
/// claims nothing more and its late outcome commits nothing; it joins again on its own and
/// then works normally. Every task completes once, charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_reaped_node_claims_and_commits_nothing_until_it_joins_again() {
    let Some((f, url, db)) = cluster(&[(2, 1_000, 100)]).await else {
        return;
    };
    let org = f.orgs[0];
    let ids = submit(
        &*f.store,
        org,
        vec![task(1, None), task(1, None), task(1, None)],
    )
    .await;
    let a = idle_node(&url).await;
    let b = idle_node(&url).await;
    let x = a.claim(1).await.expect("claim").remove(0);
    assert_eq!(x.id, ids[0]);
    // A stops renewing (a network partition): by the database's clock its lease ran out.
    expire(&db, a.node()).await;
    assert_eq!(b.reap().await.expect("reap"), 1);
    let x2 = b.claim(1).await.expect("claim").remove(0);
    assert_eq!((x2.id, x2.attempt), (ids[0], 2), "B runs A's task again");
    // A has not noticed yet: its next claim finds it reaped and takes nothing.
    let claimed = a.claim(1).await;
    assert!(
        claimed.as_ref().is_ok_and(|t| t.is_empty()) || claimed.is_err(),
        "a reaped node claimed {claimed:?}"
    );
    assert_eq!(row(&db, ids[1]).await.0, 0, "the next task is still QUEUED");
    // It gives up the attempt it was running (its dispatcher stops it).
    tokio::time::timeout(Duration::from_secs(10), a.abandoned(&x))
        .await
        .expect("a reaped node gives its running attempts up");
    // Its late outcome changes nothing: the task runs on B, nothing is charged.
    finish(&*a, &x, completed()).await;
    assert_eq!(row(&db, ids[0]).await, (1, 2));
    assert_eq!(f.store.org(org).await.expect("org").credits, 1_000);
    assert_counters(&db, "after A's late finish").await;
    // A joins again by itself and claims normally.
    let y = claim_one(&a, Duration::from_secs(10), "A after joining again").await;
    assert_eq!((y.id, y.attempt), (ids[1], 1));
    assert_counters(&db, "after A joined again").await;
    finish(&*b, &x2, completed()).await;
    finish(&*a, &y, completed()).await;
    let z = claim_one(&a, Duration::from_secs(10), "the last task").await;
    finish(&*a, &z, completed()).await;
    for id in &ids {
        assert_eq!(row(&db, *id).await.0, 2, "every task COMPLETED");
    }
    assert_eq!(f.store.org(org).await.expect("org").credits, 1_000 - 15);
    assert_counters(&db, "at the end").await;
    a.close();
    b.close();
}

/// Item 3: a node whose lease is no longer provably current by its own clock (it could not
/// renew it for nearly a lease) gives up the attempts it runs and starts no claim, before the
/// database says its lease ran out and another node may run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_node_that_cannot_prove_its_lease_stops_its_tasks_and_claims_nothing() {
    let Some((f, url, db)) = cluster(&[(2, 1_000, 100)]).await else {
        return;
    };
    let org = f.orgs[0];
    submit(&*f.store, org, vec![task(1, None), task(1, None)]).await;
    let a = node(&url, node_cfg(5_000, NO_HEARTBEAT)).await;
    let x = a.claim(1).await.expect("claim").remove(0);
    // No renewal: within the lease (minus its margin) the attempt is given up. A real lease
    // needs real time; the bound only turns a hang into a failure.
    tokio::time::timeout(Duration::from_secs(10), a.abandoned(&x))
        .await
        .expect("a node that has not renewed its lease gives its attempts up");
    let alive: bool = db
        .query_one(
            "SELECT alive_until_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint
               FROM nodes WHERE id = $1",
            &[&a.node()],
        )
        .await
        .expect("node")
        .get(0);
    assert!(alive, "given up before the database's lease ran out");
    assert!(
        a.claim(1).await.is_err(),
        "no claim without a current lease"
    );
    assert_eq!(f.store.status(org).await.expect("status").queued, 1);
    a.close();
}

/// The advisory-lock key a claim takes for lane `name` (as `claim::lane_key` computes it).
fn lane_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"cloro lane\0".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Item 3, the race itself: a reaper runs while a claim of the node it reaps is in the
/// middle of its transaction (held there by a lane lock another session holds). The reap
/// must not interleave with the claim: either the claim's tasks are reaped with the node, or
/// the node is reaped later; never PROCESSING tasks of a node that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_reap_never_interleaves_with_a_claim_of_the_node_it_reaps() {
    let Some((f, url, db)) = cluster(&[(2, 1_000, 100)]).await else {
        return;
    };
    let org = f.orgs[0];
    submit(&*f.store, org, vec![task(1, None), task(1, None)]).await;
    let a = idle_node(&url).await;
    let b = idle_node(&url).await;
    // CHATGPT (position 4 in `TaskType::ALL`) on a lane with a cap: a claim takes its lock.
    let mut lanes = cloro::store::Lanes::default();
    lanes.lane_of[4] = Some(0);
    lanes.lanes.push(cloro::store::Lane {
        name: "openai".into(),
        max_in_flight: Some(10),
        starts: None,
    });
    let blocker = sql(&url).await;
    blocker
        .execute("SELECT pg_advisory_lock($1)", &[&lane_key("openai")])
        .await
        .expect("lane lock");
    let claim = tokio::spawn({
        let a = a.clone();
        async move { a.claim_in(2, &lanes).await }
    });
    // Wait until A's claim waits for the lane lock, inside its transaction.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .expect("locks")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claim never reached the lane lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A's lease runs out meanwhile, and B reaps.
    expire(&db, a.node()).await;
    b.reap().await.expect("reap");
    blocker
        .execute("SELECT pg_advisory_unlock($1)", &[&lane_key("openai")])
        .await
        .expect("unlock");
    let claimed = claim.await.expect("claim task");
    assert_counters(&db, "after the claim that raced a reap").await;
    // Whatever the claim did, a reap now leaves nothing of A running.
    b.reap().await.expect("reap");
    assert_counters(&db, "after the next reap").await;
    let running: i64 = db
        .query_one(
            "SELECT count(*) FROM tasks WHERE status = 1 AND node = $1",
            &[&a.node()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        running, 0,
        "A's claim ({claimed:?}) left tasks running on a reaped node"
    );
    a.close();
    b.close();
}

/// Item 3: random interleavings of claims, finishes (completions, retries, requeues) and reaps
/// of expired nodes, run concurrently over three nodes and three organizations. After every
/// round the counters equal the PROCESSING rows and stay within the caps; at the end every
/// task completed and was charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_counters_match_processing_rows_whatever_claims_finishes_and_reaps_interleave() {
    const TASKS: usize = 30;
    let caps = [
        (1, 1_000_000, 1_000),
        (2, 1_000_000, 1_000),
        (3, 1_000_000, 1_000),
    ];
    let Some((f, url, db)) = cluster(&caps).await else {
        return;
    };
    for &org in &f.orgs {
        submit(&*f.store, org, (0..TASKS).map(|_| task(1, None)).collect()).await;
    }
    let nodes: Vec<Arc<PgStore>> = vec![
        idle_node(&url).await,
        idle_node(&url).await,
        idle_node(&url).await,
    ];
    let mut held: Vec<Vec<ClaimedTask>> = vec![Vec::new(); nodes.len()];
    let mut rng = StdRng::seed_from_u64(12);
    for round in 0..60 {
        let mut steps = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let n = n.clone();
            let choice = rng.random_range(0..10);
            let victim = rng.random_range(0..nodes.len());
            let mut mine = std::mem::take(&mut held[i]);
            let pick: Vec<bool> = mine.iter().map(|_| rng.random_bool(0.5)).collect();
            let outcome_kind = rng.random_range(0..4);
            let victim_id = nodes[victim].node();
            let db_url = url.clone();
            steps.push(tokio::spawn(async move {
                match choice {
                    // Claim a few.
                    0..=3 => {
                        if let Ok(got) = n.claim(1 + outcome_kind).await {
                            mine.extend(got);
                        }
                    }
                    // Finish about half of what it holds (some of it maybe taken over).
                    4..=7 => {
                        let mut keep = Vec::new();
                        for (t, go) in mine.into_iter().zip(pick) {
                            if !go {
                                keep.push(t);
                                continue;
                            }
                            let o = match outcome_kind {
                                0 => Outcome::Retry {
                                    run_after_ms: now_ms() - 1,
                                },
                                1 => Outcome::Requeue,
                                _ => completed(),
                            };
                            if n.finish(&[(&t, &o)]).await.is_err() {
                                keep.push(t);
                            }
                        }
                        mine = keep;
                    }
                    // A node's lease runs out and this one reaps it (racing the others' steps).
                    _ => {
                        expire(&sql(&db_url).await, victim_id).await;
                        n.reap().await.expect("reap");
                    }
                }
                mine
            }));
        }
        for (i, s) in steps.into_iter().enumerate() {
            held[i] = s.await.expect("step");
        }
        assert_counters(&db, &format!("round {round}")).await;
    }
    // Drain: every node reaps what expired, claims and completes, until nothing is left.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            n.reap().await.expect("reap");
            for t in std::mem::take(&mut held[i]) {
                finish(&**n, &t, completed()).await;
            }
            if let Ok(got) = n.claim(8).await {
                for t in got {
                    finish(&**n, &t, completed()).await;
                }
            }
        }
        assert_counters(&db, "draining").await;
        if f.store.totals().await.expect("totals") == (0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &org in &f.orgs {
        let o = f.store.org(org).await.expect("org");
        assert_eq!(
            o.credits,
            1_000_000 - 5 * TASKS as i64,
            "every task charged once"
        );
    }
    let done: i64 = db
        .query_one("SELECT count(*) FROM tasks WHERE status = 2", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(done, 3 * TASKS as i64);
    for n in &nodes {
        n.close();
    }
}

/// A TCP proxy in front of PostgreSQL that, once armed, lets the next claim's `COMMIT` through
/// to the server, waits for the server to answer it, and then drops the connection instead of
/// passing the answer on: the claim committed, but its node never hears so.
struct LoseClaimReply {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
}

/// A claim's step 5 (the statement that marks tasks PROCESSING), as the driver sends it.
const CLAIM_START: &[u8] = b"attempts = attempts + 1, started_ms";
/// A simple-query `COMMIT`, as `Transaction::commit` sends it.
const COMMIT: &[u8] = b"COMMIT\0";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl LoseClaimReply {
    async fn start(upstream: SocketAddr) -> LoseClaimReply {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let armed = Arc::new(AtomicBool::new(false));
        let armed2 = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(Self::pump(client, server, armed2.clone()));
            }
        });
        LoseClaimReply { addr, armed }
    }

    async fn pump(mut client: TcpStream, mut server: TcpStream, armed: Arc<AtomicBool>) {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        // This connection is in a claim's transaction (it sent step 5 since its last COMMIT).
        let mut in_claim = false;
        let mut cutting = false;
        loop {
            tokio::select! {
                n = cr.read(&mut up), if !cutting => {
                    let Ok(n @ 1..) = n else { return };
                    let chunk = &up[..n];
                    if contains(chunk, CLAIM_START) {
                        in_claim = true;
                    }
                    if contains(chunk, COMMIT) {
                        if in_claim && armed.swap(false, Ordering::SeqCst) {
                            cutting = true;
                        }
                        in_claim = false;
                    }
                    if sw.write_all(chunk).await.is_err() {
                        return;
                    }
                }
                n = sr.read(&mut down) => {
                    let Ok(n @ 1..) = n else { return };
                    if cutting {
                        // The server answered the COMMIT: it is durable. The answer is lost.
                        return;
                    }
                    if cw.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Item 1: a claim commits but its reply is lost with the connection. The node that owns
/// the tasks in the database is alive, so no reaper frees them; its own reconciliation gives
/// them back within a few heartbeats, and a concurrency-1 organization does not stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_claim_whose_reply_is_lost_is_given_back_by_its_live_node() {
    let Some((f, url, db)) = cluster(&[(1, 1_000, 100)]).await else {
        return;
    };
    let org = f.orgs[0];
    // The node reaches the database through the proxy.
    let (head, rest) = url.split_once('@').expect("a URL with a host");
    let (host, path) = rest.split_once('/').expect("a URL with a database");
    let upstream: SocketAddr = tokio::net::lookup_host(host)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let proxy = LoseClaimReply::start(upstream).await;
    // In plain text: the proxy reads the protocol to find the claim's COMMIT.
    let via_proxy = format!("{head}@{}/{path}?sslmode=disable", proxy.addr);
    let a = node(&via_proxy, node_cfg(600_000, 100)).await;
    let ids = submit(
        &*f.store,
        org,
        vec![task(1, None), task(1, None), task(1, None)],
    )
    .await;
    proxy.armed.store(true, Ordering::SeqCst);
    assert!(a.claim(1).await.is_err(), "the claim's reply was lost");
    assert!(!proxy.armed.load(Ordering::SeqCst), "the proxy cut a claim");
    assert_eq!(
        row(&db, ids[0]).await,
        (1, 1),
        "the database committed the claim"
    );
    // The organization's only slot is taken by a task nobody runs, until A gives it back.
    let mut seen: HashMap<uuid::Uuid, u32> = HashMap::new();
    for _ in 0..3 {
        let t = claim_one(
            &a,
            Duration::from_secs(10),
            "the concurrency-1 organization",
        )
        .await;
        *seen.entry(t.id).or_default() += 1;
        finish(&*a, &t, completed()).await;
    }
    assert_eq!(seen.len(), 3, "every task ran once: {seen:?}");
    for id in &ids {
        assert_eq!(
            row(&db, *id).await,
            (2, 1),
            "COMPLETED on its first attempt"
        );
    }
    assert_eq!(f.store.org(org).await.expect("org").credits, 1_000 - 15);
    assert_counters(&db, "at the end").await;
    a.close();
}
