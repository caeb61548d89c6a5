//! The database file itself: its migrations, how connections to it are opened, and the lock
//! that lets one server own it.
//!
//! * **Migrations** are the numbered files of `migrations/sqlite/`, run in order inside one
//!   `IMMEDIATE` transaction; `PRAGMA user_version` counts how many have run, so a database
//!   newer than this binary is refused instead of misread.
//! * **Connections** all get the same settings: WAL (readers run beside the writer),
//!   `synchronous=FULL` (a commit is on disk when it returns), a busy timeout for the CLI
//!   writing while a server runs, and a 32 MB page cache.
//! * **The id key** (`meta.id_key`), drawn once per database, keys the permutation of the
//!   sequence number inside public task ids (see [`crate::domain::task::IdKey`]). A database
//!   created before keyed ids also has the XOR mask its older ids were made with
//!   (`meta.id_mask`), kept so that they still resolve; a new database has none.
//! * **The lock file** `<db>.lock`: only one server process may own a database, since the
//!   ready index and the webhook index live in its memory.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::domain::task::IdKey;
use crate::store::{Error, Result};

/// The schema's migrations in order; `PRAGMA user_version` is how many have run. Add new
/// ones at the end, never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_rate_limit.sql"),
    include_str!("../../../migrations/sqlite/0003_webhooks.sql"),
    include_str!("../../../migrations/sqlite/0004_webhook_state_in_tasks.sql"),
    include_str!("../../../migrations/sqlite/0005_webhook_urls.sql"),
    include_str!("../../../migrations/sqlite/0006_usage.sql"),
    include_str!("../../../migrations/sqlite/0007_engine_health.sql"),
];

/// How many migrations have run (0 on a new file).
const READ_VERSION: &str = "PRAGMA user_version";

/// The legacy id mask of a database created before keyed ids (a decimal string), if any.
const READ_ID_MASK: &str = "SELECT value FROM meta WHERE key = 'id_mask'";

/// The database's id key, if it has one yet (written once, by the first start of a binary
/// with keyed ids).
const READ_ID_KEY: &str = "SELECT value FROM meta WHERE key = 'id_key'";

/// Stores the database's id key (32 hex digits: `meta.value` is text).
const INSERT_ID_KEY: &str = "INSERT INTO meta(key, value) VALUES ('id_key', ?1)";

/// Opens a connection with the store's settings (see the module docs).
pub(crate) fn open(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::Unavailable(crate::store::Cause::new(
            format!("cannot open {}: {e}", path.display()),
            e,
        ))
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -32_768)?;
    Ok(conn)
}

/// Opens the database for administration (the CLI), creating and migrating it if needed.
pub(crate) fn open_admin(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Unavailable(crate::store::Cause::new(
                format!("cannot create {}: {e}", dir.display()),
                e,
            ))
        })?;
    }
    let mut conn = open(path, false)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Runs the migrations this file has not seen yet and draws its id key if it has none.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row(READ_VERSION, [], |r| r.get(0))?;
    if version > MIGRATIONS.len() as i64 {
        return Err(Error::Other(
            format!(
                "the database's schema (version {version}) is newer than this cloro (version {})",
                MIGRATIONS.len()
            )
            .into(),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    let has_key: Option<String> = tx.query_row(READ_ID_KEY, [], |r| r.get(0)).optional()?;
    if has_key.is_none() {
        tx.execute(INSERT_ID_KEY, [IdKey::random_stored()])?;
    }
    tx.commit()?;
    Ok(())
}

/// The id key of a migrated database, with its legacy mask if it has one.
pub(crate) fn id_key(conn: &Connection) -> Result<IdKey> {
    let key: String = conn.query_row(READ_ID_KEY, [], |r| r.get(0))?;
    let mask: Option<String> = conn.query_row(READ_ID_MASK, [], |r| r.get(0)).optional()?;
    IdKey::from_stored(&key, mask.as_deref()).ok_or_else(|| Error::Other("corrupt id key".into()))
}

/// Only one server may own a database: an exclusive lock on `<db>.lock`, held as long as the
/// returned file is open.
pub(crate) fn take_lock(path: &Path) -> Result<std::fs::File> {
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            Error::Unavailable(crate::store::Cause::new(
                format!("cannot open {}: {e}", lock_path.display()),
                e,
            ))
        })?;
    file.try_lock().map_err(|_| {
        Error::Conflict(format!(
            "another cloro server is using {} (lock file {})",
            path.display(),
            lock_path.display()
        ))
    })?;
    Ok(file)
}
