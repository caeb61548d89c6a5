//! Sync calls (`POST /v1/monitor/*`, issue 11): their concurrency slots, lane places and the
//! durable end of a call that got its answer.
//!
//! * **Slots.** A node's sync calls in flight are its side-2 row of `org_nodes` per
//!   organization (`processing` calls, `reserved` credits, `charged` not yet folded). Every
//!   claim sums `org_nodes` over all sides, so it counts them as running tasks with no change.
//!   [`enter`] locks the organization's row `FOR UPDATE` (the lock order of every transaction:
//!   `orgs` before `org_nodes`), then reads the sums in a fresh statement (READ COMMITTED: it
//!   sees every claim that held the lock before), checks credits and the cap, and takes the
//!   slot. Claims lock the same row (`SKIP LOCKED`), so a claim and a sync call never both see
//!   the last free slot, on any node. The wait for the lock is bounded (the connection's
//!   `lock_timeout`, `--db-lock-timeout-ms`);
//!   past it the call is refused as `Unavailable` (503) instead of hanging the request.
//! * **Lane places.** `sync_lanes` rows per (node, task type); a lane with `max_in_flight` is
//!   counted under the lane's advisory lock, the same one claims take, and claims count these
//!   rows beside PROCESSING tasks ([`RUNNING_BY_TYPE`]).
//! * **Death and leave.** Both kinds of rows belong to the node: when it leaves cleanly or is
//!   reaped, they are deleted with its other counter rows (the side-2 charges folded into the
//!   balances), so a dead node's slots and places come back with its lease.
//! * **Durability.** Taking or freeing a slot commits asynchronously, like a claim: a commit
//!   lost in a database crash only frees a slot early or keeps it until a later change. The
//!   end of a call that got its answer ([`leave`] with [`SyncDone`]) is a synchronous commit:
//!   its charge and kept row are on disk when it returns.
//!
//! A leave that arrives after its node was reaped (the node lost the database for longer than
//! its lease) finds no slot to free (the reaper freed it) and charges the balance directly. The
//! release is guarded (`processing > 0`), so a late leave never makes the count negative; but
//! if the node registered again and took new slots meanwhile, a late leave frees one of those
//! early (the count heals when they end).

use std::time::Duration;

use super::PgStore;
use super::claim::{LOCK_LANE, RUNNING_BY_TYPE, lane_key};
use super::cluster::NOTIFY_WORK;
use super::errors::pg_err;
use super::lease::{self, Held};
use crate::domain::types::TaskType;
use crate::store::lanes::{KINDS, lane_of_kind};
use crate::store::{Error, Lanes, OrgKey, Result, SyncAdmission, SyncDone, SyncRecord, SyncSlot};

/// An admission's commit need not wait for its WAL flush: one lost in a crash only frees a
/// slot (see the module docs). Its wait for the organization's row (claims hold it briefly)
/// is the connection's `lock_timeout` (`--db-lock-timeout-ms`).
const ENTER_SETTINGS: &str = "SET LOCAL synchronous_commit = off";

/// Freeing a slot or a lane place need not wait for its WAL flush either.
const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// Locks organization `$1`'s row; its cap and committed credits.
const LOCK_ORG: &str = "SELECT concurrency, credits FROM orgs WHERE id = $1 FOR UPDATE";

/// Organization `$1`'s slots in use (running tasks and sync calls, every node and side) and
/// the credits reserved or charged but not yet folded. A fresh statement after [`LOCK_ORG`].
const ORG_USAGE: &str = "SELECT COALESCE(sum(processing), 0)::bigint,
                            (COALESCE(sum(reserved), 0) + COALESCE(sum(charged), 0))::bigint
                       FROM org_nodes WHERE org = $1";

/// Takes a slot of organization `$1` on node `$2` reserving `$3` credits (side 2), and draws
/// the sequence number of the call's task id.
const TAKE_SLOT: &str =
    "INSERT INTO org_nodes(org, node, side, processing, reserved) VALUES ($1, $2, 2, 1, $3)
             ON CONFLICT (org, node, side) DO UPDATE SET
                processing = org_nodes.processing + 1,
                reserved = org_nodes.reserved + EXCLUDED.reserved
             RETURNING nextval('tasks_seq')";

/// Frees a slot of organization `$1` on node `$2` that reserved `$3` and charges `$4` (folded
/// into the balance with the node's other counters). No row: the node was reaped meanwhile.
const FREE_SLOT: &str =
    "UPDATE org_nodes SET processing = processing - 1, reserved = reserved - $3,
                            charged = charged + $4
                      WHERE org = $1 AND node = $2 AND side = 2 AND processing > 0
                      RETURNING 1";

/// Charges organization `$1` `$2` credits directly (its slot was already freed by a reaper).
const CHARGE_ORG: &str = "UPDATE orgs SET credits = credits - $2 WHERE id = $1";

