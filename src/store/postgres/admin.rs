//! The administrative writes on the cluster's database: what `cloro org create`, `key create`,
//! `key revoke`, `org webhook-secret` and the start-up `default` organization do.
//!
//! They run on a plain pool, with or without a running [`PgStore`](super::PgStore) (the CLI does
//! not join the cluster); the time they record (`created_ms`, `revoked_ms`) is passed in, from
//! the caller's clock ([`PgDirectory`]: the system's; a store: its own).

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::errors::{pg_err, pool_err};
use crate::clock::Clock;
use crate::domain::apikey::ApiKey;
use crate::store::{
    CreatedOrg, Directory, EngineHealthRow, Error, KeyInfo, KeyRecord, Org, OrgInfo, OrgKey,
    OrgQueue, OrgSpec, OrgUpdate, Result, TaskRecord,
};

/// A new organization; its key (`id`) comes from the database's sequence.
const INSERT_ORG: &str = "INSERT INTO orgs(public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

/// The organization's rate limit (NULL: the server's default). A separate statement because
/// the column came with a later migration.
const SET_RATE_LIMIT: &str = "UPDATE orgs SET rate_limit = $1 WHERE id = $2";

/// A new API key: only its digest is stored.
const INSERT_KEY: &str =
    "INSERT INTO api_keys(key_id, org, hash, created_ms) VALUES ($1, $2, $3, $4)";

/// An organization's key from its public id.
const ORG_BY_PUBLIC_ID: &str = "SELECT id FROM orgs WHERE public_id = $1";

/// Revokes a key; revoking it again keeps the first revocation time.
const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $2) WHERE key_id = $1";

/// Sets or removes (NULL) an organization's webhook signing secret.
const SET_WEBHOOK_SECRET: &str = "UPDATE orgs SET webhook_secret = $2 WHERE public_id = $1";

/// How many organizations exist (start-up decides whether to create `default`).
const COUNT_ORGS: &str = "SELECT count(*) FROM orgs";

/// Records an engine's health: one row per engine name, the latest writer (node) wins.
const UPSERT_ENGINE_HEALTH: &str = "INSERT INTO engine_health(name, health, message, since_ms, updated_ms, node)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET health = excluded.health, message = excluded.message,
                 since_ms = excluded.since_ms, updated_ms = excluded.updated_ms, node = excluded.node";

/// Every engine's recorded health (a handful of rows).
const READ_ENGINE_HEALTH: &str =
    "SELECT name, health, message, since_ms, updated_ms, node FROM engine_health ORDER BY name";

/// Whether the schema has the table yet (`cloro engines list` does not migrate).
const HAS_ENGINE_HEALTH: &str = "SELECT to_regclass('engine_health') IS NOT NULL";

/// Every organization as the operator sees it, with its live balance, oldest first.
const LIST_ORGS: &str = concat!(
    "SELECT id, public_id, name, plan, concurrency, ",
    balance!(),
    ", per_cycle, cycle_resets_ms, queue_limit, rate_limit, created_ms FROM orgs o ORDER BY id"
);

/// One organization as the operator sees it, by its public id.
const ORG_INFO: &str = concat!(
    "SELECT id, public_id, name, plan, concurrency, ",
    balance!(),
    ", per_cycle, cycle_resets_ms, queue_limit, rate_limit, created_ms FROM orgs o WHERE public_id = $1"
);

/// [`ORG_INFO`], locking the row (claims and submissions lock it too) for `org set`.
const LOCK_ORG_INFO: &str = concat!(
    "SELECT id, public_id, name, plan, concurrency, ",
    balance!(),
    ", per_cycle, cycle_resets_ms, queue_limit, rate_limit, created_ms FROM orgs o WHERE public_id = $1 FOR UPDATE"
);

/// An organization's new settings (`cloro org set`). `$4`, the live balance wanted, NULL to
/// keep it: the charges not yet folded (`org_nodes.charged`) are added to the committed
/// column, so the balance every reader computes (see `balance!`) is `$4`.
const UPDATE_ORG: &str = "UPDATE orgs o SET plan = $2, concurrency = $3,
                credits = CASE WHEN $4::bigint IS NULL THEN credits
                               ELSE $4::bigint + (SELECT COALESCE(sum(charged), 0)::bigint FROM org_nodes WHERE org = o.id) END,
                per_cycle = $5, cycle_resets_ms = $6, queue_limit = $7, rate_limit = $8 WHERE id = $1";

