//! The queue's writes from the API: a submission and clearing an organization's queue.
//!
//! A submission is one transaction: screen the items against the live balance and refuse a
//! batch that cannot fit under the queue limit as last committed ([`SUBMIT_CHECK`], no lock),
//! draw sequence numbers, insert the rows (an idempotency key already in use drops its row),
//! then take room for the rows inserted under the queue limit with one conditional `UPDATE` of
//! the organization's counters (atomic for the whole cluster: the batch rolls back when it no
//! longer fits), and `NOTIFY` the cluster. The organization's row is locked only from that
//! `UPDATE` to the commit, so concurrent submissions of one organization insert side by side and
//! claims are not held up by an insert in progress. `created_ms` is the store's
//! [`Clock`](crate::clock::Clock) reading.
//!
//! The seqs are drawn before the lock, so a submission may commit after another one with higher
//! seqs was claimed from; its `UPDATE` lowers the claim cursors to its own lowest seqs
//! ([`TAKE_ROOM`]), which keeps every QUEUED task at or above its priority's cursor.

use std::collections::HashSet;

use uuid::Uuid;

use super::PgStore;
use super::cluster::NOTIFY_WORK;
use super::counters::{Params, add_queued, deltas, lows, push_deltas};
use super::errors::pg_err;
use crate::domain::task::TaskStatus;
use crate::store::{ItemError, ItemResults, NewTask, OrgKey, Result, SubmitError, TaskRecord};

/// Organization `$1`'s live balance ([`balance!`]), its queued tasks and its queue limit, as
/// last committed (no lock).
pub(super) const SUBMIT_CHECK: &str = concat!(
    "SELECT ",
    balance!(),
    ", ",
    q_sum!(),
    ", queue_limit FROM orgs o WHERE id = $1"
);

/// Takes room for `$2` tasks under organization `$1`'s queue limit, adding `$3..$12` to the
/// queued counts per priority and bringing each claim cursor down to `$13..$22` where that is
/// lower (the lowest seq inserted per priority, `i64::MAX` where none); no row comes back when
/// the limit would be exceeded.
pub(super) const TAKE_ROOM: &str = concat!(
    "UPDATE orgs SET q1 = q1 + $3, q2 = q2 + $4, q3 = q3 + $5, q4 = q4 + $6, q5 = q5 + $7, ",
    "q6 = q6 + $8, q7 = q7 + $9, q8 = q8 + $10, q9 = q9 + $11, q10 = q10 + $12, ",
    "c1 = LEAST(c1, $13), c2 = LEAST(c2, $14), c3 = LEAST(c3, $15), c4 = LEAST(c4, $16), ",
    "c5 = LEAST(c5, $17), c6 = LEAST(c6, $18), c7 = LEAST(c7, $19), c8 = LEAST(c8, $20), ",
    "c9 = LEAST(c9, $21), c10 = LEAST(c10, $22) WHERE id = $1 AND ",
    q_sum!(),
    " + $2 <= queue_limit RETURNING id"
);

/// Organization `$1`'s queue limit (for the refusal's message).
const QUEUE_LIMIT: &str = "SELECT queue_limit FROM orgs WHERE id = $1";

/// `$1` fresh task sequence numbers (creation order; the public id encodes them).
const NEXT_SEQS: &str = "SELECT nextval('tasks_seq') FROM generate_series(1, $1::bigint)";

