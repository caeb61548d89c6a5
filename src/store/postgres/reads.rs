//! The reads: API keys, organizations, one task, the queue's numbers, the signing secret.
//!
//! Each is one statement on a pooled connection, outside any transaction: a key lookup or a
//! few counter rows (see [`counters`](super::counters)), never a count over task rows.

use uuid::Uuid;

use super::PgStore;
use deadpool_postgres::Pool;

use super::errors::{pg_err, pool_err};
use crate::domain::apikey::constant_time_eq;
use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
use crate::store::{Error, KeyRecord, Org, OrgKey, QueueStatus, Result, TaskRecord};

/// An API key by its digest `$1`, with its organization's rate limit.
const FIND_KEY: &str = "SELECT k.key_id, k.org, k.hash, k.revoked_ms, o.rate_limit
                 FROM api_keys k LEFT JOIN orgs o ON o.id = k.org WHERE k.hash = $1";

/// Organization `$1`, with its live balance ([`balance!`]).
pub(super) const ORG: &str = concat!(
    "SELECT id, public_id, name, plan, concurrency, ",
    balance!(),
    ", per_cycle, cycle_resets_ms, queue_limit
                     FROM orgs o WHERE id = $1"
);

/// Task `$1` (its seq, decoded from the public id), with its delivery time if its webhook was
/// delivered. The caller checks the owner and the full id.
const GET_TASK: &str =
    "SELECT id, org, task_type, status, priority, created_ms, started_ms, finished_ms, attempts,
                        idem_key, webhook_url, response, credits_to_charge, credits_charged,
                        (SELECT delivered_ms FROM webhook_deliveries d WHERE d.seq = tasks.seq), usage
                 FROM tasks WHERE seq = $1";

/// Organization `$1`'s queued counts per priority, its running tasks over every node (the
/// claim and finish sides, below 2), its slots in use (every side: sync calls in flight are
/// side 2, see [`sync`](super::sync)), and its cap.
const STATUS: &str = "SELECT q1, q2, q3, q4, q5, q6, q7, q8, q9, q10,
                        (SELECT COALESCE(sum(processing) FILTER (WHERE side < 2), 0)::int FROM org_nodes WHERE org = o.id),
                        concurrency,
                        (SELECT COALESCE(sum(processing), 0)::int FROM org_nodes WHERE org = o.id)
                 FROM orgs o WHERE id = $1";

/// Queued and running tasks over every organization and node (tasks only: sync calls in
/// flight, side 2, are not tasks).
pub(super) const TOTALS: &str = concat!(
    "SELECT (SELECT COALESCE(sum(",
    q_sum!(),
    "), 0)::bigint FROM orgs),
                            (SELECT COALESCE(sum(processing), 0)::bigint FROM org_nodes WHERE side < 2)"
);

/// Organization `$1`'s webhook signing secret.
const WEBHOOK_SECRET: &str = "SELECT webhook_secret FROM orgs WHERE id = $1";

/// A round trip to the database.
const PING: &str = "SELECT 1";

pub(crate) async fn find_key(pool: &Pool, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_opt(
            &client.prepare_cached(FIND_KEY).await.map_err(pg_err)?,
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

pub(crate) async fn org(pool: &Pool, key: OrgKey) -> Result<Org> {
    let client = pool.get().await.map_err(pool_err)?;
    let r = client
        .query_opt(&client.prepare_cached(ORG).await.map_err(pg_err)?, &[&key])
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

pub(crate) async fn get_task(store: &PgStore, org: OrgKey, id: Uuid) -> Result<Option<TaskRecord>> {
    let client = store.client().await?;
    get_task_on(&client, &store.shared.ids, org, id).await
}

/// [`get_task`] on `client`, decoding ids with `ids` (also `cloro task get`'s read).
pub(crate) async fn get_task_on(
    client: &deadpool_postgres::Client,
    ids: &crate::domain::task::IdKey,
    org: OrgKey,
    id: Uuid,
) -> Result<Option<TaskRecord>> {
    // The keyed decoding, then (a database created before keyed ids) the legacy one: the
    // candidate whose row has exactly this id and owner is the task.
    for seq in ids.seqs_of(org, &id) {
        let row = client
            .query_opt(
                &client.prepare_cached(GET_TASK).await.map_err(pg_err)?,
                &[&seq],
            )
            .await
            .map_err(pg_err)?;
        let found = row
            .map(|r| decode_task(&r))
            .and_then(|(stored, owner, rec)| {
                (owner == org && constant_time_eq(stored.as_bytes(), id.as_bytes())).then_some(rec)
            });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// A [`GET_TASK`] row: the stored id, the owner, the record.
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
            usage: crate::store::Usage::from_json(r.get::<_, Option<String>>(15).as_deref()),
        },
    )
}

pub(crate) async fn status(store: &PgStore, org: OrgKey) -> Result<QueueStatus> {
    let client = store.client().await?;
    let r = client
        .query_opt(
            &client.prepare_cached(STATUS).await.map_err(pg_err)?,
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
        concurrency_used: r.get::<_, i32>(12).max(0) as u64,
        concurrency_max: r.get::<_, i32>(11).max(0) as u64,
    })
}

pub(crate) async fn totals(store: &PgStore) -> Result<(u64, u64)> {
    let client = store.client().await?;
    let r = client
        .query_one(&client.prepare_cached(TOTALS).await.map_err(pg_err)?, &[])
        .await
        .map_err(pg_err)?;
    Ok((
        r.get::<_, i64>(0).max(0) as u64,
        r.get::<_, i64>(1).max(0) as u64,
    ))
}

pub(crate) async fn webhook_secret(pool: &Pool, org: OrgKey) -> Result<Option<String>> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_opt(
            &client
                .prepare_cached(WEBHOOK_SECRET)
                .await
                .map_err(pg_err)?,
            &[&org],
        )
        .await
        .map_err(pg_err)?;
    Ok(row.and_then(|r| r.get(0)))
}

pub(crate) async fn ping(store: &PgStore) -> Result<()> {
    let client = store.client().await?;
    client
        .execute(&client.prepare_cached(PING).await.map_err(pg_err)?, &[])
        .await
        .map_err(pg_err)?;
    Ok(())
}
