//! The operator's read and settings commands (issue 13): `cloro status`, `org list|show|set`,
//! `key list`, `task get`. Like the other administrative commands (`cli`) they go straight to the database
//! (SQLite or PostgreSQL), so they work while servers run on it; `org set` is applied by a
//! running server at once (see [`Directory::update_org`]). Human output is an aligned table by
//! default, `--json` prints JSON; a failure is a message on stderr and a non-zero exit.

use anyhow::bail;
use serde_json::{Value, json};

use crate::config::{KeyCommand, OrgCommand, OrgLimits, StatusArgs, TaskCommand};
use crate::store::{Error, KeyInfo, OrgInfo, OrgQueue, OrgUpdate};
use crate::time_fmt::format_ms;

/// Lays rows out in columns padded to their widest cell (two spaces apart).
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A store error as the operator reads it.
fn explain(e: Error, org_id: &str) -> anyhow::Error {
    match e {
        Error::NotFound => anyhow::anyhow!("no organization with id {org_id:?}"),
        Error::Conflict(m) => anyhow::Error::msg(m),
        other => anyhow::Error::new(other),
    }
}

fn org_json(o: &OrgInfo) -> Value {
    json!({
        "orgId": o.org_id,
        "name": o.name,
        "plan": o.plan,
        "concurrency": o.concurrency,
        "credits": o.credits,
        "creditsPerCycle": o.per_cycle,
        "cycleResetsAt": o.cycle_resets_ms.map(format_ms),
        "queueLimit": o.queue_limit,
        "rateLimit": o.rate_limit,
        "createdAt": format_ms(o.created_ms),
    })
}

fn org_human(o: &OrgInfo) -> String {
    let rows = [
        ("Organization", o.org_id.clone()),
        ("Name", o.name.clone()),
        ("Plan", o.plan.clone()),
        ("Concurrency", o.concurrency.to_string()),
        ("Credits", o.credits.to_string()),
        ("Credits per cycle", or_dash(o.per_cycle)),
        ("Cycle resets", or_dash(o.cycle_resets_ms.map(format_ms))),
        ("Queue limit", o.queue_limit.to_string()),
        (
            "Rate limit",
            o.rate_limit
                .map_or_else(|| "server default".to_owned(), |r| r.to_string()),
        ),
        ("Created", format_ms(o.created_ms)),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<18} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_org(o: &OrgInfo, as_json: bool) {
    if as_json {
        println!("{}", org_json(o));
    } else {
        println!("{}", org_human(o));
    }
}

/// `org list|show|set` (the other `org` commands are in `cli`).
pub(crate) async fn org(cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::List { out, db } => {
            let orgs = crate::cli::open(&db).await?.list_orgs().await?;
            if out.json {
                let all: Vec<Value> = orgs.iter().map(org_json).collect();
                println!("{}", Value::Array(all));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = orgs
                .iter()
                .map(|o| {
                    vec![
                        o.org_id.clone(),
                        o.name.clone(),
                        o.plan.clone(),
                        o.concurrency.to_string(),
                        o.credits.to_string(),
                        o.queue_limit.to_string(),
                        or_dash(o.rate_limit),
                        format_ms(o.created_ms),
                    ]
                })
                .collect();
            let headers = [
                "ORG ID",
                "NAME",
                "PLAN",
                "CONCURRENCY",
                "CREDITS",
                "QUEUE LIMIT",
                "RATE LIMIT",
                "CREATED",
            ];
            println!("{}", table(&headers, &rows));
            Ok(())
        }
        OrgCommand::Show { org_id, out, db } => {
            let admin = crate::cli::open(&db).await?;
            let o = admin
                .org_info(&org_id)
                .await
                .map_err(|e| explain(e, &org_id))?;
            print_org(&o, out.json);
            Ok(())
        }
        OrgCommand::Set {
            org_id,
            plan,
            limits,
            clear_rate_limit,
            out,
            db,
        } => {
            let OrgLimits {
                concurrency,
                credits,
                queue_limit,
                rate_limit,
            } = limits;
            let update = OrgUpdate {
                plan,
                concurrency,
                credits,
                queue_limit,
                rate_limit,
                clear_rate_limit,
            };
            if update.plan.is_none()
                && update.concurrency.is_none()
                && update.credits.is_none()
                && update.queue_limit.is_none()
                && update.rate_limit.is_none()
                && !update.clear_rate_limit
            {
                bail!(
                    "nothing to change: give --plan, --concurrency, --credits, --queue-limit, --rate-limit or --clear-rate-limit"
                );
            }
            let admin = crate::cli::open(&db).await?;
            let o = admin
                .update_org(&org_id, &update)
                .await
                .map_err(|e| explain(e, &org_id))?;
            print_org(&o, out.json);
            Ok(())
        }
        OrgCommand::Create { .. } | OrgCommand::WebhookSecret { .. } => {
            bail!("handled by cli::org")
        }
    }
}

fn key_json(k: &KeyInfo) -> Value {
    json!({
        "keyId": k.key_id,
        "createdAt": format_ms(k.created_ms),
        "revoked": k.revoked_ms.is_some(),
        "revokedAt": k.revoked_ms.map(format_ms),
    })
}

/// `key list` (the other `key` commands are in `cli`).
pub(crate) async fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::List { org, out, db } => {
            let admin = crate::cli::open(&db).await?;
            let keys = admin.list_keys(&org).await.map_err(|e| explain(e, &org))?;
            if out.json {
                let all: Vec<Value> = keys.iter().map(key_json).collect();
                println!("{}", Value::Array(all));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.key_id.clone(),
                        format_ms(k.created_ms),
                        or_dash(k.revoked_ms.map(format_ms)),
                    ]
                })
                .collect();
            println!("{}", table(&["KEY ID", "CREATED", "REVOKED"], &rows));
            Ok(())
        }
        KeyCommand::Create { .. } | KeyCommand::Revoke { .. } => bail!("handled by cli::key"),
    }
}

