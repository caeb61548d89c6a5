//! Claim: makes the ready index's picks PROCESSING, or FAILED when their cost no longer fits.
//!
//! The ready index already decided everything (order, caps, fairness, credits at pickup: see
//! [`crate::store::sqlite::ready`]); the rows only record it. Each statement checks that the
//! row is still QUEUED (a clear may have deleted it meanwhile) and touches it by primary key.

use rusqlite::{OptionalExtension, params};

use super::Group;
use crate::store::sqlite::error::io_err;
use crate::store::sqlite::hook_index::{NewHooks, PendingHook};
use crate::store::sqlite::ready::Pick;

/// A claimed row, as the writer hands it back (decoded by the store, outside the writer).
pub(crate) struct RawClaim {
    pub(crate) pick: Pick,
    pub(crate) id: Vec<u8>,
    pub(crate) task_type: i64,
    pub(crate) payload: String,
    pub(crate) attempts: i64,
    /// Its price (`credits_to_charge`); the pick's `cost` is what the pickup reserved.
    pub(crate) credits_to_charge: i64,
}

/// What an attempt starts with, if the row is still QUEUED (a clear may have deleted it).
/// A plain read then [`RUN`] by primary key: cheaper in SQLite than one `UPDATE … RETURNING`,
/// which builds a temporary table for its returned rows on every execution.
const PEEK: &str = "SELECT id, task_type, payload, attempts, credits_to_charge
                          FROM tasks WHERE seq = ?1 AND status = 0";

/// Starts an attempt: QUEUED (0) to PROCESSING (1), one more attempt, `started_ms` kept from
/// the first pickup (`latencyMs` counts from there), the retry time cleared.
const RUN: &str = "UPDATE tasks SET status = 1, attempts = attempts + 1,
                                started_ms = COALESCE(started_ms, ?2), run_after_ms = NULL
                         WHERE seq = ?1";

/// Fails a task whose cost does not fit the balance at pickup: QUEUED (0) to FAILED (3),
/// nothing charged, the `INSUFFICIENT_CREDITS` error in the result log. FAILED is terminal, so
/// a task with a webhook becomes due for delivery in the same update (`wh_state = 0`);
/// `RETURNING` says whether it has one.
const REJECT: &str = concat!(
    "UPDATE tasks SET status = 3, finished_ms = ?2, credits_charged = 0, run_after_ms = NULL,
                                res_seg = ?3, res_off = ?4, res_len = ?5,
                                wh_state = CASE WHEN ",
    has_webhook!(),
    " THEN 0 END
                         WHERE seq = ?1 AND status = 0
                         RETURNING ",
    has_webhook!()
);

/// Records the picks: the claimed rows, and the webhook deliveries of tasks failed at pickup.
pub(super) fn claim(
    g: &mut Group<'_, '_>,
    picks: &[Pick],
) -> rusqlite::Result<(Vec<RawClaim>, NewHooks)> {
    let now = g.now;
    let mut peek = g.tx.prepare_cached(PEEK)?;
    let mut run = g.tx.prepare_cached(RUN)?;
    let mut reject = g.tx.prepare_cached(REJECT)?;
    let mut hooks = Vec::new();
    let insufficient = serde_json::json!({"error": {
        "code": "INSUFFICIENT_CREDITS",
        "message": "Insufficient credits"
    }})
    .to_string();
    let mut claims = Vec::with_capacity(picks.len());
    for p in picks {
        if p.run {
            let row = peek
                .query_row(params![p.seq], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, i64>(3)?,
                        r.get(4)?,
                    ))
                })
                .optional()?;
            if let Some((id, task_type, payload, attempts, credits_to_charge)) = row {
                run.execute(params![p.seq, now])?;
                claims.push(RawClaim {
                    pick: *p,
                    id,
                    task_type,
                    payload,
                    attempts: attempts + 1,
                    credits_to_charge,
                });
            }
        } else {
            let at = g.log.stage(now, insufficient.as_bytes()).map_err(io_err)?;
            let failed: Option<bool> = reject
                .query_row(
                    params![p.seq, now, at.segment, at.offset as i64, at.len],
                    |r| r.get(0),
                )
                .optional()?;
            match failed {
                None => g.log.unstage(at),
                // FAILED is terminal: its webhook goes out like any other (pending in the same
                // row update).
                Some(true) => hooks.push((p.seq, PendingHook::fresh(p.org, now))),
                Some(false) => {}
            }
        }
    }
    Ok((claims, hooks))
}
