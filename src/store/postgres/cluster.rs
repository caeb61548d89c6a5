//! Cluster membership: a node joins with a lease, renews it, leaves cleanly on shutdown, and
//! any node takes over the running tasks of a node whose lease ran out.
//!
//! Leases are computed by the database's clock ([`db_now!`]), never by a node's own: a node
//! whose clock is off by a minute must not look dead (or immortal) to the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Shared;
use super::counters::{REQUEUE, requeue};
use super::errors::pg_err;
use crate::store::Result;

/// Renews node `$1`'s lease to `$2` ms from now. No row: the node was reaped while it could
/// not renew; it must not simply register again with the same work (see [`rejoin`]).
pub(super) const HEARTBEAT: &str = concat!(
    "UPDATE nodes SET alive_until_ms = ",
    db_now!(),
    " + $2 WHERE id = $1"
);

/// Registers a new node `$1` with a lease of `$2` ms from now.
pub(super) const JOIN: &str = concat!(
    "INSERT INTO nodes(id, started_ms, alive_until_ms) VALUES ($1, ",
    db_now!(),
    ", ",
    db_now!(),
    " + $2)"
);

/// The nodes whose lease ran out. `SKIP LOCKED`: two reapers never take over the same node.
pub(super) const DEAD_NODES: &str = concat!(
    "SELECT id FROM nodes WHERE alive_until_ms < ",
    db_now!(),
    " FOR UPDATE SKIP LOCKED"
);

/// The dead nodes' (`$1`) running tasks go back to QUEUED; per organization and priority, how
/// many and the lowest seq (for the counters and cursors). Their next claim counts a new
/// attempt, so a late finish from the dead node matches nothing. No index finds tasks by node
/// (a claim writes no index entry, `0009_hot_claims.sql`): the walk covers the unfinished
/// tasks (`tasks_open`) of the organizations where the dead nodes' counter rows say they run
/// something; those counters change in the same transactions as the rows, so none is missed.
const REQUEUE_DEAD_TASKS: &str = "WITH back AS (
                UPDATE tasks SET status = 0, node = NULL
                 WHERE org IN (SELECT org FROM org_nodes WHERE node = ANY($1) AND side < 2
                                GROUP BY org HAVING sum(processing) > 0)
                   AND finished_ms IS NULL AND status = 1 AND node = ANY($1)
                RETURNING org, priority, seq)
             SELECT org, priority, count(*), min(seq) FROM back GROUP BY org, priority ORDER BY org";

/// Wakes every node's dispatcher (the `LISTEN cloro_work` connections) once this commits.
pub(super) const NOTIFY_WORK: &str = "SELECT pg_notify('cloro_work', '')";

/// Deletes the counter rows of nodes `$1` and folds their unfolded charges into the
/// organizations' balances; their running counts and reservations vanish with the rows.
const FOLD_COUNTERS: &str = "WITH gone AS (DELETE FROM org_nodes WHERE node = ANY($1) RETURNING org, charged),
              per_org AS (SELECT org, sum(charged)::bigint AS charged FROM gone GROUP BY org)
         UPDATE orgs o SET credits = o.credits - p.charged FROM per_org p WHERE o.id = p.org AND p.charged <> 0";

/// The sync attempts' lane places of nodes `$1` go (see [`sync`](super::sync)); their slots
/// are their side-2 counter rows, which [`FOLD_COUNTERS`] deletes.
const DELETE_SYNC_PLACES: &str = "DELETE FROM sync_lanes WHERE node = ANY($1)";

/// The running counts per task type of nodes `$1` go with their tasks (requeued by then).
const DELETE_RUN_LANES: &str = "DELETE FROM run_lanes WHERE node = ANY($1)";

/// Node `$1`'s lease ends now by the database's clock (tests).
#[cfg(any(test, feature = "testing"))]
const EXPIRE: &str = concat!(
    "UPDATE nodes SET alive_until_ms = ",
    db_now!(),
    " - 1000 WHERE id = $1"
);

