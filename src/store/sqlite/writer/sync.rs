//! Sync leave: the durable end of a sync call that got its answer (`POST /v1/monitor/*`).
//!
//! The call's slot and reservation live in the ready index only (nothing durable happens while
//! a call runs); what must be durable is its charge and, when its result is kept (it links to
//! result pages), a COMPLETED task row holding it. Both go into the group's transaction, so the
//! reply means both are on disk; the slot is freed once the group committed (or failed).
//!
//! The kept row is written like a finished task's: its response goes to the result log (staged
//! before the commit, the row points at it), `finished_ms` is the group's time, so `get_task`
//! reads it and the purge removes it after the retention like any terminal task. It is never
//! QUEUED, so the ready index and the queue limit never see it.

use rusqlite::params;

use super::Group;
use crate::store::OrgKey;
use crate::store::sqlite::error::io_err;

/// A kept sync result, serialized outside the writer thread.
pub(crate) struct SyncRow {
    /// The sequence number drawn at admission (the public id encodes it).
    pub(crate) seq: i64,
    pub(crate) id: [u8; 16],
    pub(crate) task_type: i64,
    pub(crate) attempts: u32,
    /// The call's price (`credits_to_charge`; [`crate::store::SyncRecord::credits_to_charge`]).
    pub(crate) cost: i64,
    pub(crate) payload: String,
    pub(crate) response: String,
    /// When the slot was taken (`created_ms` and `started_ms`).
    pub(crate) started_ms: i64,
}

/// A kept sync result: a COMPLETED (2) task of priority 1, no webhook, no idempotency key,
/// created and started when the slot was taken, finished now, its response in the result log.
const INSERT_COMPLETED: &str =
    "INSERT INTO tasks(seq, id, org, task_type, priority, status, attempts, credits_to_charge,
                       credits_charged, payload, res_seg, res_off, res_len, created_ms,
                       started_ms, finished_ms)
     VALUES (?1, ?2, ?3, ?4, 1, 2, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)";

/// Charges `charged` to `org` and inserts the kept row, if any.
pub(super) fn record(
    g: &mut Group<'_, '_>,
    org: OrgKey,
    charged: i64,
    keep: Option<&SyncRow>,
) -> rusqlite::Result<()> {
    g.charge(org, charged);
    if let Some(row) = keep {
        let at = g
            .log
            .stage(g.now, row.response.as_bytes())
            .map_err(io_err)?;
        g.tx.prepare_cached(INSERT_COMPLETED)?.execute(params![
            row.seq,
            &row.id[..],
            org,
            row.task_type,
            row.attempts,
            row.cost,
            charged,
            row.payload,
            at.segment,
            at.offset as i64,
            at.len,
            row.started_ms,
            g.now
        ])?;
    }
    Ok(())
}
