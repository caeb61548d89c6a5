//! The cluster store: many `cloro serve` nodes share one PostgreSQL database.
//!
//! Everything the embedded store keeps in memory lives in the database here, so every rule holds
//! across the whole cluster, not per node:
//!
//! * **Nodes and leases.** Each node has a row in `nodes` and heartbeats it
//!   (`alive_until_ms = now + lease`). Any node's reaper returns the PROCESSING tasks of nodes
//!   whose lease ran out to QUEUED and gives their slots back; the next claim increments
//!   `attempts`. A finish only applies while the task is still PROCESSING with the same attempt
//!   number, so a node that comes back after its tasks were taken over changes nothing and
//!   charges nothing. A node that stops cleanly leaves at once ([`cluster`]).
//! * **Fencing.** A node starts no claim unless its lease is provably current by its own
//!   monotonic clock, and every claim and finish locks the node's row and checks it in SQL, so a
//!   reap and a claim or finish of the same node never interleave. A node that finds itself
//!   reaped forgets what it ran, lets its late outcomes go and joins again ([`lease`]). A live
//!   node requeues the PROCESSING tasks the database gives it but it does not run (a claim whose
//!   reply was lost) at its next heartbeat ([`reconcile`]).
//! * **Counters.** `orgs.q1..q10` (QUEUED per priority, waiting retries included) are updated
//!   in the same transaction as every task state change; running tasks, reservations and
//!   not-yet-folded charges are in `org_nodes` rows per (organization, node, side): a node's
//!   claims write side 0 and each of its finish groups in flight its own side (1, -1, -2;
//!   sync calls are side 2), so they never wait for each other, and nodes never write each
//!   other's rows. The status endpoint reads a few rows; the queue limit is one
//!   conditional `UPDATE`; nothing counts task rows ([`counters`]).
//! * **Claim.** One transaction (`synchronous_commit = off`: a claim lost in a crash only means
//!   the task runs again): lock organizations with queued work, least recently served first,
//!   `FOR UPDATE SKIP LOCKED` (so the cap check and the running count cannot interleave across
//!   nodes), share the free slots round-robin, walk each one's queued tasks per priority from
//!   its claim cursor, check credits, mark them PROCESSING with this node's id ([`claim`]).
//! * **Finish.** Outcomes are grouped by a finisher task into one transaction (group commit):
//!   task rows, the credit charge, the webhook outbox and the counters together ([`finisher`]).
//! * **Wake-ups.** A submission commits a `NOTIFY cloro_work`; every node `LISTEN`s on a
//!   dedicated connection and wakes its dispatcher, so a new task starts within milliseconds
//!   on an idle node ([`listener`]). Polling (`poll_ms`) is only the fallback, so an idle
//!   cluster costs the database one cheap query per node per poll interval.
//! * **Outage.** When the database cannot be reached, calls fail with `Error::Unavailable` (the
//!   API answers 503 with `Retry-After`), the dispatcher backs off, finishes are retried until
//!   they commit, and the listener reconnects ([`errors`]).
//! * **Bounded waits.** No call waits on the database without a bound: every connection has
//!   lock, statement and idle-in-transaction timeouts and TCP keepalives
//!   ([`schema::connect_config`]), each store call is bounded on this side too
//!   ([`Shared::bounded`], [`Conn`]), and the lease is renewed on its own connection and task,
//!   apart from the reaper ([`cluster::run_renewal`]). A row someone keeps locked fails its
//!   organization's calls after `lock_timeout` (`Unavailable`) and nobody else's.
//!
//! # Which clock
//!
//! Times that nodes must agree on are computed **in SQL by the database's clock**
//! ([`db_now!`]): node leases (`nodes.alive_until_ms`), the reaper's "dead" test, and the
//! webhook outbox's due times and delivery leases. Two nodes with skewed clocks must not see
//! each other as dead, nor take over each other's deliveries early.
//!
//! Times that describe one node's own work are read **in Rust from the store's
//! [`Clock`]** ([`PgStore::open_with_clock`]): a task's `created_ms`, `started_ms` and
//! `finished_ms`, the "is this retry due yet" test of a claim (against `run_after_ms`, which
//! the dispatcher computed from its clock), a new delivery's first due time, and the due times
//! on this node's wake-up heaps. The administrative writes ([`admin`]) run without a store and
//! read the system clock. Purge cutoffs and billing-cycle times come from the caller.
//!
//! # Layout
//!
//! [`schema`] (pool, migrations), [`admin`] (CLI writes), [`cluster`] (membership),
//! [`listener`] (LISTEN), [`submit`], [`claim`], [`finisher`], [`outbox`] (webhooks),
//! [`reads`], [`sync`] (sync calls' slots), [`upkeep`] (purge, cycles), [`counters`] (the per-organization counter
//! statements), [`errors`] (driver errors to store errors) and `store_impl` (the [`Store`]
//! implementation, delegating to the others). Every statement is a documented `const` beside
//! the function that runs it; the SQL fragments several statements share are the macros below.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::clock::Clock;
#[cfg(doc)]
use crate::store::Store;
use crate::store::{Error, Result};

