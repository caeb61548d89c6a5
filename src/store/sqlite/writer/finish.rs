//! Finish: ends attempts (COMPLETED, FAILED, back to QUEUED for a retry, or requeued at its
//! own place without spending the attempt) and charges the completed ones, in the group's
//! transaction.
//!
//! Only the attempt that holds the claim may end it (`status = 1 AND attempts = ?`): a second
//! finish of the same attempt changes nothing and charges nothing. A terminal outcome's
//! response is staged in the result log first; the row points at it, and a task with a webhook
//! becomes due for delivery in the same row update (the outbox is the row itself). Whatever the
//! outcome, the attempt's upstream usage is added to the task's `usage` in that same update.

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
    Completed { response: String, credits: i64 },
    Retry { run_after_ms: i64 },
    Failed { response: String },
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

/// Ends an attempt with a terminal status (?3: COMPLETED 2 or FAILED 3), what it charged, when,
/// and where its response is; a task with a webhook becomes pending for delivery
/// (`wh_state = 0`), and `RETURNING` says whether it has one. By primary key.
const DONE: &str = concat!(
    "UPDATE tasks SET status = ?3, credits_charged = ?4, finished_ms = ?5,
                                res_seg = ?6, res_off = ?7, res_len = ?8, ",
    usage_plus!("?9"),
    ", wh_state = CASE WHEN ",
    has_webhook!(),
    " THEN 0 END
                         WHERE seq = ?1 AND status = 1 AND attempts = ?2
                         RETURNING ",
    has_webhook!()
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

/// Charges an organization the credits its completions in this group cost (one statement
/// per organization and group, not per task nor per command: with one finish command per
/// task, a per-command charge was a second row write for every completion).
const CHARGE: &str = "UPDATE orgs SET credits = credits - ?2 WHERE id = ?1";

/// Records the outcomes: their effects on the ready index, and the webhook deliveries that
/// became pending (`(seq, hook)`).
pub(super) fn finish(
    g: &mut Group<'_, '_>,
    outcomes: &[(Attempt, FinishRow)],
) -> rusqlite::Result<(Vec<FinishEffect>, NewHooks)> {
    let now = g.now;
    let mut done = g.tx.prepare_cached(DONE)?;
    let mut hooks = Vec::new();
    let mut retry = g.tx.prepare_cached(RETRY)?;
    let mut requeue = g.tx.prepare_cached(REQUEUE)?;
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
                let prio: Option<u8> = retry
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
                let prio: Option<u8> = requeue
                    .query_row(params![t.seq, t.attempt, t.usage], |r| r.get(0))
                    .optional()?;
                if let Some(prio) = prio {
                    effects.push(effect(0, Some(Back::Requeue { seq: t.seq, prio })));
                }
                continue;
            }
        };
        let at = g.log.stage(now, response.as_bytes()).map_err(io_err)?;
        let params = params![
            t.seq,
            t.attempt,
            status,
            charged,
            now,
            at.segment,
            at.offset as i64,
            at.len,
            t.usage
        ];
        let updated: Option<bool> = done.query_row(params, |r| r.get(0)).optional()?;
        if let Some(hooked) = updated {
            if hooked {
                hooks.push((t.seq, PendingHook::fresh(t.org, now)));
            }
            if charged != 0 {
                *g.charges.entry(t.org).or_default() += charged;
            }
            effects.push(effect(charged, None));
        } else {
            g.log.unstage(at);
        }
    }
    Ok((effects, hooks))
}

/// Writes the charges the group's finishes added up ([`Group::charges`]), once every command
/// is applied and before the commit: if one fails, the whole group does.
pub(super) fn charge(g: &mut Group<'_, '_>) -> rusqlite::Result<()> {
    if g.charges.is_empty() {
        return Ok(());
    }
    let mut charge = g.tx.prepare_cached(CHARGE)?;
    for (org, amount) in g.charges.drain() {
        if amount != 0 {
            charge.execute(params![org, amount])?;
        }
    }
    Ok(())
}