/// A kept sync result: a COMPLETED (2) task of priority 1, no webhook or idempotency key,
/// created and started when the slot was taken (`$10`), finished at `$11`. Never QUEUED, so
/// the queued counters do not change.
const INSERT_COMPLETED: &str =
    "INSERT INTO tasks(seq, id, org, task_type, priority, status, attempts, credits_to_charge,
                       credits_charged, payload, response, created_ms, started_ms, finished_ms)
     VALUES ($1, $2, $3, $4, 1, 2, $5, $6, $7, $8, $9, $10, $10, $11)";

/// A sync attempt of task type `$2` takes a place on node `$1`.
const TAKE_PLACE: &str = "INSERT INTO sync_lanes(node, task_type, n) VALUES ($1, $2, 1)
             ON CONFLICT (node, task_type) DO UPDATE SET n = sync_lanes.n + 1";

/// A sync attempt of task type `$2` on node `$1` gives its place back.
const FREE_PLACE: &str =
    "UPDATE sync_lanes SET n = n - 1 WHERE node = $1 AND task_type = $2 AND n > 0";

/// [`TaskQueue::sync_enter`](crate::store::TaskQueue::sync_enter).
pub(crate) async fn enter(
    store: &PgStore,
    org: OrgKey,
    task_type: TaskType,
    cost: i64,
) -> Result<SyncAdmission> {
    let node = store.shared.node;
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.batch_execute(ENTER_SETTINGS).await.map_err(pg_err)?;
    // Fencing, as a claim: a node whose lease ran out takes no slot, and no reaper deletes
    // its counter rows while it takes one (see `lease`).
    if lease::hold(&tx, &store.shared.lease, node).await? != Held::Current {
        return Err(Error::Unavailable("this node's lease ran out".into()));
    }
    // A lock not granted in time is `Unavailable` (503), see `errors`.
    let locked = tx
        .query_opt(&tx.prepare_cached(LOCK_ORG).await.map_err(pg_err)?, &[&org])
        .await
        .map_err(pg_err)?;
    let Some(row) = locked else {
        return Err(Error::NotFound);
    };
    let (concurrency, credits): (i32, i64) = (row.get(0), row.get(1));
    let usage = tx
        .query_one(
            &tx.prepare_cached(ORG_USAGE).await.map_err(pg_err)?,
            &[&org],
        )
        .await
        .map_err(pg_err)?;
    let (used, spent): (i64, i64) = (usage.get(0), usage.get(1));
    let limit = u32::try_from(concurrency).unwrap_or(0);
    let used = u32::try_from(used.max(0)).unwrap_or(u32::MAX);
    if credits - spent < cost {
        tx.commit().await.map_err(pg_err)?;
        return Ok(SyncAdmission::InsufficientCredits);
    }
    if used >= limit {
        tx.commit().await.map_err(pg_err)?;
        return Ok(SyncAdmission::ConcurrencyLimit {
            limit,
            current: used.saturating_add(1),
        });
    }
    let seq: i64 = tx
        .query_one(
            &tx.prepare_cached(TAKE_SLOT).await.map_err(pg_err)?,
            &[&org, &node, &cost],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    tx.commit().await.map_err(pg_err)?;
    store.shared.bump();
    let started_ms = store.shared.clock.now_ms();
    Ok(SyncAdmission::Admitted(SyncSlot {
        id: store
            .shared
            .ids
            .task_id(org, started_ms, seq, rand::random::<u16>()),
        org,
        task_type,
        cost,
        limit,
        current: used + 1,
        started_ms,
    }))
}

/// [`TaskQueue::sync_lane_enter`](crate::store::TaskQueue::sync_lane_enter).
pub(crate) async fn lane_enter(
    store: &PgStore,
    lanes: &Lanes,
    task_type: TaskType,
) -> Result<bool> {
    let kind = usize::try_from(task_type.code()).unwrap_or(KINDS - 1);
    let code = task_type.code() as i16;
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.batch_execute(ASYNC_COMMIT).await.map_err(pg_err)?;
    if let Some(l) = lane_of_kind(lanes, kind)
        && let Some(max) = lanes.lanes[l].max_in_flight
    {
        // The lane's lock, as claims take it: the count below is exact until the commit.
        tx.execute(
            &tx.prepare_cached(LOCK_LANE).await.map_err(pg_err)?,
            &[&lane_key(&lanes.lanes[l].name)],
        )
        .await
        .map_err(pg_err)?;
        let types: Vec<i16> = (0..KINDS)
            .filter(|&k| lane_of_kind(lanes, k) == Some(l))
            .map(|k| k as i16)
            .collect();
        let in_flight: i64 = tx
            .query(
                &tx.prepare_cached(RUNNING_BY_TYPE).await.map_err(pg_err)?,
                &[&types],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get::<_, i64>(1))
            .sum();
        if in_flight >= i64::from(max) {
            tx.commit().await.map_err(pg_err)?;
            return Ok(false);
        }
    }
    tx.execute(
        &tx.prepare_cached(TAKE_PLACE).await.map_err(pg_err)?,
        &[&store.shared.node, &code],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(true)
}

/// [`TaskQueue::sync_lane_leave`](crate::store::TaskQueue::sync_lane_leave).
pub(crate) async fn lane_leave(store: &PgStore, task_type: TaskType) -> Result<()> {
    let code = task_type.code() as i16;
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.batch_execute(ASYNC_COMMIT).await.map_err(pg_err)?;
    tx.execute(
        &tx.prepare_cached(FREE_PLACE).await.map_err(pg_err)?,
        &[&store.shared.node, &code],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(&tx.prepare_cached(NOTIFY_WORK).await.map_err(pg_err)?, &[])
        .await
        .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(())
}

/// [`TaskQueue::sync_leave`](crate::store::TaskQueue::sync_leave). If the transaction fails,
/// the slot is freed (charging nothing) by a background retry until the database answers.
pub(crate) async fn leave(store: &PgStore, slot: &SyncSlot, done: Option<&SyncDone>) -> Result<()> {
    if let Some(SyncDone {
        keep: Some(rec), ..
    }) = done
        && rec.id != slot.id
    {
        // The slot is freed before the answer (a caller may count on it), in the background
        // only if the database cannot be reached now.
        match store.bounded(try_leave(store, slot, None)).await {
            Ok(()) => {
                store.shared.notify.notify_one();
                store.shared.bump();
            }
            Err(_) => release_later(store, slot),
        }
        return Err(Error::Conflict(format!(
            "a kept sync result must use its slot's id {}, not {}",
            slot.id, rec.id
        )));
    }
    match store.bounded(try_leave(store, slot, done)).await {
        Ok(()) => {
            store.shared.notify.notify_one();
            store.shared.bump();
            Ok(())
        }
        Err(e) => {
            release_later(store, slot);
            Err(e)
        }
    }
}

/// One attempt at [`leave`]: frees the slot, charges, keeps the record, wakes the cluster.
async fn try_leave(store: &PgStore, slot: &SyncSlot, done: Option<&SyncDone>) -> Result<()> {
    let node = store.shared.node;
    let charged = done.map_or(0, |d| d.credits);
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    if done.is_none() {
        tx.batch_execute(ASYNC_COMMIT).await.map_err(pg_err)?;
    }
    let freed = tx
        .query_opt(
            &tx.prepare_cached(FREE_SLOT).await.map_err(pg_err)?,
            &[&slot.org, &node, &slot.cost, &charged],
        )
        .await
        .map_err(pg_err)?;
    if freed.is_none() && charged != 0 {
        // The reaper freed the slot already (and folded this node's rows): charge directly.
        tx.execute(
            &tx.prepare_cached(CHARGE_ORG).await.map_err(pg_err)?,
            &[&slot.org, &charged],
        )
        .await
        .map_err(pg_err)?;
    }
    if let Some(SyncDone {
        keep: Some(rec), ..
    }) = done
    {
        insert_kept(&tx, store, slot, rec, charged).await?;
    }
    tx.execute(&tx.prepare_cached(NOTIFY_WORK).await.map_err(pg_err)?, &[])
        .await
        .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
}

/// Inserts the COMPLETED row of a kept result ([`INSERT_COMPLETED`]).
async fn insert_kept(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &PgStore,
    slot: &SyncSlot,
    rec: &SyncRecord,
    charged: i64,
) -> Result<()> {
    let seq = store.shared.ids.seq_of(slot.org, &slot.id);
    let attempts = i32::try_from(rec.attempts).unwrap_or(i32::MAX);
    let payload = crate::store::json_text(&rec.payload);
    let response = crate::store::json_text(&rec.result);
    let finished = store.shared.clock.now_ms();
    tx.execute(
        &tx.prepare_cached(INSERT_COMPLETED).await.map_err(pg_err)?,
        &[
            &seq,
            &slot.id,
            &slot.org,
            &(slot.task_type.code() as i16),
            &attempts,
            &rec.credits_to_charge,
            &charged,
            &payload,
            &response,
            &slot.started_ms,
            &finished,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Frees `slot` without charging, retrying in the background until the database answers (or
/// the store closes: then the node's rows go when it leaves or its lease runs out).
fn release_later(store: &PgStore, slot: &SyncSlot) {
    let shared = store.shared.clone();
    let cancel = store.cancel.clone();
    let (org, cost) = (slot.org, slot.cost);
    store.tracker.spawn(async move {
        let mut wait = Duration::from_millis(50);
        loop {
            let freed = shared
                .bounded(async {
                    let client = shared.conn().await?;
                    let zero = 0i64;
                    client
                        .execute(
                            &client.prepare_cached(FREE_SLOT).await.map_err(pg_err)?,
                            &[&org, &shared.node, &cost, &zero],
                        )
                        .await
                        .map_err(pg_err)
                })
                .await;
            match freed {
                Ok(_) => {
                    shared.notify.notify_one();
                    shared.bump();
                    return;
                }
                Err(error) => tracing::warn!(%error, "Cannot free a sync call's slot yet"),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    });
}
