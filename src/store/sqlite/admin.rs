//! The directory writes of the embedded store: organizations, API keys and webhook secrets,
//! as the CLI (`cloro org …`, `cloro key …`) and `serve`'s first start make them.
//!
//! They run on their own connection ([`super::schema::open_admin`]), outside the writer thread,
//! so they work while a server owns the database; the server reads a new organization or key
//! on first use (see [`super::SqliteStore`]'s organization cache). Each function is one short
//! autocommitted statement or two, except making an organization (three statements in one
//! transaction); the time they record is passed in (`now_ms`), so the caller's clock decides
//! it.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::clock::Clock;
use crate::domain::apikey::ApiKey;
use crate::domain::task::TaskStatus;
use crate::store::{
    CreatedOrg, Directory, EngineHealthRow, Error, KeyInfo, KeyRecord, Org, OrgInfo, OrgKey,
    OrgQueue, OrgSpec, OrgUpdate, Result, TaskRecord,
};

/// A new organization; its id (`orgs.id`, the [`OrgKey`]) is the row id.
const INSERT_ORG: &str = "INSERT INTO orgs(public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// An organization's rate limit: a column of migration 0002, so set apart from the insert
/// that 0001 shaped.
const SET_RATE_LIMIT: &str = "UPDATE orgs SET rate_limit = ?1 WHERE id = ?2";

/// A new API key: only its digest is stored (`api_keys.hash`, unique: the lookup index).
const INSERT_KEY: &str =
    "INSERT INTO api_keys(key_id, org, hash, created_ms) VALUES (?1, ?2, ?3, ?4)";

/// An organization's key from its public id (`orgs.public_id` is unique, so indexed).
const ORG_BY_PUBLIC_ID: &str = "SELECT id FROM orgs WHERE public_id = ?1";

/// Revokes a key; revoking it again keeps the first revocation time.
const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE key_id = ?1";

/// Sets (or, with NULL, removes) an organization's webhook signing secret.
const SET_WEBHOOK_SECRET: &str = "UPDATE orgs SET webhook_secret = ?2 WHERE public_id = ?1";

/// How many organizations exist (`serve` creates `default` when there are none).
const COUNT_ORGS: &str = "SELECT COUNT(*) FROM orgs";

/// An organization by its key (the primary key).
const READ_ORG: &str = "SELECT id, public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit
         FROM orgs WHERE id = ?1";

/// Records an engine's health: one row per engine name, the latest writer wins.
const UPSERT_ENGINE_HEALTH: &str =
    "INSERT INTO engine_health(name, health, message, since_ms, updated_ms, node)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)
         ON CONFLICT(name) DO UPDATE SET health = excluded.health, message = excluded.message,
             since_ms = excluded.since_ms, updated_ms = excluded.updated_ms, node = excluded.node";

/// Every engine's recorded health (a handful of rows).
const READ_ENGINE_HEALTH: &str =
    "SELECT name, health, message, since_ms, updated_ms, node FROM engine_health ORDER BY name";

/// Every organization as the operator sees it, oldest first (`cloro org list`).
const LIST_ORGS: &str =
    "SELECT id, public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms,
                queue_limit, rate_limit, created_ms FROM orgs ORDER BY id";

/// One organization as the operator sees it, by its public id (unique, so indexed).
const ORG_INFO: &str =
    "SELECT id, public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms,
                queue_limit, rate_limit, created_ms FROM orgs WHERE public_id = ?1";

/// An organization's new settings (`cloro org set`).
const UPDATE_ORG: &str =
    "UPDATE orgs SET plan = ?2, concurrency = ?3, credits = ?4, per_cycle = ?5,
                cycle_resets_ms = ?6, queue_limit = ?7, rate_limit = ?8 WHERE id = ?1";

/// Bumps the organizations' change counter (`meta.orgs_version`, text like every `meta`
/// value): a running server polls it and reloads the organizations' settings when it moves.
const BUMP_ORGS_VERSION: &str = "INSERT INTO meta(key, value) VALUES ('orgs_version', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)";

/// The organizations' change counter (no row: 0).
const READ_ORGS_VERSION: &str =
    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'orgs_version'";

/// An organization's API keys, oldest first (never their digests).
const LIST_KEYS: &str = "SELECT key_id, created_ms, revoked_ms FROM api_keys WHERE org = ?1 ORDER BY created_ms, key_id";

