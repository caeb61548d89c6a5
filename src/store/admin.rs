//! Administration of either store (the `org` and `key` commands, and the `default`
//! organization made by `serve` on an empty database). It writes straight to the database, so it
//! works while servers run on it; they see new organizations and keys at once.

use super::{CreatedOrg, Database, OrgSpec, Result, postgres, sqlite};
use crate::clock::Clock;
use crate::domain::apikey::ApiKey;

/// An administrative connection.
pub enum Admin {
    Sqlite(rusqlite::Connection),
    Postgres(deadpool_postgres::Pool),
}

impl Admin {
    /// Opens the database, creating and migrating it if needed.
    pub async fn open(db: &Database) -> Result<Admin> {
        match db {
            Database::Sqlite(path) => Ok(Admin::Sqlite(sqlite::schema::open_admin(path)?)),
            Database::Postgres(url) => {
                let pool = postgres::pool(url, 2)?;
                postgres::migrate(&pool).await?;
                Ok(Admin::Postgres(pool))
            }
        }
    }

    pub async fn create_org(&self, spec: &OrgSpec) -> Result<CreatedOrg> {
        match self {
            Admin::Sqlite(c) => sqlite::admin::create_org(c, spec, Clock::system().now_ms()),
            Admin::Postgres(p) => postgres::create_org(p, spec).await,
        }
    }

    pub async fn create_key(&self, org_id: &str) -> Result<(String, ApiKey)> {
        match self {
            Admin::Sqlite(c) => sqlite::admin::create_key(c, org_id, Clock::system().now_ms()),
            Admin::Postgres(p) => postgres::create_key(p, org_id).await,
        }
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<()> {
        match self {
            Admin::Sqlite(c) => sqlite::admin::revoke_key(c, key_id, Clock::system().now_ms()),
            Admin::Postgres(p) => postgres::revoke_key(p, key_id).await,
        }
    }

    /// Sets (or, with `None`, removes) an organization's webhook signing secret; running
    /// servers read it at delivery time.
    pub async fn set_webhook_secret(&self, org_id: &str, secret: Option<&str>) -> Result<()> {
        match self {
            Admin::Sqlite(c) => sqlite::admin::set_webhook_secret(c, org_id, secret),
            Admin::Postgres(p) => postgres::set_webhook_secret(p, org_id, secret).await,
        }
    }

    pub async fn count_orgs(&self) -> Result<i64> {
        match self {
            Admin::Sqlite(c) => sqlite::admin::count_orgs(c),
            Admin::Postgres(p) => postgres::count_orgs(p).await,
        }
    }
}