fn by_priority(q: &OrgQueue) -> String {
    if q.by_priority.is_empty() {
        return "-".to_owned();
    }
    q.by_priority
        .iter()
        .map(|(p, n)| format!("p{p}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cloro status [--org ORG_ID]`: the database's totals and each organization's queue.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    crate::cli::runtime()?.block_on(async move {
        let admin = crate::cli::open(&args.db).await?;
        let mut queues = admin.queues().await?;
        if let Some(org) = &args.org {
            queues.retain(|q| &q.org_id == org);
            if queues.is_empty() {
                bail!("no organization with id {org:?}");
            }
        }
        let queued: u64 = queues.iter().map(|q| q.queued).sum();
        let processing: u64 = queues.iter().map(|q| q.processing).sum();
        if args.out.json {
            let orgs: Vec<Value> = queues
                .iter()
                .map(|q| {
                    let prio: serde_json::Map<String, Value> = q
                        .by_priority
                        .iter()
                        .map(|(p, n)| (p.to_string(), json!(n)))
                        .collect();
                    json!({
                        "orgId": q.org_id,
                        "name": q.name,
                        "queued": q.queued,
                        "processing": q.processing,
                        "queuedByPriority": prio,
                        "concurrency": q.concurrency,
                        "queueLimit": q.queue_limit,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({ "queued": queued, "processing": processing, "organizations": orgs })
            );
            return Ok(());
        }
        println!(
            "{} organization(s): {queued} queued, {processing} processing\n",
            queues.len()
        );
        let rows: Vec<Vec<String>> = queues
            .iter()
            .map(|q| {
                vec![
                    q.org_id.clone(),
                    q.name.clone(),
                    q.queued.to_string(),
                    q.processing.to_string(),
                    q.concurrency.to_string(),
                    q.queue_limit.to_string(),
                    by_priority(q),
                ]
            })
            .collect();
        let headers = [
            "ORG ID",
            "NAME",
            "QUEUED",
            "PROCESSING",
            "CONCURRENCY",
            "QUEUE LIMIT",
            "BY PRIORITY",
        ];
        println!("{}", table(&headers, &rows));
        Ok(())
    })
}

/// A JSON value as one table cell: strings bare, the rest as JSON, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `cloro task get TASK_ID --org ORG_ID`: the task as the API's `GET /v1/async/task/{id}`
/// answers it (`--json`: that body; else its fields, then the response).
pub fn task(cmd: TaskCommand) -> anyhow::Result<()> {
    let TaskCommand::Get {
        task_id,
        org,
        out,
        db,
    } = cmd;
    crate::cli::runtime()?.block_on(async move {
        let Ok(id) = uuid::Uuid::parse_str(task_id.trim()) else {
            bail!("{task_id:?} is not a task id (a UUID)");
        };
        let admin = crate::cli::open(&db).await?;
        let Some(t) = admin
            .task_of_org(&org, id)
            .await
            .map_err(|e| explain(e, &org))?
        else {
            bail!("organization {org:?} has no task {task_id:?}");
        };
        let body = serde_json::to_value(crate::wire::GetTaskResponse::new(t))?;
        if out.json {
            println!("{body}");
            return Ok(());
        }
        let mut lines = Vec::new();
        for part in ["task", "credits", "webhook"] {
            if let Some(fields) = body[part].as_object() {
                for (k, v) in fields {
                    lines.push(format!("{:<18} {}", format!("{k}:"), cell(v)));
                }
            }
        }
        if let Some(response) = body.get("response") {
            lines.push(format!(
                "response:\n{}",
                serde_json::to_string_pretty(response)?
            ));
        }
        println!("{}", lines.join("\n"));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long cell".to_owned()],
            vec!["bbb".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            table(&["H1", "H2"], &rows),
            "H1   H2\na    long cell\nbbb  x"
        );
    }
}