/// Queued (?1) and PROCESSING (?2) tasks per organization and priority, every organization
/// listed (a scan of the task table: `status` is not indexed, as the server keeps these numbers
/// in memory; the CLI reads them rarely).
const QUEUES: &str =
    "SELECT o.public_id, o.name, o.concurrency, o.queue_limit, t.priority, t.status, count(t.seq)
         FROM orgs o LEFT JOIN tasks t ON t.org = o.id AND t.status IN (?1, ?2)
         GROUP BY o.id, t.priority, t.status ORDER BY o.id";

/// Creates an organization and its first API key at `now_ms` (a paid plan's first billing
/// cycle ends one cycle later).
///
/// The three writes (the row, its rate limit, the key) are one transaction: a failure in the
/// middle must not leave an organization without a key, which nobody could use and which
/// would stop `serve` from making the `default` organization of an empty database. It is
/// `IMMEDIATE` so that it takes the write lock (waiting out a running server's writer under
/// the busy timeout) before its first statement rather than failing to upgrade later.
pub(crate) fn create_org(conn: &Connection, spec: &OrgSpec, now_ms: i64) -> Result<CreatedOrg> {
    let org = Org::from_spec(spec, now_ms)?;
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute(
        INSERT_ORG,
        params![
            org.public_id,
            org.name,
            org.plan,
            org.concurrency,
            org.credits,
            org.per_cycle,
            org.cycle_resets_ms,
            org.queue_limit,
            now_ms
        ],
    )?;
    let key = tx.last_insert_rowid();
    tx.execute(SET_RATE_LIMIT, params![spec.rate_limit, key])?;
    let (key_id, api_key) = insert_key(&tx, key, now_ms)?;
    tx.commit()?;
    Ok(CreatedOrg {
        org: Org { key, ..org },
        key_id,
        api_key,
    })
}

/// Generates a key for `org` and stores its digest.
fn insert_key(conn: &Connection, org: OrgKey, now_ms: i64) -> Result<(String, ApiKey)> {
    let api_key = ApiKey::generate();
    let key_id = crate::store::new_key_id();
    conn.execute(
        INSERT_KEY,
        params![key_id, org, api_key.digest().to_vec(), now_ms],
    )?;
    Ok((key_id, api_key))
}

/// Creates another API key for the organization with public id `org_id`.
pub(crate) fn create_key(conn: &Connection, org_id: &str, now_ms: i64) -> Result<(String, ApiKey)> {
    let org: OrgKey = conn
        .query_row(ORG_BY_PUBLIC_ID, [org_id], |r| r.get(0))
        .optional()?
        .ok_or(Error::NotFound)?;
    insert_key(conn, org, now_ms)
}

/// Revokes a key at `now_ms`; `NotFound` if there is no such key.
pub(crate) fn revoke_key(conn: &Connection, key_id: &str, now_ms: i64) -> Result<()> {
    let n = conn.execute(REVOKE_KEY, params![key_id, now_ms])?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

/// Sets (or, with `None`, removes) an organization's webhook signing secret.
pub(crate) fn set_webhook_secret(
    conn: &Connection,
    org_id: &str,
    secret: Option<&str>,
) -> Result<()> {
    let n = conn.execute(SET_WEBHOOK_SECRET, params![org_id, secret])?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

/// Number of organizations (the server creates `default` when there are none).
pub(crate) fn count_orgs(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(COUNT_ORGS, [], |r| r.get(0))?)
}

/// A row of `id, public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms,
/// queue_limit` from `orgs` ([`READ_ORG`], and the writer's reload): the organization.
pub(super) fn org_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Org> {
    Ok(Org {
        key: r.get(0)?,
        public_id: r.get(1)?,
        name: r.get(2)?,
        plan: r.get(3)?,
        concurrency: r.get(4)?,
        credits: r.get(5)?,
        per_cycle: r.get(6)?,
        cycle_resets_ms: r.get(7)?,
        queue_limit: r.get(8)?,
    })
}

/// Reads an organization (`NotFound` if there is none with that key).
pub(crate) fn read_org(conn: &Connection, key: OrgKey) -> Result<Org> {
    conn.query_row(READ_ORG, [key], org_row)
        .map_err(Error::from)
}

/// An [`ORG_INFO`]/[`LIST_ORGS`] row: the key and the organization.
fn org_info_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OrgKey, OrgInfo)> {
    Ok((
        r.get(0)?,
        OrgInfo {
            org_id: r.get(1)?,
            name: r.get(2)?,
            plan: r.get(3)?,
            concurrency: r.get(4)?,
            credits: r.get(5)?,
            per_cycle: r.get(6)?,
            cycle_resets_ms: r.get(7)?,
            queue_limit: r.get(8)?,
            rate_limit: r.get(9)?,
            created_ms: r.get(10)?,
        },
    ))
}

