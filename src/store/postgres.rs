//! The cluster store: many `cloro serve` nodes share one PostgreSQL database.
//!
//! Everything the embedded store keeps in memory lives in the database here, so every rule holds
//! across the whole cluster, not per node:
//!
//! * **Counters.** `orgs.q1..q10` (QUEUED per priority, waiting retries included) are updated
//!   in the same transaction as every task state change; running tasks, reservations and
//!   not-yet-folded charges are in `org_nodes` rows per (organization, node, side): a node's
//!   claims write side 0 and its finishes side 1, so they never wait for each other, and nodes
//!   never write each other's rows. The status endpoint reads a few rows; the queue limit is one
//!   conditional `UPDATE`; nothing counts task rows.
//! * **Claim.** One transaction (`synchronous_commit = off`: a claim lost in a crash only means
//!   the task runs again): lock up to `2n+16` organizations that have queued work, least
//!   recently served first, `FOR UPDATE SKIP LOCKED` (another node claiming for the same
//!   organization skips it, so the cap check and the increment of the running count can never
//!   interleave: an organization never has more PROCESSING tasks than its limit, cluster-wide);
//!   share the free worker slots among them round-robin; walk each one's queued tasks per
//!   priority in `seq` order from its claim cursor `orgs.c<p>` (so the dead index entries of
//!   tasks claimed earlier, which a long transaction elsewhere keeps from vacuum, are not walked
//!   again); check credits against the balance minus reservations; mark them PROCESSING with
//!   this node's id; update the counters, cursors and `served_at`.
//! * **Leases.** Each node heartbeats its row in `nodes` (`alive_until_ms = now + lease`, by the
//!   database's clock). Any node's reaper returns the PROCESSING tasks of nodes whose lease ran
//!   out to QUEUED and gives their slots back; the next claim increments `attempts`. A finish
//!   only applies while the task is still PROCESSING with the same attempt number, so a node that
//!   comes back after its tasks were taken over changes nothing and charges nothing.
//! * **Finish.** Outcomes are grouped by a finisher task into one transaction (group commit):
//!   task rows, the credit charge and the counters together.
//! * **Wake-ups.** A submission commits a `NOTIFY cloro_work`; every node `LISTEN`s on a
//!   dedicated connection and wakes its dispatcher, so a new task starts within milliseconds
//!   on an idle node. Polling (`poll_ms`) is only the fallback, so an idle cluster costs the
//!   database one cheap query per node per poll interval.
//! * **Outage.** When the database cannot be reached, calls fail with `Error::Unavailable` (the
//!   API answers 503 with `Retry-After`), the dispatcher backs off, finishes are retried until
//!   they commit, and the listener reconnects.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{
    ClaimedTask, CreatedOrg, Error, ItemError, KeyRecord, NewTask, Org, OrgKey, OrgSpec, Outcome,
    QueueStatus, Result, Store, SubmitError, TaskRecord, WebhookJob, WebhookResult,
};
use crate::domain::apikey::{ApiKey, constant_time_eq};
use crate::domain::task::{TaskStatus, seq_of, task_id};
use crate::domain::types::TaskType;
use crate::time_fmt::now_ms;

/// The schema's migrations in order; `schema_version` records how many have run. Add new
/// ones at the end, never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_counter_sides.sql"),
    include_str!("../../migrations/postgres/0003_rate_limit.sql"),
    include_str!("../../migrations/postgres/0004_webhooks.sql"),
];
/// Arbitrary constant naming the migration lock.
const MIGRATION_LOCK: i64 = 0x636c_6f72_6f01;
/// Most outcomes folded into one finish transaction.
const MAX_FINISH_GROUP: usize = 1024;
/// Finish transactions in flight at once per node (more only queue on this node's own counter rows).
const FINISHERS: usize = 1;
/// An organization's balance (`o` is its `orgs` row): committed credits minus the charges the
/// nodes have not folded in yet.
const BALANCE: &str =
    "o.credits - (SELECT COALESCE(sum(charged), 0)::bigint FROM org_nodes WHERE org = o.id)";
/// The database's clock in epoch milliseconds.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Cluster settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// How long a node's claims stay valid without a heartbeat.
    pub lease_ms: i64,
    /// How often a node renews its lease and reaps dead nodes' tasks.
    pub heartbeat_ms: u64,
    /// Fallback polling interval when no notification arrives.
    pub poll_ms: u64,
    /// Connections in this node's pool.
    pub pool_size: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            poll_ms: 1_000,
            pool_size: 16,
        }
    }
}

/// Server errors that say the database cannot serve right now rather than that the statement
/// is wrong: connection exceptions (08), insufficient resources (53, e.g. too many
/// connections), operator intervention (57: the backend was terminated, the server is shutting
/// down or starting), system errors (58), and transaction rollbacks (40: serialization failure,
/// deadlock), which a retry resolves.
fn transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
}

fn pg_err(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        return if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
            Error::Conflict(db.message().to_owned())
        } else if transient_sqlstate(db.code().code()) {
            Error::Unavailable(db.to_string())
        } else {
            Error::Other(db.to_string())
        };
    }
    // Anything without a server error is the connection: closed, refused, timed out.
    Error::Unavailable(e.to_string())
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(format!("no database connection: {e}"))
}

/// Builds a connection pool for `url` (nothing is connected yet).
pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Other(format!("invalid PostgreSQL URL: {e}")))?;
    // Every query of the store is a key lookup or an ordered index walk. A burst of inserts
    // leaves the planner's statistics behind, and it then prefers a bitmap scan plus a sort of
    // an organization's whole queue over walking `tasks_ready` in order: forbid that.
    let options = cfg
        .get_options()
        .map(|o| format!("{o} "))
        .unwrap_or_default();
    cfg.options(format!("{options}-c enable_bitmapscan=off"));
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(2)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()
        .map_err(|e| Error::Other(format!("cannot build the connection pool: {e}")))
}

