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
use super::errors::{pg_err, pool_err};
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
/// attempt, so a late finish from the dead node matches nothing.
const REQUEUE_DEAD_TASKS: &str = "WITH back AS (
                UPDATE tasks SET status = 0, node = NULL
                 WHERE status = 1 AND node = ANY($1)
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
/// must run out so another node takes the task over).
const STILL_RUNNING: &str = "SELECT 1 FROM tasks WHERE status = 1 AND node = $1 LIMIT 1";

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
    let client = shared.pool.get().await.map_err(pool_err)?;
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
    let client = shared.pool.get().await.map_err(pool_err)?;
    client
        .execute(EXPIRE, &[&shared.node])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// Returns PROCESSING tasks of nodes whose lease ran out to QUEUED, gives their slots back and
/// removes the nodes; returns how many tasks came back.
pub(crate) async fn reap(shared: &Shared) -> Result<u64> {
    let mut client = shared.pool.get().await.map_err(pool_err)?;
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
    tx.execute(DELETE_NODES, &[&nodes]).await.map_err(pg_err)?;
    Ok(())
}

/// Renews this node's lease, reaps dead nodes and reconciles this node's running tasks
/// ([`reconcile`](super::reconcile)), every `heartbeat_ms`; joins again at once when a renewal,
/// a claim or a finish found this node reaped.
pub(crate) async fn run_heartbeat(shared: Arc<Shared>, cancel: CancellationToken) {
    let every = Duration::from_millis(shared.cfg.heartbeat_ms.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shared.lease.reaped.notified() => {}
            _ = cancel.cancelled() => break,
        }
        let sent = Instant::now();
        let renewed = async {
            let client = shared.pool.get().await.map_err(pool_err)?;
            client
                .execute(HEARTBEAT, &[&shared.node, &shared.cfg.lease_ms])
                .await
                .map_err(pg_err)
        }
        .await;
        match renewed {
            Ok(0) => {
                if let Err(error) = rejoin(&shared).await {
                    tracing::warn!(%error, "Cannot join the cluster again");
                }
                continue;
            }
            Ok(_) => shared.lease.renewed(sent),
            Err(error) => {
                tracing::warn!(%error, "Cannot renew this node's lease");
                continue;
            }
        }
        if let Err(error) = reap(&shared).await {
            tracing::warn!(%error, "Cannot reap dead nodes");
        }
        if let Err(error) = super::reconcile::reconcile(&shared).await {
            tracing::warn!(%error, "Cannot reconcile this node's running tasks");
        }
    }
}

/// Leaves the cluster cleanly: once the node has stopped and its last outcomes are committed it
/// has no tasks of its own running, so its counter rows fold into the balances and its row goes
/// (other nodes need not wait for its lease to run out).
pub(crate) async fn leave(shared: &Shared) {
    let left = async {
        let mut client = shared.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let running = tx
            .query_opt(STILL_RUNNING, &[&shared.node])
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
