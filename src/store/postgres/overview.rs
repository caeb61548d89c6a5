//! [`TaskQueue::overview`](crate::store::TaskQueue::overview): every organization's queue in
//! one statement, for the operator's metrics (`GET /metrics` reads it at each scrape).

use super::PgStore;
use super::errors::pg_err;
use crate::store::{OrgOverview, Overview, QueueStatus, Result};

/// Per organization: its queued counts per priority (`q1`..`q10`), its PROCESSING tasks, its
/// limit and its slots in use (tasks and sync calls) over every node.
const OVERVIEW: &str = "SELECT o.id, o.public_id, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10,
                               COALESCE(n.tasks, 0)::int, o.concurrency, COALESCE(n.used, 0)::int
                          FROM orgs o
                          LEFT JOIN (SELECT org, sum(processing) FILTER (WHERE side < 2) AS tasks,
                                            sum(processing) AS used
                                       FROM org_nodes GROUP BY org) n ON n.org = o.id
                         ORDER BY o.id";

/// Webhook deliveries still pending (uses the partial index on `next_at`).
const BACKLOG: &str = "SELECT count(*) FROM webhook_deliveries WHERE state = 0";

pub(crate) async fn overview(store: &PgStore) -> Result<Overview> {
    let client = store.client().await?;
    let rows = client.query(OVERVIEW, &[]).await.map_err(pg_err)?;
    let orgs = rows
        .iter()
        .map(|r| {
            let q: Vec<i64> = (0..10).map(|i| r.get::<_, i64>(i + 2).max(0)).collect();
            OrgOverview {
                org: r.get(0),
                org_id: r.get(1),
                status: QueueStatus {
                    queued: q.iter().sum::<i64>() as u64,
                    processing: r.get::<_, i32>(12).max(0) as u64,
                    by_priority: (0..10)
                        .rev()
                        .filter(|&i| q[i] > 0)
                        .map(|i| (i as u8 + 1, q[i] as u64))
                        .collect(),
                    concurrency_used: r.get::<_, i32>(14).max(0) as u64,
                    concurrency_max: r.get::<_, i32>(13).max(0) as u64,
                },
            }
        })
        .collect();
    let backlog: i64 = client.query_one(BACKLOG, &[]).await.map_err(pg_err)?.get(0);
    Ok(Overview {
        orgs,
        webhook_backlog: backlog.max(0) as u64,
    })
}