/// An organization's API keys, oldest first (never their digests).
const LIST_KEYS: &str = "SELECT key_id, created_ms, revoked_ms FROM api_keys WHERE org = $1 ORDER BY created_ms, key_id";

/// Every organization's queued counts (`q1`..`q10`), PROCESSING tasks over every node (sides 0
/// and 1; side 2 is sync calls) and limits.
const QUEUES: &str = "SELECT o.public_id, o.name, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10,
                               COALESCE(n.tasks, 0)::bigint, o.concurrency, o.queue_limit
                          FROM orgs o
                          LEFT JOIN (SELECT org, sum(processing) FILTER (WHERE side < 2) AS tasks
                                       FROM org_nodes GROUP BY org) n ON n.org = o.id
                         ORDER BY o.id";

/// Creates an organization and its first API key in one transaction.
pub(crate) async fn create_org(pool: &Pool, spec: &OrgSpec, now: i64) -> Result<CreatedOrg> {
    let org = Org::from_spec(spec, now)?;
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_one(
            INSERT_ORG,
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
    tx.execute(SET_RATE_LIMIT, &[&spec.rate_limit.map(i64::from), &key])
        .await
        .map_err(pg_err)?;
    let (key_id, api_key) = insert_key(&*tx, key, now).await?;
    tx.commit().await.map_err(pg_err)?;
    Ok(CreatedOrg {
        org: Org { key, ..org },
        key_id,
        api_key,
    })
}

/// Generates a key for `org` and stores its digest.
async fn insert_key(
    client: &impl tokio_postgres::GenericClient,
    org: OrgKey,
    now: i64,
) -> Result<(String, ApiKey)> {
    let api_key = ApiKey::generate();
    let key_id = crate::store::new_key_id();
    client
        .execute(
            INSERT_KEY,
            &[&key_id, &org, &api_key.digest().to_vec(), &now],
        )
        .await
        .map_err(pg_err)?;
    Ok((key_id, api_key))
}

/// A new API key for the organization with public id `org_id`.
pub(crate) async fn create_key(pool: &Pool, org_id: &str, now: i64) -> Result<(String, ApiKey)> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_opt(ORG_BY_PUBLIC_ID, &[&org_id])
        .await
        .map_err(pg_err)?
        .ok_or(Error::NotFound)?;
    insert_key(&**client, row.get(0), now).await
}

/// Revokes an API key (idempotent); `NotFound` if there is no such key.
pub(crate) async fn revoke_key(pool: &Pool, key_id: &str, now: i64) -> Result<()> {
    let client = pool.get().await.map_err(pool_err)?;
    let n = client
        .execute(REVOKE_KEY, &[&key_id, &now])
        .await
        .map_err(pg_err)?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

/// Sets (or, with `None`, removes) an organization's webhook signing secret.
pub(crate) async fn set_webhook_secret(
    pool: &Pool,
    org_id: &str,
    secret: Option<&str>,
) -> Result<()> {
    let client = pool.get().await.map_err(pool_err)?;
    let n = client
        .execute(SET_WEBHOOK_SECRET, &[&org_id, &secret])
        .await
        .map_err(pg_err)?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

/// How many organizations exist.
pub(crate) async fn count_orgs(pool: &Pool) -> Result<i64> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client.query_one(COUNT_ORGS, &[]).await.map_err(pg_err)?;
    Ok(row.get(0))
}

/// An [`ORG_INFO`]-shaped row: the key and the organization.
fn org_info_row(r: &tokio_postgres::Row) -> (OrgKey, OrgInfo) {
    (
        r.get(0),
        OrgInfo {
            org_id: r.get(1),
            name: r.get(2),
            plan: r.get(3),
            concurrency: r.get::<_, i32>(4).max(0) as u32,
            credits: r.get(5),
            per_cycle: r.get(6),
            cycle_resets_ms: r.get(7),
            queue_limit: r.get(8),
            rate_limit: r
                .get::<_, Option<i64>>(9)
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            created_ms: r.get(10),
        },
    )
}

/// Every organization, oldest first.
pub(crate) async fn list_orgs(pool: &Pool) -> Result<Vec<OrgInfo>> {
    let client = pool.get().await.map_err(pool_err)?;
    let rows = client.query(LIST_ORGS, &[]).await.map_err(pg_err)?;
    Ok(rows.iter().map(|r| org_info_row(r).1).collect())
}

/// The organization with public id `org_id`.
pub(crate) async fn org_info(pool: &Pool, org_id: &str) -> Result<OrgInfo> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_opt(ORG_INFO, &[&org_id])
        .await
        .map_err(pg_err)?
        .ok_or(Error::NotFound)?;
    Ok(org_info_row(&row).1)
}

