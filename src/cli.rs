//! Administrative commands (`org create`, `key create`, `key revoke`). They write straight to
//! the database (SQLite or PostgreSQL), so they work while servers run on it; the servers see
//! the result at once.

use anyhow::{Context, bail};
use serde_json::json;

use crate::config::{self, DbArgs, KeyCommand, OrgCommand, OrgLimits};
use crate::store::{Directory, admin};
use crate::store::{Error, OrgSpec};

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

pub(crate) async fn open(db: &DbArgs) -> anyhow::Result<Box<dyn Directory>> {
    let database = config::parse_database(db.database.as_deref()).map_err(anyhow::Error::msg)?;
    admin::open(&database).await.context("opening the database")
}

pub fn org(cmd: OrgCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            OrgCommand::Create { name, plan, limits, db } => {
                let OrgLimits { concurrency, credits, queue_limit, rate_limit } = limits;
                if name.trim().is_empty() {
                    bail!("--name must not be empty");
                }
                let admin = open(&db).await?;
                let spec = OrgSpec { name, plan, concurrency, credits, queue_limit, rate_limit };
                let created = admin.create_org(&spec).await.map_err(|e| match e {
                    Error::Conflict(m) => anyhow::Error::msg(m),
                    other => anyhow::Error::new(other),
                })?;
                println!(
                    "{}",
                    json!({ "orgId": created.org.public_id, "apiKey": created.api_key.expose(), "keyId": created.key_id })
                );
                Ok(())
            }
            OrgCommand::WebhookSecret { org, disable, db } => {
                let admin = open(&db).await?;
                let secret = (!disable).then(crate::webhooks::new_secret);
                match admin.set_webhook_secret(&org, secret.as_deref()).await {
                    Err(Error::NotFound) => bail!("no organization with id {org:?}"),
                    other => other?,
                }
                match secret {
                    Some(s) => println!("{}", json!({ "orgId": org, "secret": s })),
                    None => println!("{}", json!({ "orgId": org, "signing": false })),
                }
                Ok(())
            }
            other => crate::cli_admin::org(other).await,
        }
    })
}

pub fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            KeyCommand::Create { org, db } => {
                let admin = open(&db).await?;
                let (key_id, api_key) = match admin.create_key(&org).await {
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
                let admin = open(&db).await?;
                match admin.revoke_key(&key_id).await {
                    Err(Error::NotFound) => bail!("no API key with id {key_id:?}"),
                    other => other?,
                }
                println!("{}", json!({ "keyId": key_id, "revoked": true }));
                Ok(())
            }
            other => crate::cli_admin::key(other).await,
        }
    })
}
