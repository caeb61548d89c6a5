//! Periodic upkeep the queue's housekeeping calls: the retention purge and billing cycles.
//!
//! Both take their time from the caller (the cutoff, "now"), so whichever node runs them
//! decides with its own clock; they are idempotent, so nodes running them at once is harmless.

use super::PgStore;
use super::errors::pg_err;
use crate::store::{CYCLE_MS, Result};

/// Deliveries of tasks that finished before `$1` (a delivery's `created_ms` is its task's
/// finish time: they go together).
const PURGE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE created_ms < $1";

/// How many terminal tasks one purge statement deletes: small batches keep each statement's
/// locks and WAL short while the queue runs.
pub(super) const PURGE_BATCH: u64 = 5000;

/// Up to [`PURGE_BATCH`] terminal tasks that finished before `$1`.
pub(super) const PURGE_TASKS: &str = "DELETE FROM tasks WHERE seq IN (
                        SELECT seq FROM tasks WHERE finished_ms IS NOT NULL AND finished_ms < $1 LIMIT 5000)";

/// Paid organizations whose cycle ended by `$1` start a new one: the balance becomes the
/// plan's credits (no rollover) and the reset time moves on by whole cycles (`$2`).
const RENEW_CYCLES: &str = "UPDATE orgs SET credits = per_cycle,
                        cycle_resets_ms = cycle_resets_ms + (($1 - cycle_resets_ms) / $2 + 1) * $2
                  WHERE per_cycle IS NOT NULL AND cycle_resets_ms IS NOT NULL AND cycle_resets_ms <= $1
                 RETURNING id";

/// The renewed organizations' (`$1`) unfolded charges belong to the ended cycle: dropped.
const FORGET_CHARGES: &str = "UPDATE org_nodes SET charged = 0 WHERE org = ANY($1)";

/// [`Store::purge`](crate::store::Store::purge).
pub(crate) async fn purge(store: &PgStore, cutoff_ms: i64) -> Result<u64> {
    let client = store.client().await?;
    client
        .execute(PURGE_DELIVERIES, &[&cutoff_ms])
        .await
        .map_err(pg_err)?;
    let mut total = 0;
    loop {
        let n = client
            .execute(PURGE_TASKS, &[&cutoff_ms])
            .await
            .map_err(pg_err)?;
        total += n;
        if n < PURGE_BATCH {
            return Ok(total);
        }
    }
}

/// [`Store::renew_cycles`](crate::store::Store::renew_cycles).
pub(crate) async fn renew_cycles(store: &PgStore, now_ms: i64) -> Result<u64> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let renewed: Vec<i64> = tx
        .query(RENEW_CYCLES, &[&now_ms, &CYCLE_MS])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !renewed.is_empty() {
        tx.execute(FORGET_CHARGES, &[&renewed])
            .await
            .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(renewed.len() as u64)
}