/// The accepted tasks as QUEUED rows of organization `$9` created at `$10`, from column
/// arrays, in the arrays' order; a row whose idempotency key the organization already uses is
/// not inserted (the seqs that come back are the ones that were).
const INSERT_TASKS: &str = "INSERT INTO tasks(seq, id, org, task_type, priority, status, credits_to_charge, idem_key,
                                       webhook_url, payload, created_ms)
                     SELECT u.seq, u.id, $9, u.task_type, u.priority, 0, u.cost, u.idem, u.webhook, u.payload, $10
                       FROM unnest($1::bigint[], $2::uuid[], $3::smallint[], $4::smallint[], $5::bigint[],
                                   $6::text[], $7::text[], $8::text[])
                            AS u(seq, id, task_type, priority, cost, idem, webhook, payload)
                     ON CONFLICT (org, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
                     RETURNING seq";

/// Locks organization `$1`'s row: orders a clear against claims and submissions.
const LOCK_ORG: &str = "SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE";

/// Deletes organization `$1`'s QUEUED tasks (waiting retries included).
const DELETE_QUEUED: &str =
    "DELETE FROM tasks WHERE org = $1 AND finished_ms IS NULL AND status = 0 RETURNING priority";

/// The accepted tasks as [`INSERT_TASKS`]'s column arrays.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    id: Vec<Uuid>,
    task_type: Vec<i16>,
    priority: Vec<i16>,
    cost: Vec<i64>,
    idem: Vec<Option<String>>,
    webhook: Vec<Option<String>>,
    payload: Vec<String>,
}

