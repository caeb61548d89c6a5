//! The directory without a scheduler: what the `org` and `key` commands, and `serve` before it
//! starts (the `default` organization of an empty database), use to administer either store.
//! It writes straight to the database, so it works while servers run on it; they see new
//! organizations and keys at once.

use super::{Database, Directory, EngineHealthRow, Result, postgres, sqlite};

/// Opens the database for administration, creating and migrating it if needed.
pub async fn open(db: &Database) -> Result<Box<dyn Directory>> {
    match db {
        Database::Sqlite(path) => Ok(Box::new(sqlite::SqliteDirectory::open(path)?)),
        Database::Postgres(url) => Ok(Box::new(postgres::PgDirectory::open(url).await?)),
    }
}

/// The engine health recorded in the database (`cloro engines list`), read without creating,
/// migrating or writing anything: a SQLite file that does not exist, or a schema from before
/// the `engine_health` table, has no rows.
pub async fn read_engine_health(db: &Database) -> Result<Vec<EngineHealthRow>> {
    match db {
        Database::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::admin::read_engine_health(&path))
                .await
                .map_err(|e| {
                    super::Error::Other(super::Cause::new(
                        format!("reading the engine health stopped: {e}"),
                        e,
                    ))
                })?
        }
        Database::Postgres(url) => postgres::admin::read_engine_health(url).await,
    }
}
