//! The connection pool and the schema: how a node connects, and how the database is created
//! or upgraded when several nodes start at once.
//!
//! Migrations are the files in `migrations/postgres/`, run in order inside one transaction
//! under an advisory lock, so two nodes starting together never run one twice; under the same
//! lock the first start draws the random key task ids are made with (`meta.id_key`, see
//! [`crate::domain::task::IdKey`]), which every node reads at start-up so they all mint and
//! decode the same ids. A database created before keyed ids keeps its XOR mask
//! (`meta.id_mask`), so that the ids minted with it still resolve.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::errors::{pg_err, pool_err};
use crate::domain::task::IdKey;
use crate::store::{Error, Result};

/// The schema's migrations in order; `schema_version` records how many have run. Add new
/// ones at the end, never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_init.sql"),
    include_str!("../../../migrations/postgres/0002_counter_sides.sql"),
    include_str!("../../../migrations/postgres/0003_rate_limit.sql"),
    include_str!("../../../migrations/postgres/0004_webhooks.sql"),
    include_str!("../../../migrations/postgres/0005_lanes.sql"),
    include_str!("../../../migrations/postgres/0006_usage.sql"),
    include_str!("../../../migrations/postgres/0007_engine_health.sql"),
    include_str!("../../../migrations/postgres/0008_sync.sql"),
    include_str!("../../../migrations/postgres/0009_hot_claims.sql"),
    include_str!("../../../migrations/postgres/0010_purge_by_seq.sql"),
];

/// Arbitrary constant naming the migration lock.
const MIGRATION_LOCK: i64 = 0x636c_6f72_6f01;

/// Takes the migration lock for the rest of the transaction: a second node starting at the
/// same time waits here, then finds the schema already current.
const LOCK_MIGRATIONS: &str = "SELECT pg_advisory_xact_lock($1)";

/// The version table, created before anything else so a fresh database reads version 0.
const CREATE_SCHEMA_VERSION: &str =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)";

/// How many migrations have run (NULL on a fresh database).
const SCHEMA_VERSION: &str = "SELECT max(version) FROM schema_version";

/// A migration may rewrite big tables and a second starting node waits for the first one's
/// migration: neither is bounded by the connections' usual timeouts.
const UNBOUNDED: &str = "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0";

/// Records that migration `$1` (1-based) has run.
const RECORD_VERSION: &str = "INSERT INTO schema_version(version) VALUES ($1)";

/// The task-id key, drawn once; later starts keep the first one.
const INSERT_ID_KEY: &str =
    "INSERT INTO meta(key, value) VALUES ('id_key', $1) ON CONFLICT (key) DO NOTHING";

/// The task-id key every node uses (see [`crate::domain::task::IdKey`]).
const READ_ID_KEY: &str = "SELECT value FROM meta WHERE key = 'id_key'";

/// The XOR mask of the ids minted before keyed ids, on a database created before them.
const READ_ID_MASK: &str = "SELECT value FROM meta WHERE key = 'id_mask'";

/// TCP keepalive: the first probe after this much silence...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// ...then one every this long...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ...and the connection is dead after this many unanswered probes (about 25 s in all).
const KEEPALIVE_RETRIES: u32 = 3;
/// Sent data unacknowledged this long kills the connection (Linux `TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a new connection (TCP, TLS, authentication).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pool's wait for a free connection; [`op_limit`] counts it in.
pub(crate) const POOL_WAIT: Duration = Duration::from_secs(2);

