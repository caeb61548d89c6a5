//! Finish: ends attempts (COMPLETED, FAILED, back to QUEUED for a retry, or requeued at its
//! own place without spending the attempt) and charges the completed ones, in the group's
//! transaction (the charges are summed per organization over the whole group: [`Group::charge`]).
//!
//! Only the attempt that holds the claim may end it (`status = 1 AND attempts = ?`): a second
//! finish of the same attempt changes nothing and charges nothing. A terminal outcome's
//! response is staged in the result log first; the row points at it, and a task with a webhook
//! becomes due for delivery in the same row update (the outbox is the row itself). Whatever the
//! outcome, the attempt's upstream usage is added to the task's `usage` in that same update.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::Group;
use crate::store::OrgKey;
use crate::store::sqlite::error::io_err;
use crate::store::sqlite::hook_index::{NewHooks, PendingHook};

/// The attempt a finish ends: the claim it holds and the credits it reserved.
pub(crate) struct Attempt {
    pub(crate) seq: i64,
    pub(crate) org: OrgKey,
    /// Its task type (stored code), whose lane the slot belonged to.
    pub(crate) kind: u8,
    pub(crate) attempt: u32,
    pub(crate) cost: i64,
    /// What the attempt used upstream, as its stored JSON (added to the task's `usage`).
    pub(crate) usage: Option<String>,
}

/// How an attempt ended, with the response already serialized (outside the writer thread).
pub(crate) enum FinishRow {
    Completed { response: Arc<str>, credits: i64 },
    Retry { run_after_ms: i64 },
    Failed { response: Arc<str> },
    Requeue,
}

/// How a task goes back to QUEUED.
pub(crate) enum Back {
    /// Waits for its retry time.
    Retry { seq: i64, prio: u8, due: i64 },
    /// Runnable at once, at its own place.
    Requeue { seq: i64, prio: u8 },
}

/// In-memory effect of one finished attempt, applied to the ready index after the commit.
pub(crate) struct FinishEffect {
    pub(crate) org: OrgKey,
    pub(crate) kind: u8,
    /// Credits reserved at pickup, released now.
    pub(crate) cost: i64,
    pub(crate) charged: i64,
    /// The task is QUEUED again.
    pub(crate) back: Option<Back>,
}

/// SQL: `usage` plus the attempt's usage (parameter `$p`, a JSON object or NULL), field by field
/// (a field either side has is kept; absent counts as 0). Unchanged when `$p` is NULL.
macro_rules! usage_plus {
    ($p:literal) => {
        concat!(
            "usage = CASE WHEN ",
            $p,
            " IS NULL THEN usage WHEN usage IS NULL THEN ",
            $p,
            " ELSE (SELECT json_group_object(k, n) FROM (SELECT key AS k, SUM(value) AS n",
            " FROM (SELECT key, value FROM json_each(tasks.usage)",
            " UNION ALL SELECT key, value FROM json_each(",
            $p,
            ")) GROUP BY key)) END"
        )
    };
}

/// Whether the attempt `?2` of task `?1` still holds its claim (PROCESSING in that attempt),
/// and whether the task has a webhook. A plain read then [`DONE`] by primary key: cheaper in
/// SQLite than one `UPDATE … RETURNING`, which builds a temporary table for its returned rows
/// on every execution.
const HOLDS: &str = concat!(
    "SELECT ",
    has_webhook!(),
    " FROM tasks WHERE seq = ?1 AND status = 1 AND attempts = ?2"
);

/// Ends an attempt with a terminal status (?2: COMPLETED 2 or FAILED 3), what it charged, when,
/// and where its response is; a task with a webhook (?9) becomes pending for delivery
/// (`wh_state = 0`). By primary key, once [`HOLDS`] said the claim is still the attempt's.
const DONE: &str = concat!(
    "UPDATE tasks SET status = ?2, credits_charged = ?3, finished_ms = ?4,
                                res_seg = ?5, res_off = ?6, res_len = ?7, ",
    usage_plus!("?8"),
    ", wh_state = CASE WHEN ?9 THEN 0 END
                         WHERE seq = ?1"
);

