//! Submit: inserts a submission's accepted tasks as QUEUED rows.
//!
//! The store has already screened the submission (duplicate keys within it, credits) and
//! reserved room under the queue limit in the ready index; here each task gets the next
//! sequence number and its public id, and a repeated idempotency key (another task of the
//! organization still holds it) fails that item only, through the unique index.

use std::sync::atomic::Ordering;

use rusqlite::params;

use super::Group;
use crate::domain::request::max_add_ons_stored;
use crate::domain::task::TaskStatus;
use crate::store::sqlite::error::is_unique_violation;
use crate::store::{ItemError, NewTask, OrgKey, TaskRecord};

/// One accepted item of a submission: its index in the request, the task, and its payload
/// already serialized (outside the writer thread).
pub(crate) struct InsertItem {
    pub(crate) index: usize,
    pub(crate) task: NewTask,
    pub(crate) payload: String,
}

/// Each item's answer, by its index in the request.
pub(crate) type ItemAnswers = Vec<(usize, std::result::Result<TaskRecord, ItemError>)>;

/// A queued task as the ready index knows it: `(seq, priority, cost, task type code)`, where
/// `cost` is what its pickup reserves: its price plus the most its engine may add after the
/// run (see [`crate::domain::request::max_add_ons_stored`]).
pub(crate) type Queued = (i64, u8, i64, u8);

/// A new QUEUED task (status 0). `seq` is the primary key (the row id, so appended in order);
/// the unique index `tasks_idem (org, idem_key)` refuses a key still in use. The webhook URL
/// goes either in the row or, interned, as `webhook_id` (see [`crate::store::sqlite::url_cache`]).
const INSERT_TASK: &str =
    "INSERT INTO tasks(seq, id, org, task_type, priority, status, credits_to_charge,
                                           idem_key, webhook_url, payload, created_ms, webhook_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Inserts the items: their answers, and the tasks to push onto the ready index once the
/// group commits.
pub(super) fn insert(
    g: &mut Group<'_, '_>,
    org: OrgKey,
    items: Vec<InsertItem>,
) -> rusqlite::Result<(ItemAnswers, Vec<Queued>)> {
    let now = g.now;
    let mut stmt = g.tx.prepare_cached(INSERT_TASK)?;
    let mut results = Vec::with_capacity(items.len());
    let mut pushed = Vec::with_capacity(items.len());
    for it in items {
        // Drawn per row tried: a duplicate key leaves a gap (see `Shared::next_seq`).
        let seq = g.next_seq.fetch_add(1, Ordering::Relaxed);
        let id = g.ids.task_id(org, now, seq, rand::random::<u16>());
        let t = &it.task;
        let (url, url_id) = g.urls.store(g.tx, t.webhook_url.as_deref())?;
        let res = stmt.execute(params![
            seq,
            &id.as_bytes()[..],
            org,
            t.task_type.code(),
            t.priority,
            t.credits_to_charge,
            t.idempotency_key,
            url,
            it.payload,
            now,
            url_id
        ]);
        match res {
            Ok(_) => {
                pushed.push((
                    seq,
                    t.priority,
                    t.credits_to_charge + max_add_ons_stored(t.task_type, &t.payload),
                    t.task_type.code() as u8,
                ));
                results.push((
                    it.index,
                    Ok(TaskRecord {
                        id,
                        task_type: t.task_type,
                        status: TaskStatus::Queued,
                        priority: t.priority,
                        created_ms: now,
                        started_ms: None,
                        finished_ms: None,
                        attempts: 0,
                        idempotency_key: t.idempotency_key.clone(),
                        webhook_url: t.webhook_url.clone(),
                        credits_to_charge: t.credits_to_charge,
                        credits_charged: None,
                        response: None,
                        webhook_delivered_ms: None,
                        usage: None,
                    }),
                ));
            }
            Err(e) if is_unique_violation(&e) => {
                let key = t.idempotency_key.clone().unwrap_or_default();
                results.push((it.index, Err(ItemError::DuplicateKey(key))));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((results, pushed))
}