/// How every connection of this node is made (pool, lease renewal, `LISTEN`): `url` plus
/// bounds on every wait, so a stuck peer or a held lock costs a bounded time, never a hang:
///
/// * `lock_timeout` (`--db-lock-timeout-ms`): a row or advisory lock not granted in time
///   fails the statement (`lock_not_available`, answered 503 with `Retry-After`);
/// * `statement_timeout` and `idle_in_transaction_session_timeout` (`--db-timeout-ms`): no
///   statement runs, and no transaction a client abandoned holds its locks, longer than that;
/// * TCP keepalives and `TCP_USER_TIMEOUT` (a silently dead peer is noticed in about 25 s
///   instead of the kernel's two hours), and a connect timeout.
///
/// Settings the URL gives itself (its `options`, `connect_timeout`, `keepalives_*`,
/// `tcp_user_timeout`) win. TLS follows the URL's `sslmode` and `sslrootcert` (see
/// [`super::tls`]).
pub(crate) fn connect_config(
    url: &str,
    pg: &super::PgConfig,
) -> Result<(tokio_postgres::Config, super::tls::Tls)> {
    let (mut cfg, tls) = super::tls::parse(url).map_err(|e| Error::Other(e.into()))?;
    // Every query of the store is a key lookup or an ordered index walk. A burst of inserts
    // leaves the planner's statistics behind, and it then prefers a bitmap scan plus a sort of
    // an organization's whole queue over walking `tasks_ready` in order: forbid that.
    // The URL's own options come last, so they override these.
    let own = cfg
        .get_options()
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    cfg.options(format!(
        "-c enable_bitmapscan=off -c lock_timeout={} -c statement_timeout={} \
         -c idle_in_transaction_session_timeout={}{own}",
        pg.lock_timeout_ms.max(1),
        pg.db_timeout_ms.max(1),
        pg.db_timeout_ms.max(1),
    ));
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    if cfg.get_tcp_user_timeout().is_none() {
        cfg.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if cfg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        cfg.keepalives_idle(KEEPALIVE_IDLE);
    }
    if cfg.get_keepalives_interval().is_none() {
        cfg.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if cfg.get_keepalives_retries().is_none() {
        cfg.keepalives_retries(KEEPALIVE_RETRIES);
    }
    Ok((cfg, tls))
}

/// The longest one store operation may take on a pooled connection, the pool's wait
/// included; past it the operation fails as `Unavailable` and its connection is dropped
/// from the pool (see [`super::Conn`]).
pub(crate) fn op_limit(pg: &super::PgConfig) -> Duration {
    Duration::from_millis(pg.db_timeout_ms.max(1)) + POOL_WAIT
}

/// Builds a connection pool for `url` with the default bounds (nothing is connected yet).
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool> {
    pool_with(
        url,
        &super::PgConfig {
            pool_size: size,
            ..Default::default()
        },
    )
}

/// Builds this node's connection pool ([`connect_config`]; nothing is connected yet).
pub(crate) fn pool_with(url: &str, pg: &super::PgConfig) -> Result<Pool> {
    let (cfg, tls) = connect_config(url, pg)?;
    let mgr = Manager::from_config(
        cfg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(pg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()
        .map_err(|e| {
            Error::Other(crate::store::Cause::new(
                format!("cannot build the connection pool: {e}"),
                e,
            ))
        })
}

/// Creates or upgrades the schema. Safe when several nodes start together: the migration runs
/// in one transaction under an advisory lock.
pub(crate) async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.batch_execute(UNBOUNDED).await.map_err(pg_err)?;
    tx.execute(LOCK_MIGRATIONS, &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(CREATE_SCHEMA_VERSION)
        .await
        .map_err(pg_err)?;
    let version: Option<i32> = tx
        .query_opt(SCHEMA_VERSION, &[])
        .await
        .map_err(pg_err)?
        .and_then(|r| r.get(0));
    let version = version.unwrap_or(0);
    if version as usize > MIGRATIONS.len() {
        return Err(Error::Other(
            format!(
                "the database's schema (version {version}) is newer than this cloro (version {})",
                MIGRATIONS.len()
            )
            .into(),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(pg_err)?;
        tx.execute(RECORD_VERSION, &[&(i as i32 + 1)])
            .await
            .map_err(pg_err)?;
    }
    tx.execute(INSERT_ID_KEY, &[&IdKey::random_stored()])
        .await
        .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
}

/// The task-id key, with the database's legacy mask if it has one.
pub(crate) async fn id_key(client: &tokio_postgres::Client) -> Result<IdKey> {
    let key: String = client
        .query_one(READ_ID_KEY, &[])
        .await
        .map_err(pg_err)?
        .get(0);
    let mask: Option<String> = client
        .query_opt(READ_ID_MASK, &[])
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0));
    IdKey::from_stored(&key, mask.as_deref()).ok_or_else(|| Error::Other("corrupt id key".into()))
}
