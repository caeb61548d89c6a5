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
    CreatedOrg, Directory, EngineHealthRow, Error, KeyRecord, Org, OrgKey, OrgSpec, Result,
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
}