/// Changes an organization's settings under its row lock. Claims read the concurrency from the
/// row each time, so every node applies it at its next claim.
pub(crate) async fn update_org(
    pool: &Pool,
    org_id: &str,
    update: &OrgUpdate,
    now: i64,
) -> Result<OrgInfo> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_opt(LOCK_ORG_INFO, &[&org_id])
        .await
        .map_err(pg_err)?
        .ok_or(Error::NotFound)?;
    let (key, cur) = org_info_row(&row);
    let next = update.apply(&cur, now)?;
    let credits = update.sets_credits().then_some(next.credits);
    tx.execute(
        UPDATE_ORG,
        &[
            &key,
            &next.plan,
            &(i32::try_from(next.concurrency).unwrap_or(i32::MAX)),
            &credits,
            &next.per_cycle,
            &next.cycle_resets_ms,
            &next.queue_limit,
            &next.rate_limit.map(i64::from),
        ],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(next)
}

/// The API keys of organization `org_id`.
pub(crate) async fn list_keys(pool: &Pool, org_id: &str) -> Result<Vec<KeyInfo>> {
    let client = pool.get().await.map_err(pool_err)?;
    let org: OrgKey = client
        .query_opt(ORG_BY_PUBLIC_ID, &[&org_id])
        .await
        .map_err(pg_err)?
        .ok_or(Error::NotFound)?
        .get(0);
    let rows = client.query(LIST_KEYS, &[&org]).await.map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| KeyInfo {
            key_id: r.get(0),
            created_ms: r.get(1),
            revoked_ms: r.get(2),
        })
        .collect())
}

/// Every organization's queue numbers.
pub(crate) async fn queues(pool: &Pool) -> Result<Vec<OrgQueue>> {
    let client = pool.get().await.map_err(pool_err)?;
    let rows = client.query(QUEUES, &[]).await.map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let q: Vec<u64> = (0..10)
                .map(|i| r.get::<_, i64>(i + 2).max(0) as u64)
                .collect();
            OrgQueue {
                org_id: r.get(0),
                name: r.get(1),
                by_priority: (0..10)
                    .rev()
                    .filter(|&i| q[i] > 0)
                    .map(|i| (i as u8 + 1, q[i]))
                    .collect(),
                queued: q.iter().sum(),
                processing: r.get::<_, i64>(12).max(0) as u64,
                concurrency: r.get::<_, i32>(13).max(0) as u32,
                queue_limit: r.get(14),
            }
        })
        .collect())
}

/// Task `id` of organization `org_id`, read only (`cloro task get`).
pub(crate) async fn task_of_org(
    pool: &Pool,
    org_id: &str,
    id: uuid::Uuid,
) -> Result<Option<TaskRecord>> {
    let client = pool.get().await.map_err(pool_err)?;
    let org: OrgKey = client
        .query_opt(ORG_BY_PUBLIC_ID, &[&org_id])
        .await
        .map_err(pg_err)?
        .ok_or(Error::NotFound)?
        .get(0);
    let ids = super::schema::id_key(&client).await?;
    super::reads::get_task_on(&client, &ids, org, id).await
}