/// [`Store::submit`](crate::store::Store::submit).
pub(crate) async fn submit(
    store: &PgStore,
    org: OrgKey,
    tasks: Vec<NewTask>,
) -> Result<std::result::Result<Vec<std::result::Result<TaskRecord, ItemError>>, SubmitError>> {
    let n = tasks.len();
    let mut out: ItemResults = vec![None; n];
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let check = tx
        .query_opt(
            &tx.prepare_cached(SUBMIT_CHECK).await.map_err(pg_err)?,
            &[&org],
        )
        .await
        .map_err(pg_err)?
        .ok_or(crate::store::Error::NotFound)?;
    let (balance, queued, limit): (i64, i64, i64) = (check.get(0), check.get(1), check.get(2));
    let accepted = crate::store::screen_submission(tasks, balance, &mut out);
    if !accepted.is_empty() {
        let count = accepted.len() as i64;
        // Full as last committed: refused before any row is written.
        if queued + count > limit {
            return Ok(Err(SubmitError::QueueLimit(limit)));
        }
        let seqs: Vec<i64> = tx
            .query(
                &tx.prepare_cached(NEXT_SEQS).await.map_err(pg_err)?,
                &[&count],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let now = store.shared.clock.now_ms();
        let ids: Vec<Uuid> = seqs
            .iter()
            .map(|seq| {
                store
                    .shared
                    .ids
                    .task_id(org, now, *seq, rand::random::<u16>())
            })
            .collect();
        let mut cols = Columns::default();
        for i in grouped_by_priority(&accepted, &seqs) {
            let ((_, t), seq) = (&accepted[i], seqs[i]);
            cols.seq.push(seq);
            cols.id.push(ids[i]);
            cols.task_type.push(t.task_type.code() as i16);
            cols.priority.push(i16::from(t.priority));
            cols.cost.push(t.credits_to_charge);
            cols.idem.push(t.idempotency_key.clone());
            cols.webhook.push(t.webhook_url.clone());
            cols.payload.push(crate::store::json_text(&t.payload));
        }
        let inserted: HashSet<i64> = tx
            .query(
                &tx.prepare_cached(INSERT_TASKS).await.map_err(pg_err)?,
                &[
                    &cols.seq,
                    &cols.id,
                    &cols.task_type,
                    &cols.priority,
                    &cols.cost,
                    &cols.idem,
                    &cols.webhook,
                    &cols.payload,
                    &org,
                    &now,
                ],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // `(priority, seq)` of the rows inserted.
        let mut added = Vec::with_capacity(inserted.len());
        for (i, ((index, t), seq)) in accepted.into_iter().zip(&seqs).enumerate() {
            if inserted.contains(seq) {
                added.push((t.priority, *seq));
                out[index] = Some(Ok(TaskRecord {
                    id: ids[i],
                    task_type: t.task_type,
                    status: TaskStatus::Queued,
                    priority: t.priority,
                    created_ms: now,
                    started_ms: None,
                    finished_ms: None,
                    attempts: 0,
                    idempotency_key: t.idempotency_key,
                    webhook_url: t.webhook_url,
                    credits_to_charge: t.credits_to_charge,
                    credits_charged: None,
                    response: None,
                    webhook_delivered_ms: None,
                    usage: None,
                }));
            } else {
                out[index] = Some(Err(ItemError::DuplicateKey(
                    t.idempotency_key.unwrap_or_default(),
                )));
            }
        }
        if !added.is_empty() {
            // Room under the queue limit for what was inserted, atomically for the whole
            // cluster; the organization's row stays locked until the commit.
            let d = deltas(added.iter().map(|&(p, _)| (p, 1)));
            let low = lows(added.iter());
            let n = added.len() as i64;
            let mut params: Params = vec![&org, &n];
            push_deltas(&mut params, &d);
            push_deltas(&mut params, &low);
            if tx
                .query_opt(
                    &tx.prepare_cached(TAKE_ROOM).await.map_err(pg_err)?,
                    &params,
                )
                .await
                .map_err(pg_err)?
                .is_none()
            {
                // Filled up meanwhile: nothing of the batch stays (the rollback).
                let limit: i64 = tx
                    .query_one(
                        &tx.prepare_cached(QUEUE_LIMIT).await.map_err(pg_err)?,
                        &[&org],
                    )
                    .await
                    .map_err(pg_err)?
                    .get(0);
                return Ok(Err(SubmitError::QueueLimit(limit)));
            }
            tx.execute(&tx.prepare_cached(NOTIFY_WORK).await.map_err(pg_err)?, &[])
                .await
                .map_err(pg_err)?;
        }
    }
    tx.commit().await.map_err(pg_err)?;
    store.shared.bump();
    Ok(Ok(out
        .into_iter()
        .map(|r| r.unwrap_or(Err(ItemError::InsufficientCredits)))
        .collect()))
}

/// The positions of `accepted` (whose seqs are `seqs`, position for position) grouped by
/// priority: the groups in the order the batch first names their priority, seq order within
/// each. The rows are inserted in this order, so tasks that claims take together (one priority
/// of one organization, in seq order) share heap pages, and a page's free space (`fillfactor`)
/// is used by the claims of its own rows (heap-only updates, `0009_hot_claims.sql`) rather than
/// by the finished versions of rows of another priority claimed long before. With a batch's
/// priorities mixed on every page, a transaction held open elsewhere (which stops pruning) left
/// later claims without room on their page, so they wrote index entries: the drain under a
/// long transaction was 11% slower than without (docs/PERFORMANCE.md). The groups are not put
/// in claim order (highest first): concurrent batches would then all insert into the same
/// index leaf at once, which cost the enqueue 8%.
fn grouped_by_priority(accepted: &[(usize, NewTask)], seqs: &[i64]) -> Vec<usize> {
    let n = accepted.len().min(seqs.len());
    let mut first = [usize::MAX; 256];
    for (i, (_, t)) in accepted.iter().enumerate().take(n) {
        let slot = &mut first[usize::from(t.priority)];
        *slot = (*slot).min(i);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (first[usize::from(accepted[i].1.priority)], seqs[i]));
    order
}

/// [`Store::clear_queue`](crate::store::Store::clear_queue).
pub(crate) async fn clear_queue(store: &PgStore, org: OrgKey) -> Result<u64> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute(&tx.prepare_cached(LOCK_ORG).await.map_err(pg_err)?, &[&org])
        .await
        .map_err(pg_err)?;
    let rows = tx
        .query(
            &tx.prepare_cached(DELETE_QUEUED).await.map_err(pg_err)?,
            &[&org],
        )
        .await
        .map_err(pg_err)?;
    let removed: Vec<(u8, i64)> = rows
        .iter()
        .map(|r| (r.get::<_, i16>(0) as u8, -1))
        .collect();
    if !removed.is_empty() {
        add_queued(&tx, &org, &removed).await?;
    }
    tx.commit().await.map_err(pg_err)?;
    store.shared.bump();
    Ok(removed.len() as u64)
}