/// Puts a task back to QUEUED, runnable at `run_after_ms` (kept in the row so a restart
/// restores the timer); `RETURNING` gives the priority the ready index files it under.
const RETRY: &str = concat!(
    "UPDATE tasks SET status = 0, run_after_ms = ?3, ",
    usage_plus!("?4"),
    " WHERE seq = ?1 AND status = 1 AND attempts = ?2
      RETURNING priority"
);

/// Puts a task back to QUEUED at its own place (same seq), runnable at once, without spending
/// the attempt (`attempts` one less); `started_ms` becomes NULL again if no counted attempt is
/// left. `RETURNING` gives the priority.
const REQUEUE: &str = concat!(
    "UPDATE tasks SET status = 0, attempts = attempts - 1, run_after_ms = NULL,
                      started_ms = CASE WHEN attempts <= 1 THEN NULL ELSE started_ms END, ",
    usage_plus!("?3"),
    " WHERE seq = ?1 AND status = 1 AND attempts = ?2
      RETURNING priority"
);

/// Records the outcomes: their effects on the ready index, and the webhook deliveries that
/// became pending (`(seq, hook)`).
pub(super) fn finish(
    g: &mut Group<'_, '_>,
    outcomes: &[(Attempt, FinishRow)],
) -> rusqlite::Result<(Vec<FinishEffect>, NewHooks)> {
    let now = g.now;
    let mut holds = g.tx.prepare_cached(HOLDS)?;
    let mut done = g.tx.prepare_cached(DONE)?;
    let mut hooks = Vec::new();
    // Retries and requeues are rare: their statements are looked up only when needed (a
    // cached statement's lookup hashes its whole SQL text).
    let tx = g.tx;
    let mut effects = Vec::with_capacity(outcomes.len());
    for (t, row) in outcomes {
        let effect = |charged, back| FinishEffect {
            org: t.org,
            kind: t.kind,
            cost: t.cost,
            charged,
            back,
        };
        let (status, response, charged) = match row {
            FinishRow::Completed { response, credits } => (2, response, *credits),
            FinishRow::Failed { response } => (3, response, 0),
            FinishRow::Retry { run_after_ms } => {
                let prio: Option<u8> = tx
                    .prepare_cached(RETRY)?
                    .query_row(params![t.seq, t.attempt, run_after_ms, t.usage], |r| {
                        r.get(0)
                    })
                    .optional()?;
                if let Some(prio) = prio {
                    let due = *run_after_ms;
                    effects.push(effect(
                        0,
                        Some(Back::Retry {
                            seq: t.seq,
                            prio,
                            due,
                        }),
                    ));
                }
                continue;
            }
            FinishRow::Requeue => {
                let prio: Option<u8> = tx
                    .prepare_cached(REQUEUE)?
                    .query_row(params![t.seq, t.attempt, t.usage], |r| r.get(0))
                    .optional()?;
                if let Some(prio) = prio {
                    effects.push(effect(0, Some(Back::Requeue { seq: t.seq, prio })));
                }
                continue;
            }
        };
        let held: Option<bool> = holds
            .query_row(params![t.seq, t.attempt], |r| r.get(0))
            .optional()?;
        let Some(hooked) = held else {
            continue;
        };
        let at = g.log.stage(now, response.as_bytes()).map_err(io_err)?;
        done.execute(params![
            t.seq,
            status,
            charged,
            now,
            at.segment,
            at.offset as i64,
            at.len,
            t.usage,
            hooked
        ])?;
        if hooked {
            hooks.push((t.seq, PendingHook::fresh(t.org, now)));
        }
        g.charge(t.org, charged);
        effects.push(effect(charged, None));
    }
    Ok((effects, hooks))
}