/// The database's clock in epoch milliseconds (SQL), for every time the nodes must agree on.
macro_rules! db_now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// An organization's balance (SQL; `o` is its `orgs` row): committed credits minus the charges
/// the nodes have not folded in yet.
macro_rules! balance {
    () => {
        "o.credits - (SELECT COALESCE(sum(charged), 0)::bigint FROM org_nodes WHERE org = o.id)"
    };
}

/// An organization's queued tasks over all ten priorities (SQL).
macro_rules! q_sum {
    () => {
        "(q1 + q2 + q3 + q4 + q5 + q6 + q7 + q8 + q9 + q10)"
    };
}

/// `q<p> = q<p> + $<p+1>` for the ten priorities: per-priority queued deltas in `$2..$11`.
macro_rules! q_deltas_from_2 {
    () => {
        concat!(
            "q1 = q1 + $2, q2 = q2 + $3, q3 = q3 + $4, q4 = q4 + $5, q5 = q5 + $6, ",
            "q6 = q6 + $7, q7 = q7 + $8, q8 = q8 + $9, q9 = q9 + $10, q10 = q10 + $11"
        )
    };
}

pub(crate) mod admin;
mod claim;
mod cluster;
mod counters;
mod errors;
mod finisher;
mod lanes;
mod lease;
mod listener;
mod outbox;
mod overview;
mod reads;
mod reconcile;
mod schema;
pub mod scratch;
#[cfg(test)]
mod sql_tests;
mod store_impl;
mod submit;
mod sync;
pub mod tls;
mod upkeep;

pub(crate) use admin::PgDirectory;
pub(crate) use schema::{migrate, pool};

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
    /// Longest wait for a row or advisory lock (PostgreSQL `lock_timeout`); past it the call
    /// fails as [`Error::Unavailable`] (503 with `Retry-After`), so a row someone holds (a
    /// stuck node, an operator's open transaction) cannot hang submissions or the finisher.
    pub lock_timeout_ms: u64,
    /// Longest time one statement may run and one transaction may sit idle on the server
    /// (`statement_timeout`, `idle_in_transaction_session_timeout`); on this node, a store
    /// operation that has not finished this long after it got its connection (plus the pool's
    /// wait) is given up as [`Error::Unavailable`] and its connection is dropped, so a
    /// silently dead connection cannot hang the claim, the finisher or a request.
    pub db_timeout_ms: u64,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            poll_ms: 1_000,
            pool_size: 16,
            lock_timeout_ms: 3_000,
            db_timeout_ms: 15_000,
        }
    }
}