/// Records an engine's health (see [`Directory::record_engine_health`]); `node` is the writing
/// node's id, if it is one.
pub(crate) async fn record_engine_health(
    pool: &Pool,
    row: (&str, &str, Option<&str>),
    since_ms: i64,
    now_ms: i64,
    node: Option<String>,
) -> Result<()> {
    let (name, health, message) = row;
    let client = pool.get().await.map_err(pool_err)?;
    client
        .execute(
            UPSERT_ENGINE_HEALTH,
            &[&name, &health, &message, &since_ms, &now_ms, &node],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// Every engine's recorded health, by name.
pub(crate) async fn engine_health(pool: &Pool) -> Result<Vec<EngineHealthRow>> {
    let client = pool.get().await.map_err(pool_err)?;
    let rows = client
        .query(READ_ENGINE_HEALTH, &[])
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| EngineHealthRow {
            name: r.get(0),
            health: r.get(1),
            message: r.get(2),
            since_ms: r.get(3),
            updated_ms: r.get(4),
            node: r.get(5),
        })
        .collect())
}

/// Reads the recorded engine health at `url` without migrating anything (`cloro engines
/// list`): a schema from before the table is no rows.
pub(crate) async fn read_engine_health(url: &str) -> Result<Vec<EngineHealthRow>> {
    let pool = super::pool(url, 1)?;
    let has_table: bool = {
        let client = pool.get().await.map_err(pool_err)?;
        client
            .query_one(HAS_ENGINE_HEALTH, &[])
            .await
            .map_err(pg_err)?
            .get(0)
    };
    if !has_table {
        return Ok(Vec::new());
    }
    engine_health(&pool).await
}

/// The directory on a plain pool of two connections: the CLI's handle, which neither joins
/// the cluster nor schedules anything.
pub(crate) struct PgDirectory {
    pool: Pool,
    clock: Clock,
}

impl PgDirectory {
    /// Connects and migrates the database if needed.
    pub(crate) async fn open(url: &str) -> Result<PgDirectory> {
        let pool = super::pool(url, 2)?;
        super::migrate(&pool).await?;
        Ok(PgDirectory {
            pool,
            clock: Clock::system(),
        })
    }
}

#[async_trait]
impl Directory for PgDirectory {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        super::reads::find_key(&self.pool, digest).await
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        super::reads::org(&self.pool, key).await
    }

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        super::reads::webhook_secret(&self.pool, org).await
    }

    async fn create_org(&self, spec: &OrgSpec) -> Result<CreatedOrg> {
        create_org(&self.pool, spec, self.clock.now_ms()).await
    }

    async fn create_key(&self, org_id: &str) -> Result<(String, ApiKey)> {
        create_key(&self.pool, org_id, self.clock.now_ms()).await
    }

    async fn revoke_key(&self, key_id: &str) -> Result<()> {
        revoke_key(&self.pool, key_id, self.clock.now_ms()).await
    }

    async fn set_webhook_secret(&self, org_id: &str, secret: Option<&str>) -> Result<()> {
        set_webhook_secret(&self.pool, org_id, secret).await
    }

    async fn count_orgs(&self) -> Result<i64> {
        count_orgs(&self.pool).await
    }

    async fn record_engine_health(
        &self,
        name: &str,
        health: &str,
        message: Option<&str>,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        let row = (name, health, message);
        record_engine_health(&self.pool, row, since_ms, now_ms, None).await
    }

    async fn engine_health(&self) -> Result<Vec<EngineHealthRow>> {
        engine_health(&self.pool).await
    }

    async fn list_orgs(&self) -> Result<Vec<OrgInfo>> {
        list_orgs(&self.pool).await
    }

    async fn org_info(&self, org_id: &str) -> Result<OrgInfo> {
        org_info(&self.pool, org_id).await
    }

    async fn update_org(&self, org_id: &str, update: &OrgUpdate) -> Result<OrgInfo> {
        update_org(&self.pool, org_id, update, self.clock.now_ms()).await
    }

    async fn list_keys(&self, org_id: &str) -> Result<Vec<KeyInfo>> {
        list_keys(&self.pool, org_id).await
    }

    async fn queues(&self) -> Result<Vec<OrgQueue>> {
        queues(&self.pool).await
    }

    async fn task_of_org(&self, org_id: &str, id: uuid::Uuid) -> Result<Option<TaskRecord>> {
        task_of_org(&self.pool, org_id, id).await
    }
}