/// Nodes `$1` leave the cluster.
const DELETE_NODES: &str = "DELETE FROM nodes WHERE id = ANY($1)";

/// Whether node `$1` still has a PROCESSING task (then it cannot leave cleanly: its lease
/// must run out so another node takes the task over), by its running counts per task type
/// (changed in the same transactions as the task rows).
const STILL_RUNNING: &str =
    "SELECT 1 FROM run_lanes WHERE node = $1 GROUP BY node HAVING sum(n) > 0";

/// A fresh node id, registered with a lease of `lease_ms`.
pub(crate) async fn join(client: &tokio_postgres::Client, lease_ms: i64) -> Result<Uuid> {
    let node = Uuid::new_v4();
    client
        .execute(JOIN, &[&node, &lease_ms])
        .await
        .map_err(pg_err)?;
    Ok(node)
}

/// This node was reaped (its row is gone, its tasks requeued, its counter rows folded): it
/// forgets the attempts it ran (their late outcomes match nothing) and joins again under the
/// same id with a fresh lease and no counter rows.
pub(crate) async fn rejoin(shared: &Shared) -> Result<()> {
    shared.lease.lost();
    shared.running.forget_all();
    let client = shared.conn().await?;
    let sent = Instant::now();
    client
        .execute(JOIN, &[&shared.node, &shared.cfg.lease_ms])
        .await
        .map_err(pg_err)?;
    shared.lease.renewed(sent);
    tracing::warn!(node = %shared.node, "This node was reaped (its lease ran out); joined the cluster again");
    Ok(())
}

/// Ends this node's lease by the database's clock (tests).
#[cfg(any(test, feature = "testing"))]
pub(crate) async fn expire(shared: &Shared) -> Result<()> {
    let client = shared.conn().await?;
    client
        .execute(EXPIRE, &[&shared.node])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// Returns PROCESSING tasks of nodes whose lease ran out to QUEUED, gives their slots back and
/// removes the nodes; returns how many tasks came back.
pub(crate) async fn reap(shared: &Shared) -> Result<u64> {
    let mut client = shared.conn().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let dead: Vec<Uuid> = tx
        .query(DEAD_NODES, &[])
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
        .query(REQUEUE_DEAD_TASKS, &[&dead])
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
    let stmt = tx.prepare_cached(REQUEUE).await.map_err(pg_err)?;
    for (org, (by_prio, requeued)) in &per_org {
        requeue(&tx, &stmt, org, by_prio, requeued).await?;
    }
    // ...their slots and reservations vanish with their counter rows, whose charges are
    // folded into the balances, and the nodes leave.
    fold_and_forget(&tx, &dead).await?;
    // Slots freed (tasks requeued, or only the dead nodes' sync calls): wake every dispatcher.
    tx.execute(NOTIFY_WORK, &[]).await.map_err(pg_err)?;
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

/// Folds the charges of `nodes`' counter rows into the balances, deletes the rows (sync
/// calls' slots and lane places included) and the nodes. Only for nodes with no PROCESSING task left.
async fn fold_and_forget(tx: &deadpool_postgres::Transaction<'_>, nodes: &[Uuid]) -> Result<()> {
    tx.execute(FOLD_COUNTERS, &[&nodes]).await.map_err(pg_err)?;
    tx.execute(DELETE_SYNC_PLACES, &[&nodes])
        .await
        .map_err(pg_err)?;
    tx.execute(DELETE_RUN_LANES, &[&nodes])
        .await
        .map_err(pg_err)?;
    tx.execute(DELETE_NODES, &[&nodes]).await.map_err(pg_err)?;
    Ok(())
}

/// Renews this node's lease every `heartbeat_ms` on a connection of its own (not the pool's,
/// so busy or stuck pooled connections cannot delay it; nor the reaper, which runs apart), and
/// records each success in [`Shared::lease`]. A renewal that fails or does not answer in time
/// ([`renewal_limit`]) drops the connection; the next one reconnects. A renewal that finds the
/// node's row gone (it was reaped) joins again ([`rejoin`]), at once when a claim or a finish
/// found it so.
pub(crate) async fn run_renewal(
    shared: Arc<Shared>,
    connect: (tokio_postgres::Config, super::tls::Tls),
    cancel: CancellationToken,
) {
    let every = Duration::from_millis(shared.cfg.heartbeat_ms.max(1));
    let limit = renewal_limit(&shared.cfg);
    let mut conn: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // A claim or a finish found this node reaped: join again now.
            _ = shared.lease.reaped.notified() => {}
            _ = cancel.cancelled() => break,
        }
        let sent = Instant::now();
        match tokio::time::timeout(limit, renew(&mut conn, &connect, &shared)).await {
            Ok(Ok(0)) => {
                // Reaped while it could not renew: not simply registered again (fencing).
                if let Err(error) = shared.bounded(rejoin(&shared)).await {
                    tracing::warn!(%error, "Cannot join the cluster again");
                }
            }
            Ok(Ok(_)) => shared.lease.renewed(sent),
            Ok(Err(error)) => {
                conn = None;
                tracing::warn!(%error, "Cannot renew this node's lease");
            }
            Err(_) => {
                conn = None;
                tracing::warn!(?limit, "This node's lease renewal did not answer in time");
            }
        }
    }
}