/// What the store's parts share: the pool, this node's identity, the wake-ups and the due
/// times this node scheduled.
pub(crate) struct Shared {
    pool: Pool,
    /// This node's id (its row in `nodes`, its `org_nodes` rows, `tasks.node`).
    node: Uuid,
    /// The task-id key ([`schema::id_key`]).
    ids: crate::domain::task::IdKey,
    cfg: PgConfig,
    /// Where task and due times are read (see "Which clock" in the module docs).
    clock: Clock,
    /// Wakes this node's dispatcher (a notification, a freed slot).
    notify: Notify,
    /// Changes after every committed state change ([`Store::changes`]).
    changed: watch::Sender<u64>,
    /// Retry times this node scheduled, so its dispatcher wakes when they are due.
    retries: Mutex<BinaryHeap<Reverse<i64>>>,
    /// Set by a clean shutdown: the node leaves the cluster (its row is deleted).
    leave: AtomicBool,
    /// Wakes this node's webhook sender (a delivery committed here, a retry scheduled here).
    hook_notify: Notify,
    /// Webhook retry times this node scheduled.
    hook_retries: Mutex<BinaryHeap<Reverse<i64>>>,
    /// Until when this node's lease is provably current ([`lease`]: fencing); renewed by
    /// [`cluster::run_renewal`].
    pub(crate) lease: lease::LeaseClock,
    /// The attempts this node runs, for [`reconcile`].
    running: reconcile::Running,
}

/// A pooled connection lent to one store operation. If it is given back later than the
/// operation's bound ([`schema::op_limit`] less the pool's wait) — the operation was
/// abandoned by [`PgStore::bounded`], or by a request's own timeout, while a statement may
/// still be unanswered — it leaves the pool instead: a silently dead connection is used by
/// one operation, not by every later one.
pub(crate) struct Conn {
    obj: Option<deadpool_postgres::Object>,
    since: std::time::Instant,
    limit: std::time::Duration,
}

impl Conn {
    fn new(obj: deadpool_postgres::Object, cfg: &PgConfig) -> Conn {
        Conn {
            obj: Some(obj),
            since: std::time::Instant::now(),
            limit: std::time::Duration::from_millis(cfg.db_timeout_ms.max(1)),
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        // Only `drop` takes it out.
        self.obj.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.obj.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.since.elapsed() >= self.limit
            && let Some(obj) = self.obj.take()
        {
            tracing::debug!("Dropping a database connection an operation outlived");
            drop(deadpool_postgres::Object::take(obj));
        }
    }
}

impl Shared {
    /// Signals a committed state change.
    fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A pooled connection for one operation ([`Conn`]).
    async fn conn(&self) -> Result<Conn> {
        let obj = self.pool.get().await.map_err(errors::pool_err)?;
        Ok(Conn::new(obj, &self.cfg))
    }

    /// `op`, given up as [`Error::Unavailable`] once it has run for [`schema::op_limit`]
    /// (its connection then leaves the pool, see [`Conn`]).
    async fn bounded<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let limit = schema::op_limit(&self.cfg);
        match tokio::time::timeout(limit, op).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(
                format!("the database did not answer within {limit:?}").into(),
            )),
        }
    }
}

