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

/// How many tasks one page of the purge's walk reads: small pages keep each statement's locks
/// and WAL short while the queue runs.
pub(super) const PURGE_BATCH: u64 = 5000;

/// One page of the purge's walk along the primary key (`$2`: the last seq walked, `$3`: the
/// page size): each task's seq, whether it finished before `$1`, and whether it was created at
/// or after `$1`. There is no index on `finished_ms` (`0010_purge_by_seq.sql`: a finish would
/// write an entry in it); tasks are numbered in creation order, and a task created after the
/// cutoff cannot have finished before it, so the walk stops at the first such task.
pub(super) const PURGE_SCAN: &str =
    "SELECT seq, finished_ms IS NOT NULL AND finished_ms < $1, created_ms >= $1
                   FROM tasks WHERE seq > $2 ORDER BY seq LIMIT $3";

/// The tasks `$2` that finished before `$1` (checked again in the statement).
pub(super) const PURGE_TASKS: &str =
    "DELETE FROM tasks WHERE seq = ANY($2) AND finished_ms IS NOT NULL AND finished_ms < $1";

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
    purge_in_pages(store, cutoff_ms, PURGE_BATCH as i64).await
}

/// The purge, walking `page` tasks at a time ([`PURGE_SCAN`], [`PURGE_TASKS`]). The tasks it
/// walks and keeps (created before the cutoff and not finished before it: a backlog, long
/// runs) are walked again by the next purge.
async fn purge_in_pages(store: &PgStore, cutoff_ms: i64, page: i64) -> Result<u64> {
    let client = store.client().await?;
    client
        .execute(PURGE_DELIVERIES, &[&cutoff_ms])
        .await
        .map_err(pg_err)?;
    let scan = client.prepare_cached(PURGE_SCAN).await.map_err(pg_err)?;
    let (mut after, mut total) = (i64::MIN, 0);
    loop {
        let rows = client
            .query(&scan, &[&cutoff_ms, &after, &page])
            .await
            .map_err(pg_err)?;
        let mut done = (rows.len() as i64) < page;
        let mut doomed: Vec<i64> = Vec::new();
        for r in &rows {
            let (seq, old, new): (i64, bool, bool) = (r.get(0), r.get(1), r.get(2));
            if new {
                done = true;
                break;
            }
            if old {
                doomed.push(seq);
            }
            after = seq;
        }
        if !doomed.is_empty() {
            total += client
                .execute(PURGE_TASKS, &[&cutoff_ms, &doomed])
                .await
                .map_err(pg_err)?;
        }
        if done {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewTask, Outcome, Store, TaskQueue};

    /// The walk crosses pages, deletes only tasks finished before the cutoff (whatever lies
    /// between them: running tasks, queued ones), and keeps everything else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_purge_walks_every_page_and_deletes_only_old_terminal_tasks() {
        let Some(admin) = crate::testing::pg_admin_url() else {
            crate::testing::announce_pg_skipped();
            return;
        };
        let db = crate::testing::TestDb::postgres(&admin).await.expect("db");
        let crate::store::Database::Postgres(url) = db.database.clone() else {
            unreachable!("a PostgreSQL database")
        };
        let admin_store = crate::store::admin::open(&db.database)
            .await
            .expect("admin");
        let org = admin_store
            .create_org(&crate::store::OrgSpec {
                name: "purge".into(),
                plan: "business".into(),
                concurrency: Some(20),
                credits: Some(1_000_000),
                queue_limit: Some(1000),
                rate_limit: None,
            })
            .await
            .expect("org")
            .org
            .key;
        drop(admin_store);
        let store = PgStore::open(
            &url,
            super::super::PgConfig {
                lease_ms: 600_000,
                heartbeat_ms: 3_600_000,
                ..Default::default()
            },
        )
        .await
        .expect("store");
        let tasks = (0..9)
            .map(|i| NewTask {
                task_type: crate::domain::types::TaskType::Chatgpt,
                payload: serde_json::json!({"prompt": format!("p{i}"), "country": "US"}),
                priority: 1,
                idempotency_key: None,
                webhook_url: None,
                credits_to_charge: 1,
            })
            .collect();
        let ids: Vec<uuid::Uuid> = store
            .submit(org, tasks)
            .await
            .expect("store")
            .expect("room")
            .into_iter()
            .map(|r| r.expect("accepted").id)
            .collect();
        let claimed = store.claim(7).await.expect("claim");
        assert_eq!(claimed.len(), 7);
        // Every other claimed task finishes; the rest run on, two stay queued.
        let done = Outcome::Completed {
            result: "{}".to_owned().into(),
            credits: 1,
        };
        let finished: Vec<_> = claimed.iter().step_by(2).collect();
        let pairs: Vec<_> = finished.iter().map(|t| (*t, &done)).collect();
        store.finish(&pairs).await.expect("finish");
        let now = crate::time_fmt::now_ms();
        assert_eq!(
            purge_in_pages(&store, now - 60_000, 2)
                .await
                .expect("purge"),
            0
        );
        assert_eq!(
            purge_in_pages(&store, now + 1_000, 2).await.expect("purge"),
            finished.len() as u64
        );
        for id in &ids {
            let gone = finished.iter().any(|t| t.id == *id);
            let found = store.get_task(org, *id).await.expect("get").is_some();
            assert_eq!(found, !gone, "{id}: purged only if it finished");
        }
        store.close();
        store.closed().await;
    }
}