/// How long one lease renewal may take: the statement bound, and at most a third of the
/// lease, so a stuck connection is replaced while the lease still holds.
fn renewal_limit(cfg: &super::PgConfig) -> Duration {
    let third = Duration::from_millis(u64::try_from(cfg.lease_ms / 3).unwrap_or(0).max(100));
    Duration::from_millis(cfg.db_timeout_ms.max(1)).min(third)
}

/// One renewal ([`HEARTBEAT`]) on the renewal connection, connecting it first if needed;
/// returns whether this node's row was still there (0: it was reaped).
async fn renew(
    conn: &mut Option<tokio_postgres::Client>,
    connect: &(tokio_postgres::Config, super::tls::Tls),
    shared: &Shared,
) -> Result<u64> {
    let client = match conn {
        Some(c) if !c.is_closed() => c,
        _ => {
            let (client, connection) =
                connect.0.connect(connect.1.clone()).await.map_err(pg_err)?;
            // Ends when the client is dropped or the connection fails.
            tokio::spawn(connection);
            conn.insert(client)
        }
    };
    client
        .execute(HEARTBEAT, &[&shared.node, &shared.cfg.lease_ms])
        .await
        .map_err(pg_err)
}

/// Reaps dead nodes ([`reap`]) every `heartbeat_ms`, each pass bounded (a lock held on an
/// organization whose tasks it must requeue fails the pass after `lock_timeout`; the next
/// pass tries again), then reconciles this node's own running tasks
/// ([`reconcile`](super::reconcile)). Apart from the renewal, so a slow reap never delays this
/// node's lease.
pub(crate) async fn run_reaper(shared: Arc<Shared>, cancel: CancellationToken) {
    let every = Duration::from_millis(shared.cfg.heartbeat_ms.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => break,
        }
        if let Err(error) = shared.bounded(reap(&shared)).await {
            tracing::warn!(%error, "Cannot reap dead nodes");
        }
        if let Err(error) = shared.bounded(super::reconcile::reconcile(&shared)).await {
            tracing::warn!(%error, "Cannot reconcile this node's running tasks");
        }
    }
}

/// Leaves the cluster cleanly: once the node has stopped and its last outcomes are committed it
/// has no tasks of its own running, so its counter rows fold into the balances and its row goes
/// (other nodes need not wait for its lease to run out).
pub(crate) async fn leave(shared: &Shared) {
    let left = shared
        .bounded(async {
            let mut client = shared.conn().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let running = tx
                .query_opt(STILL_RUNNING, &[&shared.node])
                .await
                .map_err(pg_err)?;
            if running.is_none() {
                fold_and_forget(&tx, &[shared.node]).await?;
            }
            tx.commit().await.map_err(pg_err)
        })
        .await;
    if let Err(error) = left {
        tracing::warn!(%error, "Cannot leave the cluster cleanly; the lease will expire");
    }
}
