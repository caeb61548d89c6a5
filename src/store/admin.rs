//! The directory without a scheduler: what the `org` and `key` commands, and `serve` before it
//! starts (the `default` organization of an empty database), use to administer either store.
//! It writes straight to the database, so it works while servers run on it; they see new
//! organizations and keys at once.

use super::{Database, Directory, Result, postgres, sqlite};

/// Opens the database for administration, creating and migrating it if needed.
pub async fn open(db: &Database) -> Result<Box<dyn Directory>> {
    match db {
        Database::Sqlite(path) => Ok(Box::new(sqlite::SqliteDirectory::open(path)?)),
        Database::Postgres(url) => Ok(Box::new(postgres::PgDirectory::open(url).await?)),
    }
}
