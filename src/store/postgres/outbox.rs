//! The webhook outbox: claiming due deliveries and recording how each attempt ended.
//!
//! A delivery row is written by the transaction that makes its task terminal (the finisher, or
//! a claim that fails a task for lack of credits). Senders on every node claim due rows with
//! `FOR UPDATE SKIP LOCKED`; a claim counts the attempt, names its owner and moves `next_at`
//! one lease ahead, so a sender that dies mid-delivery only delays it by the lease. A record
//! applies only while the row is still held by that attempt of that node.
//!
//! Due times and leases in SQL use the database's clock ([`db_now!`]) so every node agrees on
//! them; the node's [`Clock`](crate::clock::Clock) only feeds its own wake-up heap.

use std::cmp::Reverse;

use super::PgStore;
use super::errors::pg_err;
use crate::store::{Result, WebhookJob, WebhookResult};

/// Claims up to `$2` due deliveries for node `$1`, oldest due first: counts the attempt, names
/// the owner, and pushes `next_at` `$3` ms (the lease) ahead so no other node takes them
/// until the lease runs out.
pub(super) const CLAIM_DELIVERIES: &str = concat!(
    "UPDATE webhook_deliveries AS d
                        SET attempts = d.attempts + 1, owner = $1, next_at = ",
    db_now!(),
    " + $3
                       FROM (SELECT seq FROM webhook_deliveries
                              WHERE state = 0 AND next_at <= ",
    db_now!(),
    "
                              ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS c
                      WHERE d.seq = c.seq
                     RETURNING d.seq, d.org, d.id, d.url, d.attempts"
);

/// The condition every record carries: delivery `$1` is still held by attempt `$2` of node
/// `$3` and still pending (a taken-over attempt's record changes nothing).
macro_rules! still_held {
    () => {
        "WHERE seq = $1 AND attempts = $2 AND owner = $3 AND state = 0"
    };
}

/// A 2xx answer: delivered now.
pub(super) const RECORD_DELIVERED: &str = concat!(
    "UPDATE webhook_deliveries SET state = 1, delivered_ms = ",
    db_now!(),
    ", owner = NULL ",
    still_held!()
);

/// Another attempt `$4` ms from now.
pub(super) const RECORD_RETRY: &str = concat!(
    "UPDATE webhook_deliveries SET next_at = ",
    db_now!(),
    " + $4, owner = NULL ",
    still_held!()
);

/// Not attempted (its destination was busy): due again `$4` ms from now, the claim's attempt
/// not counted.
pub(super) const RECORD_DEFERRED: &str = concat!(
    "UPDATE webhook_deliveries SET attempts = attempts - 1, next_at = ",
    db_now!(),
    " + $4, owner = NULL ",
    still_held!()
);

/// No further attempt.
pub(super) const RECORD_GAVE_UP: &str = concat!(
    "UPDATE webhook_deliveries SET state = 2, owner = NULL ",
    still_held!()
);

/// [`Store::claim_webhooks`](crate::store::Store::claim_webhooks).
pub(crate) async fn claim_webhooks(
    store: &PgStore,
    max: usize,
    lease_ms: i64,
) -> Result<Vec<WebhookJob>> {
    let client = store.client().await?;
    let rows = client
        .query(
            &client
                .prepare_cached(CLAIM_DELIVERIES)
                .await
                .map_err(pg_err)?,
            &[&store.shared.node, &(max as i64), &lease_ms],
        )
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| WebhookJob {
            seq: r.get(0),
            org: r.get(1),
            task_id: r.get(2),
            url: r.get(3),
            attempt: r.get::<_, i32>(4).max(1) as u32,
        })
        .collect())
}

/// [`Store::record_webhook`](crate::store::Store::record_webhook).
pub(crate) async fn record_webhook(
    store: &PgStore,
    job: &WebhookJob,
    result: WebhookResult,
) -> Result<()> {
    let client = store.client().await?;
    let attempt = job.attempt as i32;
    let node = store.shared.node;
    match result {
        WebhookResult::Delivered => {
            client
                .execute(
                    &client
                        .prepare_cached(RECORD_DELIVERED)
                        .await
                        .map_err(pg_err)?,
                    &[&job.seq, &attempt, &node],
                )
                .await
        }
        WebhookResult::Retry { delay_ms } => {
            let n = client
                .execute(
                    &client.prepare_cached(RECORD_RETRY).await.map_err(pg_err)?,
                    &[&job.seq, &attempt, &node, &delay_ms],
                )
                .await;
            let mut heap = store
                .shared
                .hook_retries
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            heap.push(Reverse(store.shared.clock.now_ms() + delay_ms));
            n
        }
        WebhookResult::Deferred { delay_ms } => {
            client
                .execute(
                    &client
                        .prepare_cached(RECORD_DEFERRED)
                        .await
                        .map_err(pg_err)?,
                    &[&job.seq, &attempt, &node, &delay_ms],
                )
                .await
        }
        WebhookResult::GaveUp => {
            client
                .execute(
                    &client
                        .prepare_cached(RECORD_GAVE_UP)
                        .await
                        .map_err(pg_err)?,
                    &[&job.seq, &attempt, &node],
                )
                .await
        }
    }
    .map_err(pg_err)?;
    Ok(())
}
