//! Administrative commands (`org create`, `key create`, `key revoke`). They write straight to
//! the database, so they work while a server runs on it; the server sees the result at once.

use anyhow::{Context, bail};
use serde_json::json;

use crate::config::{self, Database, DbArgs, KeyCommand, OrgCommand};
use crate::store::Error;
use crate::store::sqlite::{self, OrgSpec};

fn open(db: &DbArgs) -> anyhow::Result<rusqlite::Connection> {
    match config::parse_database(db.database.as_deref()).map_err(anyhow::Error::msg)? {
        Database::Sqlite(path) => {
            sqlite::open_admin(&path).with_context(|| format!("opening {}", path.display()))
        }
        Database::Postgres(_) => {
            bail!("PostgreSQL (cluster mode) is not available in this build yet")
        }
    }
}

pub fn org(cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Create {
            name,
            plan,
            concurrency,
            credits,
            queue_limit,
            db,
        } => {
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let conn = open(&db)?;
            let spec = OrgSpec {
                name,
                plan,
                concurrency,
                credits,
                queue_limit,
            };
            let created = sqlite::create_org(&conn, &spec).map_err(|e| match e {
                Error::Conflict(m) => anyhow::Error::msg(m),
                other => anyhow::Error::new(other),
            })?;
            println!(
                "{}",
                json!({ "orgId": created.org.public_id, "apiKey": created.api_key.expose(), "keyId": created.key_id })
            );
            Ok(())
        }
    }
}

pub fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create { org, db } => {
            let conn = open(&db)?;
            let (key_id, api_key) = match sqlite::create_key(&conn, &org) {
                Err(Error::NotFound) => bail!("no organization with id {org:?}"),
                other => other?,
            };
            println!(
                "{}",
                json!({ "keyId": key_id, "orgId": org, "apiKey": api_key.expose() })
            );
            Ok(())
        }
        KeyCommand::Revoke { key_id, db } => {
            let conn = open(&db)?;
            match sqlite::revoke_key(&conn, &key_id) {
                Err(Error::NotFound) => bail!("no API key with id {key_id:?}"),
                other => other?,
            }
            println!("{}", json!({ "keyId": key_id, "revoked": true }));
            Ok(())
        }
    }
}