/// Creates or upgrades the schema. Safe when several nodes start together: the migration runs
/// in one transaction under an advisory lock.
pub async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await
        .map_err(pg_err)?;
    let version: Option<i32> = tx
        .query_opt("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(pg_err)?
        .and_then(|r| r.get(0));
    let version = version.unwrap_or(0);
    if version as usize > MIGRATIONS.len() {
        return Err(Error::Other(format!(
            "the database's schema (version {version}) is newer than this cloro (version {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO schema_version(version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(pg_err)?;
    }
    if version == 0 {
        let mask = (rand::random::<u64>() >> 2).to_string();
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('id_mask', $1) ON CONFLICT (key) DO NOTHING",
            &[&mask],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

// ----------------------------------------------------------------------------------------------
// Administration (the CLI and the `default` organization).

pub async fn create_org(pool: &Pool, spec: &OrgSpec) -> Result<CreatedOrg> {
    let now = now_ms();
    let org = Org::from_spec(spec, now)?;
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_one(
            "INSERT INTO orgs(public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &org.public_id,
                &org.name,
                &org.plan,
                &(org.concurrency as i32),
                &org.credits,
                &org.per_cycle,
                &org.cycle_resets_ms,
                &org.queue_limit,
                &now,
            ],
        )
        .await
        .map_err(pg_err)?;
    let key: i64 = row.get(0);
    tx.execute(
        "UPDATE orgs SET rate_limit = $1 WHERE id = $2",
        &[&spec.rate_limit.map(i64::from), &key],
    )
    .await
    .map_err(pg_err)?;
    let (key_id, api_key) = insert_key(&*tx, key).await?;
    tx.commit().await.map_err(pg_err)?;
    Ok(CreatedOrg {
        org: Org { key, ..org },
        key_id,
        api_key,
    })
}

async fn insert_key(
    client: &impl tokio_postgres::GenericClient,
    org: OrgKey,
) -> Result<(String, ApiKey)> {
    let api_key = ApiKey::generate();
    let key_id = super::new_key_id();
    client
        .execute(
            "INSERT INTO api_keys(key_id, org, hash, created_ms) VALUES ($1, $2, $3, $4)",
            &[&key_id, &org, &api_key.digest().to_vec(), &now_ms()],
        )
        .await
        .map_err(pg_err)?;
    Ok((key_id, api_key))
}

pub async fn create_key(pool: &Pool, org_id: &str) -> Result<(String, ApiKey)> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_opt("SELECT id FROM orgs WHERE public_id = $1", &[&org_id])
        .await
        .map_err(pg_err)?
        .ok_or(Error::NotFound)?;
    insert_key(&**client, row.get(0)).await
}

pub async fn revoke_key(pool: &Pool, key_id: &str) -> Result<()> {
    let client = pool.get().await.map_err(pool_err)?;
    let n = client
        .execute(
            "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $2) WHERE key_id = $1",
            &[&key_id, &now_ms()],
        )
        .await
        .map_err(pg_err)?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

/// Sets (or, with `None`, removes) an organization's webhook signing secret.
pub async fn set_webhook_secret(pool: &Pool, org_id: &str, secret: Option<&str>) -> Result<()> {
    let client = pool.get().await.map_err(pool_err)?;
    let n = client
        .execute(
            "UPDATE orgs SET webhook_secret = $2 WHERE public_id = $1",
            &[&org_id, &secret],
        )
        .await
        .map_err(pg_err)?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

pub async fn count_orgs(pool: &Pool) -> Result<i64> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_one("SELECT count(*) FROM orgs", &[])
        .await
        .map_err(pg_err)?;
    Ok(row.get(0))
}

// ----------------------------------------------------------------------------------------------
// The store.

/// One outcome waiting for the finisher.
struct FinishReq {
    rows: Vec<FinishRow>,
    reply: oneshot::Sender<Result<()>>,
}

struct FinishRow {
    seq: i64,
    attempt: i32,
    cost: i64,
    kind: FinishKind,
}

enum FinishKind {
    Done {
        status: i16,
        response: String,
        charged: i64,
    },
    Retry {
        run_after_ms: i64,
    },
}

struct Shared {
    pool: Pool,
    node: Uuid,
    mask: u64,
    cfg: PgConfig,
    notify: Notify,
    changed: watch::Sender<u64>,
    /// Retry times this node scheduled, so its dispatcher wakes when they are due.
    retries: Mutex<BinaryHeap<Reverse<i64>>>,
    /// Set by a clean shutdown: the node leaves the cluster (its row is deleted).
    leave: std::sync::atomic::AtomicBool,
    /// Wakes this node's webhook sender (a delivery committed here, a retry scheduled here).
    hook_notify: Notify,
    /// Webhook retry times this node scheduled.
    hook_retries: Mutex<BinaryHeap<Reverse<i64>>>,
}

/// The PostgreSQL store (see the module docs).
pub struct PgStore {
    shared: Arc<Shared>,
    finisher: mpsc::Sender<FinishReq>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl PgStore {
    /// Connects, migrates, registers this node and starts the listener, the heartbeat/reaper and
    /// the finisher.
    pub async fn open(url: &str, cfg: PgConfig) -> Result<PgStore> {
        let pool = pool(url, cfg.pool_size)?;
        migrate(&pool).await?;
        let client = pool.get().await.map_err(pool_err)?;
        let mask: u64 = client
            .query_one("SELECT value FROM meta WHERE key = 'id_mask'", &[])
            .await
            .map_err(pg_err)?
            .get::<_, String>(0)
            .parse()
            .map_err(|_| Error::Other("corrupt id mask".into()))?;
        let node = Uuid::new_v4();
        client
            .execute(
                &format!("INSERT INTO nodes(id, started_ms, alive_until_ms) VALUES ($1, {DB_NOW}, {DB_NOW} + $2)"),
                &[&node, &cfg.lease_ms],
            )
            .await
            .map_err(pg_err)?;
        drop(client);
        let shared = Arc::new(Shared {
            pool,
            node,
            mask,
            cfg: cfg.clone(),
            notify: Notify::new(),
            changed: watch::Sender::new(0),
            retries: Mutex::new(BinaryHeap::new()),
            leave: std::sync::atomic::AtomicBool::new(false),
            hook_notify: Notify::new(),
            hook_retries: Mutex::new(BinaryHeap::new()),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (finisher, rx) = mpsc::channel(4096);
        tracker.spawn(run_finisher(shared.clone(), rx, cancel.clone()));
        tracker.spawn(run_listener(shared.clone(), url.to_owned(), cancel.clone()));
        tracker.spawn(run_heartbeat(shared.clone(), cancel.clone()));
        tracing::info!(node = %node, "Joined the cluster");
        Ok(PgStore {
            shared,
            finisher,
            cancel,
            tracker,
        })
    }

    /// This node's id.
    pub fn node(&self) -> Uuid {
        self.shared.node
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        if self.cancel.is_cancelled() {
            return Err(Error::Unavailable("store is shut down".into()));
        }
        self.shared.pool.get().await.map_err(pool_err)
    }

    fn bump(&self) {
        self.shared.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Stops this node's background work as if its process had died: it does not leave the
    /// cluster, so its running tasks come back only when its lease runs out (tests).
    pub fn abandon(&self) {
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Returns PROCESSING tasks of nodes whose lease ran out to QUEUED; returns how many.
    pub async fn reap(&self) -> Result<u64> {
        reap(&self.shared).await
    }
}

/// What a transaction changes in one organization's counters.
#[derive(Debug, Default)]
struct OrgDelta {
    /// Tasks that left PROCESSING.
    released: i32,
    /// Credits they had reserved.
    cost: i64,
    /// Credits charged.
    charged: i64,
    /// `(priority, change)` of the queued counts.
    queued: Vec<(u8, i64)>,
    /// `(priority, seq)` of the tasks that went back to QUEUED.
    requeued: Vec<(u8, i64)>,
}

/// The ten `q<priority>` columns, as SQL.
fn q_sum() -> &'static str {
    "(q1 + q2 + q3 + q4 + q5 + q6 + q7 + q8 + q9 + q10)"
}

/// `SET q1 = q1 + $<first>, …, q10 = q10 + $<first+9>` for per-priority deltas.
fn q_deltas(first: usize) -> String {
    (1..=10)
        .map(|p| format!("q{p} = q{p} + ${}", first + p - 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `UPDATE orgs` for tasks that went back to QUEUED: the queued counts change by
/// `$2..$11` and the claim cursors come down to `$12..$21` where lower.
fn requeue_sql() -> String {
    let lows = (1..=10)
        .map(|p| format!("c{p} = LEAST(c{p}, ${})", 11 + p))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE orgs SET {}, {lows} WHERE id = $1", q_deltas(2))
}

/// Per priority, the lowest seq among `(priority, seq)` pairs (`i64::MAX` where none).
fn lows<'a>(items: impl IntoIterator<Item = &'a (u8, i64)>) -> [i64; 10] {
    let mut low = [i64::MAX; 10];
    for &(p, seq) in items {
        let i = usize::from(p.clamp(1, 10) - 1);
        low[i] = low[i].min(seq);
    }
    low
}

/// Per-priority deltas from `(priority, sign)` pairs.
fn deltas<'a>(items: impl IntoIterator<Item = &'a (u8, i64)>) -> [i64; 10] {
    let mut d = [0i64; 10];
    for &(p, n) in items {
        d[usize::from(p.clamp(1, 10) - 1)] += n;
    }
    d
}

fn push_deltas<'a>(
    params: &mut Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>,
    d: &'a [i64; 10],
) {
    for v in d {
        params.push(v);
    }
}

async fn reap(shared: &Shared) -> Result<u64> {
    let mut client = shared.pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let dead: Vec<Uuid> = tx
        .query(
            &format!("SELECT id FROM nodes WHERE alive_until_ms < {DB_NOW} FOR UPDATE SKIP LOCKED"),
            &[],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if dead.is_empty() {
        tx.commit().await.map_err(pg_err)?;
        return Ok(0);
    }
    // Their running tasks go back to the queue...
    let rows = tx
        .query(
            "WITH back AS (
                UPDATE tasks SET status = 0, node = NULL
                 WHERE status = 1 AND node = ANY($1)
                RETURNING org, priority, seq)
             SELECT org, priority, count(*), min(seq) FROM back GROUP BY org, priority ORDER BY org",
            &[&dead],
        )
        .await
        .map_err(pg_err)?;
    // Per organization: (priority, tasks requeued) and (priority, lowest seq requeued).
    type Requeued = (Vec<(u8, i64)>, Vec<(u8, i64)>);
    let mut per_org: std::collections::BTreeMap<i64, Requeued> = Default::default();
    let mut total = 0u64;
    for r in &rows {
        let (org, prio, n, low): (i64, i16, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let e = per_org.entry(org).or_default();
        e.0.push((prio as u8, n));
        e.1.push((prio as u8, low));
        total += n as u64;
    }
    let requeue = tx.prepare_cached(&requeue_sql()).await.map_err(pg_err)?;
    for (org, (by_prio, requeued)) in &per_org {
        let d = deltas(by_prio.iter());
        let low = lows(requeued.iter());
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![org];
        push_deltas(&mut params, &d);
        push_deltas(&mut params, &low);
        tx.execute(&requeue, &params).await.map_err(pg_err)?;
    }
    // ...their slots and reservations vanish with their counter rows, whose charges are
    // folded into the balances, and the nodes leave.
    fold_and_forget(&tx, &dead).await?;
    if total > 0 {
        tx.execute("SELECT pg_notify('cloro_work', '')", &[])
            .await
            .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    if total > 0 {
        tracing::warn!(
            tasks = total,
            nodes = dead.len(),
            "Took over the running tasks of dead nodes"
        );
    }
    Ok(total)
}

/// Folds the charges of `nodes`' counter rows into the balances, deletes the rows and the
/// nodes. Only for nodes with no PROCESSING task left.
async fn fold_and_forget(tx: &deadpool_postgres::Transaction<'_>, nodes: &[Uuid]) -> Result<()> {
    tx.execute(
        "WITH gone AS (DELETE FROM org_nodes WHERE node = ANY($1) RETURNING org, charged),
              per_org AS (SELECT org, sum(charged)::bigint AS charged FROM gone GROUP BY org)
         UPDATE orgs o SET credits = o.credits - p.charged FROM per_org p WHERE o.id = p.org AND p.charged <> 0",
        &[&nodes],
    )
    .await
    .map_err(pg_err)?;
    tx.execute("DELETE FROM nodes WHERE id = ANY($1)", &[&nodes])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// Renews this node's lease and reaps dead nodes, every `heartbeat_ms`.
async fn run_heartbeat(shared: Arc<Shared>, cancel: CancellationToken) {
    let every = Duration::from_millis(shared.cfg.heartbeat_ms.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => break,
        }
        let renewed = async {
            let client = shared.pool.get().await.map_err(pool_err)?;
            client
                .execute(
                    &format!(
                        "INSERT INTO nodes(id, started_ms, alive_until_ms) VALUES ($1, {DB_NOW}, {DB_NOW} + $2)
                         ON CONFLICT (id) DO UPDATE SET alive_until_ms = EXCLUDED.alive_until_ms"
                    ),
                    &[&shared.node, &shared.cfg.lease_ms],
                )
                .await
                .map_err(pg_err)
        }
        .await;
        if let Err(error) = renewed {
            tracing::warn!(%error, "Cannot renew this node's lease");
            continue;
        }
        if let Err(error) = reap(&shared).await {
            tracing::warn!(%error, "Cannot reap dead nodes");
        }
    }
}

/// Leaves the cluster cleanly: once the node has stopped and its last outcomes are committed it
/// has no tasks of its own running, so its counter rows fold into the balances and its row goes
/// (other nodes need not wait for its lease to run out).
async fn leave_cluster(shared: &Shared) {
    let left = async {
        let mut client = shared.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let running = tx
            .query_opt(
                "SELECT 1 FROM tasks WHERE status = 1 AND node = $1 LIMIT 1",
                &[&shared.node],
            )
            .await
            .map_err(pg_err)?;
        if running.is_none() {
            fold_and_forget(&tx, &[shared.node]).await?;
        }
        tx.commit().await.map_err(pg_err)
    }
    .await;
    if let Err(error) = left {
        tracing::warn!(%error, "Cannot leave the cluster cleanly; the lease will expire");
    }
}

/// `LISTEN cloro_work` on a dedicated connection; reconnects with backoff.
async fn run_listener(shared: Arc<Shared>, url: String, cancel: CancellationToken) {
    let mut wait = Duration::from_millis(100);
    loop {
        let attempt = async {
            let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await?;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let pump = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(AsyncMessage::Notification(_)) => {
                            if tx.send(()).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            client.batch_execute("LISTEN cloro_work").await?;
            // Wake once after (re)connecting: notifications sent while disconnected are lost.
            shared.notify.notify_one();
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(()) => shared.notify.notify_one(),
                        None => break,
                    },
                    _ = cancel.cancelled() => break,
                }
            }
            pump.abort();
            Ok::<(), tokio_postgres::Error>(())
        };
        match attempt.await {
            Ok(()) if cancel.is_cancelled() => return,
            Ok(()) => tracing::warn!("The notification connection closed; reconnecting"),
            Err(error) => tracing::warn!(%error, "Cannot listen for notifications; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// The earliest of this node's own due times still ahead (past ones are dropped) and the next
/// poll, in epoch milliseconds.
fn next_due(heap: &Mutex<BinaryHeap<Reverse<i64>>>, poll_ms: u64) -> i64 {
    let now = now_ms();
    let mut heap = heap.lock().unwrap_or_else(|e| e.into_inner());
    while heap.peek().is_some_and(|Reverse(t)| *t < now) {
        heap.pop();
    }
    let poll = now + poll_ms as i64;
    heap.peek().map_or(poll, |Reverse(t)| (*t).min(poll))
}

/// Groups finishes into one transaction each (group commit).
/// Once `cancel` fires (the store is closing, so the dispatcher has stopped) it takes no new
/// outcomes, commits the ones already sent, and ends.
async fn run_finisher(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<FinishReq>,
    cancel: CancellationToken,
) {
    // A few groups in flight at once: commits overlap instead of queueing behind each other.
    let inflight = Arc::new(tokio::sync::Semaphore::new(FINISHERS));
    let groups = TaskTracker::new();
    let mut closing = false;
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            _ = cancel.cancelled(), if !closing => {
                // Refuse new outcomes; `recv` still yields the buffered ones, then `None`.
                rx.close();
                closing = true;
                continue;
            }
        };
        let Some(first) = next else { break };
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        let mut group = vec![first];
        let mut n = group[0].rows.len();
        while n < MAX_FINISH_GROUP {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.rows.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        groups.spawn(async move {
            let rows: Vec<&FinishRow> = group.iter().flat_map(|g| g.rows.iter()).collect();
            let result = finish_rows(&shared, &rows).await;
            drop(permit);
            if result.is_ok() {
                shared.notify.notify_one();
                shared.changed.send_modify(|g| *g = g.wrapping_add(1));
            }
            for g in group {
                let _ = g.reply.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Error::Unavailable(e.to_string())),
                });
            }
        });
    }
    groups.close();
    groups.wait().await;
}

async fn finish_rows(shared: &Shared, rows: &[&FinishRow]) -> Result<()> {
    let now = now_ms();
    let mut client = shared.pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let (mut d_seq, mut d_att, mut d_status, mut d_resp, mut d_charged) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut r_seq, mut r_att, mut r_after) = (Vec::new(), Vec::new(), Vec::new());
    let mut cost_of: HashMap<i64, i64> = HashMap::new();
    for r in rows {
        cost_of.insert(r.seq, r.cost);
        match &r.kind {
            FinishKind::Done {
                status,
                response,
                charged,
            } => {
                d_seq.push(r.seq);
                d_att.push(r.attempt);
                d_status.push(*status);
                d_resp.push(response.as_str());
                d_charged.push(*charged);
            }
            FinishKind::Retry { run_after_ms } => {
                r_seq.push(r.seq);
                r_att.push(r.attempt);
                r_after.push(*run_after_ms);
            }
        }
    }
    // org → (finished, released cost, charged, queued deltas)
    let mut per_org: std::collections::BTreeMap<i64, OrgDelta> = Default::default();
    // Deliveries of the tasks that reach a terminal status here (the outbox).
    let (mut h_seq, mut h_org, mut h_id, mut h_url) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if !d_seq.is_empty() {
        let done = tx
            .query(
                "UPDATE tasks AS t SET status = u.status, response = u.response, credits_charged = u.charged,
                        finished_ms = $6, node = NULL
                   FROM unnest($1::bigint[], $2::int[], $3::smallint[], $4::text[], $5::bigint[])
                        AS u(seq, attempt, status, response, charged)
                  WHERE t.seq = u.seq AND t.status = 1 AND t.attempts = u.attempt
                 RETURNING t.seq, t.org, u.charged, t.webhook_url, t.id",
                &[&d_seq, &d_att, &d_status, &d_resp, &d_charged, &now],
            )
            .await
            .map_err(pg_err)?;
        for r in &done {
            let (seq, org, charged): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            if let Some(url) = r.get::<_, Option<String>>(3) {
                h_seq.push(seq);
                h_org.push(org);
                h_id.push(r.get::<_, Uuid>(4));
                h_url.push(url);
            }
            let e = per_org.entry(org).or_default();
            e.released += 1;
            e.cost += cost_of.get(&seq).copied().unwrap_or(0);
            e.charged += charged;
        }
    }
    if !h_seq.is_empty() {
        // The outbox: deliveries commit with the terminal statuses.
        tx.execute(
            "INSERT INTO webhook_deliveries(seq, org, id, url, next_at, created_ms)
             SELECT u.seq, u.org, u.id, u.url, $5, $5
               FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::text[]) AS u(seq, org, id, url)
             ON CONFLICT (seq) DO NOTHING",
            &[&h_seq, &h_org, &h_id, &h_url, &now],
        )
        .await
        .map_err(pg_err)?;
    }
    if !r_seq.is_empty() {
        let back = tx
            .query(
                "UPDATE tasks AS t SET status = 0, run_after_ms = u.run_after, node = NULL
                   FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS u(seq, attempt, run_after)
                  WHERE t.seq = u.seq AND t.status = 1 AND t.attempts = u.attempt
                 RETURNING t.seq, t.org, t.priority, u.run_after",
                &[&r_seq, &r_att, &r_after],
            )
            .await
            .map_err(pg_err)?;
        let mut due = Vec::new();
        for r in &back {
            let (seq, org, prio, after): (i64, i64, i16, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let e = per_org.entry(org).or_default();
            e.released += 1;
            e.cost += cost_of.get(&seq).copied().unwrap_or(0);
            e.queued.push((prio as u8, 1));
            e.requeued.push((prio as u8, seq));
            due.push(after);
        }
        let mut heap = shared.retries.lock().unwrap_or_else(|e| e.into_inner());
        heap.extend(due.into_iter().map(Reverse));
    }
    // This node's own finish-side counter rows: no claim and no other node's finish waits on them.
    let mine = tx
        .prepare_cached(
            "INSERT INTO org_nodes(org, node, side, processing, reserved, charged) VALUES ($1, $2, 1, -($3::int), -($4::bigint), $5)
             ON CONFLICT (org, node, side) DO UPDATE SET
                processing = org_nodes.processing + EXCLUDED.processing,
                reserved = org_nodes.reserved + EXCLUDED.reserved,
                charged = org_nodes.charged + EXCLUDED.charged",
        )
        .await
        .map_err(pg_err)?;
    let requeue = tx.prepare_cached(&requeue_sql()).await.map_err(pg_err)?;
    // Lock order, in every transaction: `orgs` rows before `org_nodes` rows, each by
    // organization id (BTreeMap order). No deadlocks.
    for (org, delta) in per_org.iter().filter(|(_, d)| !d.queued.is_empty()) {
        let d = deltas(delta.queued.iter());
        let low = lows(delta.requeued.iter());
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![org];
        push_deltas(&mut params, &d);
        push_deltas(&mut params, &low);
        tx.execute(&requeue, &params).await.map_err(pg_err)?;
    }
    for (org, delta) in &per_org {
        tx.execute(
            &mine,
            &[
                org,
                &shared.node,
                &delta.released,
                &delta.cost,
                &delta.charged,
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    if !h_seq.is_empty() {
        shared.hook_notify.notify_one();
    }
    Ok(())
}

fn decode_task(r: &tokio_postgres::Row) -> (Uuid, OrgKey, TaskRecord) {
    let id: Uuid = r.get(0);
    let response: Option<String> = r.get(11);
    (
        id,
        r.get(1),
        TaskRecord {
            id,
            task_type: TaskType::from_code(i64::from(r.get::<_, i16>(2)))
                .unwrap_or(TaskType::Chatgpt),
            status: TaskStatus::from_code(i64::from(r.get::<_, i16>(3))),
            priority: r.get::<_, i16>(4) as u8,
            created_ms: r.get(5),
            started_ms: r.get(6),
            finished_ms: r.get(7),
            attempts: r.get::<_, i32>(8) as u32,
            idempotency_key: r.get(9),
            webhook_url: r.get(10),
            credits_to_charge: r.get(12),
            credits_charged: r.get(13),
            response: response.and_then(|s| serde_json::from_str(&s).ok()),
            webhook_delivered_ms: r.get(14),
        },
    )
}

#[async_trait]
impl Store for PgStore {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT k.key_id, k.org, k.hash, k.revoked_ms, o.rate_limit
                 FROM api_keys k LEFT JOIN orgs o ON o.id = k.org WHERE k.hash = $1",
                &[&&digest[..]],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| KeyRecord {
            key_id: r.get(0),
            org: r.get(1),
            digest: r.get(2),
            revoked: r.get::<_, Option<i64>>(3).is_some(),
            rate_limit: r
                .get::<_, Option<i64>>(4)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        }))
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        let client = self.client().await?;
        let r = client
            .query_opt(
                &format!(
                    "SELECT id, public_id, name, plan, concurrency, {BALANCE}, per_cycle, cycle_resets_ms, queue_limit
                     FROM orgs o WHERE id = $1"
                ),
                &[&key],
            )
            .await
            .map_err(pg_err)?
            .ok_or(Error::NotFound)?;
        Ok(Org {
            key: r.get(0),
            public_id: r.get(1),
            name: r.get(2),
            plan: r.get(3),
            concurrency: r.get::<_, i32>(4) as u32,
            credits: r.get(5),
            per_cycle: r.get(6),
            cycle_resets_ms: r.get(7),
            queue_limit: r.get(8),
        })
    }

    async fn submit(
        &self,
        org: OrgKey,
        tasks: Vec<NewTask>,
    ) -> Result<std::result::Result<Vec<std::result::Result<TaskRecord, ItemError>>, SubmitError>>
    {
        let n = tasks.len();
        let mut out: Vec<Option<std::result::Result<TaskRecord, ItemError>>> = vec![None; n];
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let balance: i64 = tx
            .query_opt(
                &format!("SELECT {BALANCE} FROM orgs o WHERE id = $1"),
                &[&org],
            )
            .await
            .map_err(pg_err)?
            .ok_or(Error::NotFound)?
            .get(0);
        let accepted = super::screen_submission(tasks, balance, &mut out);
        if !accepted.is_empty() {
            // Room under the queue limit, atomically for the whole cluster.
            let d = deltas(
                accepted
                    .iter()
                    .map(|(_, t)| (t.priority, 1i64))
                    .collect::<Vec<_>>()
                    .iter(),
            );
            let sql = format!(
                "UPDATE orgs SET {} WHERE id = $1 AND {} + $2 <= queue_limit RETURNING id",
                q_deltas(3),
                q_sum()
            );
            let count = accepted.len() as i64;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&org, &count];
            push_deltas(&mut params, &d);
            if tx.query_opt(&sql, &params).await.map_err(pg_err)?.is_none() {
                let limit: i64 = tx
                    .query_one("SELECT queue_limit FROM orgs WHERE id = $1", &[&org])
                    .await
                    .map_err(pg_err)?
                    .get(0);
                return Ok(Err(SubmitError::QueueLimit(limit)));
            }
            let seqs: Vec<i64> = tx
                .query(
                    "SELECT nextval('tasks_seq') FROM generate_series(1, $1::bigint)",
                    &[&count],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let now = now_ms();
            let mut cols: (
                Vec<i64>,
                Vec<Uuid>,
                Vec<i16>,
                Vec<i16>,
                Vec<i64>,
                Vec<Option<String>>,
                Vec<Option<String>>,
                Vec<String>,
            ) = Default::default();
            for ((_, t), seq) in accepted.iter().zip(&seqs) {
                cols.0.push(*seq);
                cols.1
                    .push(task_id(now, *seq, self.shared.mask, rand::random::<u16>()));
                cols.2.push(t.task_type.code() as i16);
                cols.3.push(i16::from(t.priority));
                cols.4.push(t.credits_to_charge);
                cols.5.push(t.idempotency_key.clone());
                cols.6.push(t.webhook_url.clone());
                cols.7.push(t.payload.to_string());
            }
            let inserted: HashSet<i64> = tx
                .query(
                    "INSERT INTO tasks(seq, id, org, task_type, priority, status, credits_to_charge, idem_key,
                                       webhook_url, payload, created_ms)
                     SELECT u.seq, u.id, $9, u.task_type, u.priority, 0, u.cost, u.idem, u.webhook, u.payload, $10
                       FROM unnest($1::bigint[], $2::uuid[], $3::smallint[], $4::smallint[], $5::bigint[],
                                   $6::text[], $7::text[], $8::text[])
                            AS u(seq, id, task_type, priority, cost, idem, webhook, payload)
                     ON CONFLICT (org, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
                     RETURNING seq",
                    &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6, &cols.7, &org, &now],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut lost = Vec::new();
            for (i, ((index, t), seq)) in accepted.into_iter().zip(&seqs).enumerate() {
                if inserted.contains(seq) {
                    out[index] = Some(Ok(TaskRecord {
                        id: cols.1[i],
                        task_type: t.task_type,
                        status: TaskStatus::Queued,
                        priority: t.priority,
                        created_ms: now,
                        started_ms: None,
                        finished_ms: None,
                        attempts: 0,
                        idempotency_key: t.idempotency_key,
                        webhook_url: t.webhook_url,
                        credits_to_charge: t.credits_to_charge,
                        credits_charged: None,
                        response: None,
                        webhook_delivered_ms: None,
                    }));
                } else {
                    lost.push((t.priority, -1i64));
                    out[index] = Some(Err(ItemError::DuplicateKey(
                        t.idempotency_key.unwrap_or_default(),
                    )));
                }
            }
            if !lost.is_empty() {
                let d = deltas(lost.iter());
                let sql = format!("UPDATE orgs SET {} WHERE id = $1", q_deltas(2));
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&org];
                push_deltas(&mut params, &d);
                tx.execute(&sql, &params).await.map_err(pg_err)?;
            }
            if !inserted.is_empty() {
                tx.execute("SELECT pg_notify('cloro_work', '')", &[])
                    .await
                    .map_err(pg_err)?;
            }
        }
        tx.commit().await.map_err(pg_err)?;
        self.bump();
        Ok(Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Err(ItemError::InsufficientCredits)))
            .collect()))
    }

    async fn get_task(&self, org: OrgKey, id: Uuid) -> Result<Option<TaskRecord>> {
        let seq = seq_of(&id, self.shared.mask);
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, org, task_type, status, priority, created_ms, started_ms, finished_ms, attempts,
                        idem_key, webhook_url, response, credits_to_charge, credits_charged,
                        (SELECT delivered_ms FROM webhook_deliveries d WHERE d.seq = tasks.seq)
                 FROM tasks WHERE seq = $1",
                &[&seq],
            )
            .await
            .map_err(pg_err)?;
        Ok(row
            .map(|r| decode_task(&r))
            .and_then(|(stored, owner, rec)| {
                (owner == org && constant_time_eq(stored.as_bytes(), id.as_bytes())).then_some(rec)
            }))
    }

    async fn status(&self, org: OrgKey) -> Result<QueueStatus> {
        let client = self.client().await?;
        let r = client
            .query_opt(
                "SELECT q1, q2, q3, q4, q5, q6, q7, q8, q9, q10,
                        (SELECT COALESCE(sum(processing), 0)::int FROM org_nodes WHERE org = o.id), concurrency
                 FROM orgs o WHERE id = $1",
                &[&org],
            )
            .await
            .map_err(pg_err)?
            .ok_or(Error::NotFound)?;
        let q: Vec<i64> = (0..10).map(|i| r.get::<_, i64>(i).max(0)).collect();
        let processing = r.get::<_, i32>(10).max(0) as u64;
        Ok(QueueStatus {
            queued: q.iter().sum::<i64>() as u64,
            processing,
            by_priority: (0..10)
                .rev()
                .filter(|&i| q[i] > 0)
                .map(|i| (i as u8 + 1, q[i] as u64))
                .collect(),
            concurrency_used: processing,
            concurrency_max: r.get::<_, i32>(11).max(0) as u64,
        })
    }

    async fn clear_queue(&self, org: OrgKey) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The organization's row lock orders this against claims and submissions.
        tx.execute("SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE", &[&org])
            .await
            .map_err(pg_err)?;
        let rows = tx
            .query(
                "DELETE FROM tasks WHERE org = $1 AND status = 0 RETURNING priority",
                &[&org],
            )
            .await
            .map_err(pg_err)?;
        let removed: Vec<(u8, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, i16>(0) as u8, -1))
            .collect();
        if !removed.is_empty() {
            let d = deltas(removed.iter());
            let sql = format!("UPDATE orgs SET {} WHERE id = $1", q_deltas(2));
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&org];
            push_deltas(&mut params, &d);
            tx.execute(&sql, &params).await.map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        self.bump();
        Ok(removed.len() as u64)
    }

    async fn claim(&self, max: usize) -> Result<Vec<ClaimedTask>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // A claim need not wait for its WAL flush: if the database loses it in a crash, the
        // tasks are QUEUED again and simply run again (as after a node's death). Every later
        // durable commit (a finish, a submission) flushes the WAL past it anyway.
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(pg_err)?;
        // Lock the organizations with queued work, least recently served first. Another node
        // claiming at the same time skips them, so the cap check below cannot interleave.
        let locked = tx
            .query(
                &format!(
                    "SELECT id, concurrency, credits, {}, {} FROM orgs
                      WHERE {} > 0
                      ORDER BY served_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                    (1..=10)
                        .map(|p| format!("q{p}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    (1..=10)
                        .map(|p| format!("c{p}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    q_sum()
                ),
                &[&(max as i64 * 2 + 16)],
            )
            .await
            .map_err(pg_err)?;
        if locked.is_empty() {
            tx.commit().await.map_err(pg_err)?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = locked.iter().map(|r| r.get(0)).collect();
        let used: HashMap<i64, (i64, i64)> = tx
            .query(
                "SELECT org, sum(processing)::bigint, (sum(reserved) + sum(charged))::bigint
                   FROM org_nodes WHERE org = ANY($1) GROUP BY org",
                &[&ids],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        // Per locked organization: its queued count and claim cursor per priority.
        let state: HashMap<i64, ([i64; 10], [i64; 10])> = locked
            .iter()
            .map(|r| {
                let mut q = [0i64; 10];
                let mut c = [0i64; 10];
                for p in 0..10 {
                    q[p] = r.get(3 + p);
                    c[p] = r.get(13 + p);
                }
                (r.get(0), (q, c))
            })
            .collect();
        // (org, free slots, budget, quota): organizations at their cap are not served.
        let mut quota: Vec<(i64, i64, i64, i64)> = locked
            .iter()
            .filter_map(|r| {
                let (org, limit, credits): (i64, i32, i64) = (r.get(0), r.get(1), r.get(2));
                let (running, spent) = used.get(&org).copied().unwrap_or((0, 0));
                let free = i64::from(limit) - running;
                (free > 0).then_some((org, free, credits - spent, 0))
            })
            .take(max)
            .collect();
        // Share the free worker slots among the organizations, one per turn.
        let mut left = max as i64;
        while left > 0 {
            let mut gave = false;
            for q in quota.iter_mut() {
                if left > 0 && q.3 < q.1 {
                    q.3 += 1;
                    left -= 1;
                    gave = true;
                }
            }
            if !gave {
                break;
            }
        }
        // The queued tasks of one priority from its cursor on, in FIFO order, a page at a time.
        let pick = tx
            .prepare_cached(
                "SELECT seq, credits_to_charge, run_after_ms FROM tasks
                  WHERE org = $1 AND priority = $2 AND status = 0 AND seq >= $3
                  ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED",
            )
            .await
            .map_err(pg_err)?;
        let (mut run, mut reject) = (Vec::new(), Vec::new());
        let mut per_org = Vec::new();
        for &(org, _, budget, want) in &quota {
            let Some((queued, mut cursor)) = state.get(&org).copied() else {
                continue;
            };
            let mut budget = budget;
            let (mut taken, mut started, mut reserved, mut by_prio) =
                (0i64, 0i32, 0i64, Vec::new());
            for p in (0..10).rev() {
                if taken >= want || queued[p] <= 0 {
                    continue;
                }
                let prio = p as i16 + 1;
                // The cursor may move past a task only once it is claimed (or rejected): not
                // past one waiting for its retry time, nor past one left for the next claim.
                let mut first_left: Option<i64> = None;
                let mut from = cursor[p];
                let mut last_seen = None;
                loop {
                    let page = (want - taken + 8).min(512);
                    let rows = tx
                        .query(&pick, &[&org, &prio, &from, &page])
                        .await
                        .map_err(pg_err)?;
                    for r in &rows {
                        let (seq, cost, after): (i64, i64, Option<i64>) =
                            (r.get(0), r.get(1), r.get(2));
                        last_seen = Some(seq);
                        if taken >= want || after.is_some_and(|a| a > now) {
                            first_left.get_or_insert(seq);
                            continue;
                        }
                        taken += 1;
                        by_prio.push((prio as u8, -1i64));
                        if cost <= budget {
                            budget -= cost;
                            started += 1;
                            reserved += cost;
                            run.push(seq);
                        } else {
                            reject.push(seq);
                        }
                    }
                    let full = rows.len() as i64 == page;
                    match last_seen {
                        Some(last) if full && taken < want => from = last + 1,
                        _ => break,
                    }
                }
                cursor[p] = match (first_left, last_seen) {
                    (Some(seq), _) => seq,
                    (None, Some(last)) => last + 1,
                    (None, None) => cursor[p],
                };
            }
            per_org.push((org, started, reserved, by_prio, cursor));
        }
        let claimed = if run.is_empty() {
            Vec::new()
        } else {
            tx.query(
                "UPDATE tasks SET status = 1, attempts = attempts + 1, started_ms = COALESCE(started_ms, $2),
                        node = $3, run_after_ms = NULL
                  WHERE seq = ANY($1)
                 RETURNING seq, id, org, task_type, payload, attempts, credits_to_charge",
                &[&run, &now, &self.shared.node],
            )
            .await
            .map_err(pg_err)?
        };
        if !reject.is_empty() {
            let insufficient = serde_json::json!({"error": {
                "code": "INSUFFICIENT_CREDITS",
                "message": "Insufficient credits"
            }})
            .to_string();
            // FAILED is terminal: the webhooks of these tasks go out like any other (outbox).
            tx.execute(
                "WITH failed AS (
                    UPDATE tasks SET status = 3, finished_ms = $2, credits_charged = 0, response = $3, run_after_ms = NULL
                     WHERE seq = ANY($1)
                    RETURNING seq, org, id, webhook_url)
                 INSERT INTO webhook_deliveries(seq, org, id, url, next_at, created_ms)
                 SELECT seq, org, id, webhook_url, $2, $2 FROM failed WHERE webhook_url IS NOT NULL
                 ON CONFLICT (seq) DO NOTHING",
                &[&reject, &now, &insufficient],
            )
            .await
            .map_err(pg_err)?;
        }
        let served = tx
            .prepare_cached(&format!(
                "UPDATE orgs SET served_at = nextval('serve_turn'), {}, {} WHERE id = $1",
                q_deltas(2),
                (1..=10)
                    .map(|p| format!("c{p} = ${}", 11 + p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await
            .map_err(pg_err)?;
        let mine = tx
            .prepare_cached(
                "INSERT INTO org_nodes(org, node, side, processing, reserved) VALUES ($1, $2, 0, $3, $4)
                 ON CONFLICT (org, node, side) DO UPDATE SET
                    processing = org_nodes.processing + EXCLUDED.processing,
                    reserved = org_nodes.reserved + EXCLUDED.reserved",
            )
            .await
            .map_err(pg_err)?;
        // Lock order: `orgs` rows (already held) before `org_nodes` rows by organization id.
        per_org.sort_by_key(|p| p.0);
        for (org, _, _, by_prio, cursor) in &per_org {
            let d = deltas(by_prio.iter());
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![org];
            push_deltas(&mut params, &d);
            push_deltas(&mut params, cursor);
            tx.execute(&served, &params).await.map_err(pg_err)?;
        }
        for (org, started, reserved, _, _) in per_org.iter().filter(|p| p.1 > 0) {
            tx.execute(&mine, &[org, &self.shared.node, started, reserved])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        self.bump();
        let mut tasks: Vec<ClaimedTask> = claimed
            .iter()
            .map(|r| {
                let payload: String = r.get(4);
                ClaimedTask {
                    seq: r.get(0),
                    id: r.get(1),
                    org: r.get(2),
                    task_type: TaskType::from_code(i64::from(r.get::<_, i16>(3)))
                        .unwrap_or(TaskType::Chatgpt),
                    payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                    attempt: r.get::<_, i32>(5).max(1) as u32,
                    credits_to_charge: r.get(6),
                }
            })
            .collect();
        // Hand them out in the order they were picked (fairness, then priority and FIFO).
        let order: HashMap<i64, usize> = run.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        tasks.sort_by_key(|t| order.get(&t.seq).copied().unwrap_or(usize::MAX));
        Ok(tasks)
    }

    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> Result<()> {
        let rows = outcomes
            .iter()
            .map(|(t, o)| FinishRow {
                seq: t.seq,
                attempt: t.attempt as i32,
                cost: t.credits_to_charge,
                kind: match o {
                    Outcome::Completed { result, credits } => FinishKind::Done {
                        status: 2,
                        response: result.to_string(),
                        charged: *credits,
                    },
                    Outcome::Failed { error } => FinishKind::Done {
                        status: 3,
                        response: error.to_string(),
                        charged: 0,
                    },
                    Outcome::Retry { run_after_ms } => FinishKind::Retry {
                        run_after_ms: *run_after_ms,
                    },
                },
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        self.finisher
            .send(FinishReq { rows, reply })
            .await
            .map_err(|_| Error::Unavailable("the finisher stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the finisher stopped".into()))?
    }

    async fn purge(&self, cutoff_ms: i64) -> Result<u64> {
        let client = self.client().await?;
        // A delivery's created_ms is its task's finish time: they go together.
        client
            .execute(
                "DELETE FROM webhook_deliveries WHERE created_ms < $1",
                &[&cutoff_ms],
            )
            .await
            .map_err(pg_err)?;
        let mut total = 0;
        loop {
            let n = client
                .execute(
                    "DELETE FROM tasks WHERE seq IN (
                        SELECT seq FROM tasks WHERE finished_ms IS NOT NULL AND finished_ms < $1 LIMIT 5000)",
                    &[&cutoff_ms],
                )
                .await
                .map_err(pg_err)?;
            total += n;
            if n < 5000 {
                return Ok(total);
            }
        }
    }

    async fn renew_cycles(&self, now_ms: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let renewed: Vec<i64> = tx
            .query(
                "UPDATE orgs SET credits = per_cycle,
                        cycle_resets_ms = cycle_resets_ms + (($1 - cycle_resets_ms) / $2 + 1) * $2
                  WHERE per_cycle IS NOT NULL AND cycle_resets_ms IS NOT NULL AND cycle_resets_ms <= $1
                 RETURNING id",
                &[&now_ms, &super::CYCLE_MS],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !renewed.is_empty() {
            // Charges of the ended cycle do not count against the new one.
            tx.execute(
                "UPDATE org_nodes SET charged = 0 WHERE org = ANY($1)",
                &[&renewed],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(renewed.len() as u64)
    }

    fn next_retry_ms(&self) -> Option<i64> {
        // Work of other nodes (their retries, a lost notification) is found by polling.
        Some(next_due(&self.shared.retries, self.shared.cfg.poll_ms))
    }

    fn work_notify(&self) -> &Notify {
        &self.shared.notify
    }

    async fn totals(&self) -> Result<(u64, u64)> {
        let client = self.client().await?;
        let r = client
            .query_one(
                &format!(
                    "SELECT (SELECT COALESCE(sum({}), 0)::bigint FROM orgs),
                            (SELECT COALESCE(sum(processing), 0)::bigint FROM org_nodes)",
                    q_sum()
                ),
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok((
            r.get::<_, i64>(0).max(0) as u64,
            r.get::<_, i64>(1).max(0) as u64,
        ))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    fn close(&self) {
        self.shared
            .leave
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
        self.tracker.close();
    }

    async fn closed(&self) {
        self.tracker.wait().await;
        if self.shared.leave.load(std::sync::atomic::Ordering::SeqCst) {
            leave_cluster(&self.shared).await;
        }
        // Idle connections go now, not when the last handle on the store is dropped.
        self.shared.pool.close();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn claim_webhooks(&self, max: usize, lease_ms: i64) -> Result<Vec<WebhookJob>> {
        let client = self.client().await?;
        // The claim counts the attempt, names its owner and moves next_at one lease ahead:
        // until then no node takes it again; if this node dies, it is due after the lease.
        let rows = client
            .query(
                &format!(
                    "UPDATE webhook_deliveries AS d
                        SET attempts = d.attempts + 1, owner = $1, next_at = {DB_NOW} + $3
                       FROM (SELECT seq FROM webhook_deliveries
                              WHERE state = 0 AND next_at <= {DB_NOW}
                              ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS c
                      WHERE d.seq = c.seq
                     RETURNING d.seq, d.org, d.id, d.url, d.attempts"
                ),
                &[&self.shared.node, &(max as i64), &lease_ms],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| WebhookJob {
                seq: r.get(0),
                org: r.get(1),
                task_id: r.get(2),
                url: r.get(3),
                attempt: r.get::<_, i32>(4).max(1) as u32,
            })
            .collect())
    }

    async fn record_webhook(&self, job: &WebhookJob, result: WebhookResult) -> Result<()> {
        let client = self.client().await?;
        let guard = "WHERE seq = $1 AND attempts = $2 AND owner = $3 AND state = 0";
        let attempt = job.attempt as i32;
        let node = self.shared.node;
        match result {
            WebhookResult::Delivered => client.execute(
                &format!("UPDATE webhook_deliveries SET state = 1, delivered_ms = {DB_NOW}, owner = NULL {guard}"),
                &[&job.seq, &attempt, &node],
            ).await,
            WebhookResult::Retry { delay_ms } => {
                let n = client.execute(
                    &format!("UPDATE webhook_deliveries SET next_at = {DB_NOW} + $4, owner = NULL {guard}"),
                    &[&job.seq, &attempt, &node, &delay_ms],
                ).await;
                let mut heap = self.shared.hook_retries.lock().unwrap_or_else(|e| e.into_inner());
                heap.push(Reverse(now_ms() + delay_ms));
                n
            }
            WebhookResult::Deferred { delay_ms } => client.execute(
                &format!("UPDATE webhook_deliveries SET attempts = attempts - 1, next_at = {DB_NOW} + $4, owner = NULL {guard}"),
                &[&job.seq, &attempt, &node, &delay_ms],
            ).await,
            WebhookResult::GaveUp => client.execute(
                &format!("UPDATE webhook_deliveries SET state = 2, owner = NULL {guard}"),
                &[&job.seq, &attempt, &node],
            ).await,
        }
        .map_err(pg_err)?;
        Ok(())
    }

    fn webhook_notify(&self) -> &Notify {
        &self.shared.hook_notify
    }

    fn next_webhook_ms(&self) -> Option<i64> {
        // Other nodes' deliveries and taken-over leases are found by polling.
        Some(next_due(&self.shared.hook_retries, self.shared.cfg.poll_ms))
    }

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT webhook_secret FROM orgs WHERE id = $1", &[&org])
            .await
            .map_err(pg_err)?;
        Ok(row.and_then(|r| r.get(0)))
    }

    async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(pg_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::transient_sqlstate;

    #[test]
    fn outage_sqlstates_are_transient_and_statement_errors_are_not() {
        // admin_shutdown (a terminated backend), cannot_connect_now, too_many_connections,
        // connection_failure, serialization_failure, deadlock_detected, io_error.
        for code in [
            "57P01", "57P03", "53300", "08006", "40001", "40P01", "58030",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        // unique_violation, syntax_error, undefined_table, check_violation, invalid_catalog_name.
        for code in ["23505", "42601", "42P01", "23514", "3D000", "", "5"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}