/// Every organization, oldest first.
pub(crate) fn list_orgs(conn: &Connection) -> Result<Vec<OrgInfo>> {
    let mut stmt = conn.prepare(LIST_ORGS)?;
    let rows = stmt.query_map([], org_info_row)?;
    Ok(rows
        .map(|r| r.map(|(_, o)| o))
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The organization with public id `org_id`, and its key.
fn org_by_public_id(conn: &Connection, org_id: &str) -> Result<(OrgKey, OrgInfo)> {
    conn.query_row(ORG_INFO, [org_id], org_info_row)
        .optional()?
        .ok_or(Error::NotFound)
}

/// The organization with public id `org_id`.
pub(crate) fn org_info(conn: &Connection, org_id: &str) -> Result<OrgInfo> {
    Ok(org_by_public_id(conn, org_id)?.1)
}

/// Changes an organization's settings at `now_ms` and bumps the change counter, in one
/// `IMMEDIATE` transaction: the balance written is read in it, so it races no server's charge
/// (the server charges by difference, under the same write lock).
pub(crate) fn update_org(
    conn: &Connection,
    org_id: &str,
    update: &OrgUpdate,
    now_ms: i64,
) -> Result<OrgInfo> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let (key, cur) = org_by_public_id(&tx, org_id)?;
    let next = update.apply(&cur, now_ms)?;
    tx.execute(
        UPDATE_ORG,
        params![
            key,
            next.plan,
            next.concurrency,
            next.credits,
            next.per_cycle,
            next.cycle_resets_ms,
            next.queue_limit,
            next.rate_limit
        ],
    )?;
    tx.execute(BUMP_ORGS_VERSION, [])?;
    tx.commit()?;
    Ok(next)
}

/// The organizations' change counter ([`BUMP_ORGS_VERSION`]).
pub(crate) fn orgs_version(conn: &Connection) -> Result<i64> {
    Ok(conn
        .query_row(READ_ORGS_VERSION, [], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .unwrap_or(0))
}

/// The API keys of organization `org_id`.
pub(crate) fn list_keys(conn: &Connection, org_id: &str) -> Result<Vec<KeyInfo>> {
    let (key, _) = org_by_public_id(conn, org_id)?;
    let mut stmt = conn.prepare(LIST_KEYS)?;
    let rows = stmt.query_map([key], |r| {
        Ok(KeyInfo {
            key_id: r.get(0)?,
            created_ms: r.get(1)?,
            revoked_ms: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Every organization's queued and running tasks, from the task table.
pub(crate) fn queues(conn: &Connection) -> Result<Vec<OrgQueue>> {
    let mut stmt = conn.prepare(QUEUES)?;
    let mut rows = stmt.query(params![
        TaskStatus::Queued.code(),
        TaskStatus::Processing.code()
    ])?;
    let mut out: Vec<OrgQueue> = Vec::new();
    while let Some(r) = rows.next()? {
        let org_id: String = r.get(0)?;
        if out.last().is_none_or(|q| q.org_id != org_id) {
            out.push(OrgQueue {
                org_id,
                name: r.get(1)?,
                by_priority: Vec::new(),
                queued: 0,
                processing: 0,
                concurrency: r.get(2)?,
                queue_limit: r.get(3)?,
            });
        }
        let (Some(q), Some(priority), Some(status)) = (
            out.last_mut(),
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ) else {
            continue;
        };
        let n = r.get::<_, i64>(6)?.max(0) as u64;
        if status == TaskStatus::Processing.code() {
            q.processing += n;
        } else {
            q.queued += n;
            match q
                .by_priority
                .iter_mut()
                .find(|(p, _)| i64::from(*p) == priority)
            {
                Some((_, c)) => *c += n,
                None => q.by_priority.push((priority.clamp(1, 10) as u8, n)),
            }
        }
    }
    for q in &mut out {
        q.by_priority.sort_by_key(|b| std::cmp::Reverse(b.0));
    }
    Ok(out)
}

/// The key of the organization with public id `org_id`.
pub(crate) fn org_key(conn: &Connection, org_id: &str) -> Result<OrgKey> {
    conn.query_row(ORG_BY_PUBLIC_ID, [org_id], |r| r.get(0))
        .optional()?
        .ok_or(Error::NotFound)
}

/// Task `id` of organization `org_id` in the database at `path` (its result from the log
/// beside it), read only.
pub(crate) fn task_of_org(
    conn: &Connection,
    path: &Path,
    org_id: &str,
    id: uuid::Uuid,
) -> Result<Option<TaskRecord>> {
    let org = org_key(conn, org_id)?;
    let ids = super::schema::id_key(conn)?;
    let log_dir = super::result_log::dir_for(path);
    let lost = super::reader::LostResults::default();
    for seq in ids.seqs_of(org, &id) {
        if let Some(t) = super::reader::task(conn, &log_dir, &lost, org, id, seq)? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Records an engine's health (see [`Directory::record_engine_health`]).
pub(crate) fn record_engine_health(
    conn: &Connection,
    name: &str,
    health: &str,
    message: Option<&str>,
    since_ms: i64,
    now_ms: i64,
) -> Result<()> {
    conn.execute(
        UPSERT_ENGINE_HEALTH,
        params![name, health, message, since_ms, now_ms],
    )?;
    Ok(())
}

/// Every engine's recorded health, by name.
pub(crate) fn engine_health(conn: &Connection) -> Result<Vec<EngineHealthRow>> {
    let mut stmt = conn.prepare(READ_ENGINE_HEALTH)?;
    let rows = stmt.query_map([], |r| {
        Ok(EngineHealthRow {
            name: r.get(0)?,
            health: r.get(1)?,
            message: r.get(2)?,
            since_ms: r.get(3)?,
            updated_ms: r.get(4)?,
            node: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Reads the recorded engine health of the database at `path` without creating, migrating or
/// writing it (`cloro engines list`): no file, or a schema from before the table, is no rows.
pub(crate) fn read_engine_health(path: &Path) -> Result<Vec<EngineHealthRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = super::schema::open(path, true)?;
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'engine_health')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(Vec::new());
    }
    engine_health(&conn)
}

/// The directory on one connection of its own: the CLI's handle, and `serve`'s before the store
/// starts. It takes no lock file and starts no writer, so it works beside a running server.
pub(crate) struct SqliteDirectory {
    conn: Mutex<Connection>,
    path: std::path::PathBuf,
    clock: Clock,
}

impl SqliteDirectory {
    /// Opens (creating and migrating) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<SqliteDirectory> {
        Ok(SqliteDirectory {
            conn: Mutex::new(super::schema::open_admin(path)?),
            path: path.to_owned(),
            clock: Clock::system(),
        })
    }

    /// Runs `f` on the connection (one short statement or two: done in place, as the CLI's
    /// commands and a start-up have nothing else to do meanwhile).
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&super::lock(&self.conn))
    }
}

#[async_trait]
impl Directory for SqliteDirectory {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.with(|c| super::reader::find_key(c, &digest))
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        self.with(|c| read_org(c, key))
    }

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        self.with(|c| super::reader::webhook_secret(c, org))
    }

    async fn create_org(&self, spec: &OrgSpec) -> Result<CreatedOrg> {
        self.with(|c| create_org(c, spec, self.clock.now_ms()))
    }

    async fn create_key(&self, org_id: &str) -> Result<(String, ApiKey)> {
        self.with(|c| create_key(c, org_id, self.clock.now_ms()))
    }

    async fn revoke_key(&self, key_id: &str) -> Result<()> {
        self.with(|c| revoke_key(c, key_id, self.clock.now_ms()))
    }

    async fn set_webhook_secret(&self, org_id: &str, secret: Option<&str>) -> Result<()> {
        self.with(|c| set_webhook_secret(c, org_id, secret))
    }

    async fn count_orgs(&self) -> Result<i64> {
        self.with(count_orgs)
    }

    async fn record_engine_health(
        &self,
        name: &str,
        health: &str,
        message: Option<&str>,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        self.with(|c| record_engine_health(c, name, health, message, since_ms, now_ms))
    }

    async fn engine_health(&self) -> Result<Vec<EngineHealthRow>> {
        self.with(engine_health)
    }

    async fn list_orgs(&self) -> Result<Vec<OrgInfo>> {
        self.with(list_orgs)
    }

    async fn org_info(&self, org_id: &str) -> Result<OrgInfo> {
        self.with(|c| org_info(c, org_id))
    }

    async fn update_org(&self, org_id: &str, update: &OrgUpdate) -> Result<OrgInfo> {
        self.with(|c| update_org(c, org_id, update, self.clock.now_ms()))
    }

    async fn list_keys(&self, org_id: &str) -> Result<Vec<KeyInfo>> {
        self.with(|c| list_keys(c, org_id))
    }

    async fn queues(&self) -> Result<Vec<OrgQueue>> {
        self.with(queues)
    }

    async fn task_of_org(&self, org_id: &str, id: uuid::Uuid) -> Result<Option<TaskRecord>> {
        self.with(|c| task_of_org(c, &self.path, org_id, id))
    }
}