/// The PostgreSQL store (see the module docs).
pub struct PgStore {
    shared: Arc<Shared>,
    finisher: mpsc::Sender<finisher::FinishReq>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl PgStore {
    /// Connects, migrates, registers this node and starts the listener, the lease renewal, the
    /// reaper and the finisher. Task times come from the system clock.
    pub async fn open(url: &str, cfg: PgConfig) -> Result<PgStore> {
        PgStore::open_with_clock(url, cfg, Clock::system()).await
    }

    /// [`PgStore::open`] with the clock task times are read from (see "Which clock" in the
    /// module docs).
    pub async fn open_with_clock(url: &str, cfg: PgConfig, clock: Clock) -> Result<PgStore> {
        let pool = schema::pool_with(url, &cfg)?;
        schema::migrate(&pool).await?;
        let client = pool.get().await.map_err(errors::pool_err)?;
        let ids = schema::id_key(&client).await?;
        let lease = lease::LeaseClock::new(cfg.lease_ms);
        let joined = std::time::Instant::now();
        let node = cluster::join(&client, cfg.lease_ms).await?;
        drop(client);
        let shared = Arc::new(Shared {
            pool,
            node,
            ids,
            cfg: cfg.clone(),
            clock,
            notify: Notify::new(),
            changed: watch::Sender::new(0),
            retries: Mutex::new(BinaryHeap::new()),
            leave: AtomicBool::new(false),
            hook_notify: Notify::new(),
            hook_retries: Mutex::new(BinaryHeap::new()),
            lease,
            running: reconcile::Running::default(),
        });
        shared.lease.renewed(joined);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (finisher, rx) = mpsc::channel(4096);
        tracker.spawn(finisher::run_finisher(shared.clone(), rx, cancel.clone()));
        let connect = schema::connect_config(url, &cfg)?;
        tracker.spawn(listener::run_listener(
            shared.clone(),
            connect.clone(),
            cancel.clone(),
        ));
        tracker.spawn(cluster::run_renewal(
            shared.clone(),
            connect,
            cancel.clone(),
        ));
        tracker.spawn(cluster::run_reaper(shared.clone(), cancel.clone()));
        tracker.spawn(lease::run_fence(shared.clone(), cancel.clone()));
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

    /// A pooled connection ([`Conn`]), unless the store is shut down.
    async fn client(&self) -> Result<Conn> {
        self.live_pool()?;
        self.shared.conn().await
    }

    /// [`Shared::bounded`].
    async fn bounded<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.shared.bounded(op).await
    }

    /// The pool, unless the store was closed.
    fn live_pool(&self) -> Result<&Pool> {
        if self.cancel.is_cancelled() {
            return Err(Error::Unavailable("store is shut down".into()));
        }
        Ok(&self.shared.pool)
    }

    /// Stops this node's background work as if its process had died: it does not leave the
    /// cluster, so its running tasks come back only when its lease runs out (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn abandon(&self) {
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Returns PROCESSING tasks of nodes whose lease ran out to QUEUED; returns how many
    /// (tests; in service the reaper task reaps).
    #[cfg(any(test, feature = "testing"))]
    pub async fn reap(&self) -> Result<u64> {
        cluster::reap(&self.shared).await
    }

    /// Ends this node's lease now, by the database's clock, as if it had not renewed it for a
    /// whole lease (tests: the other nodes may reap it; its own clock still trusts it).
    #[cfg(any(test, feature = "testing"))]
    pub async fn expire_lease(&self) -> Result<()> {
        cluster::expire(&self.shared).await
    }

    /// Requeues the PROCESSING tasks the database gives this node but it does not run; returns
    /// how many (tests; in service every heartbeat reconciles).
    #[cfg(any(test, feature = "testing"))]
    pub async fn reconcile(&self) -> Result<u64> {
        reconcile::reconcile(&self.shared).await
    }

    /// Whether this node's lease is provably current by its own clock (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn lease_is_current(&self) -> bool {
        self.shared.lease.is_current()
    }
}

/// The earliest of this node's own due times still ahead (past ones are dropped) and the next
/// poll, in epoch milliseconds.
fn next_due(clock: &Clock, heap: &Mutex<BinaryHeap<Reverse<i64>>>, poll_ms: u64) -> i64 {
    let now = clock.now_ms();
    let mut heap = heap.lock().unwrap_or_else(|e| e.into_inner());
    while heap.peek().is_some_and(|Reverse(t)| *t < now) {
        heap.pop();
    }
    let poll = now + poll_ms as i64;
    heap.peek().map_or(poll, |Reverse(t)| (*t).min(poll))
}
