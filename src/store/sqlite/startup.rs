//! Start-up: recovery after a crash, and the rebuild of the in-memory indexes from the rows.
//!
//! The ready index and the webhook due index live in memory only, so every start rebuilds them
//! from the table, in one transaction: tasks that were PROCESSING when the last process died go
//! back to QUEUED (they run again, with the next attempt number), the organizations' limits and
//! balances are loaded, and one scan of the table fills both indexes (queued tasks, and pending
//! webhook deliveries: one that was in flight is due again, as its next attempt).

use rusqlite::{Connection, TransactionBehavior};

use super::hook_index::{HookIndex, PendingHook};
use super::ready::{OrgLimits, ReadySet};
use crate::domain::request::max_add_ons_text;
use crate::domain::types::TaskType;
use crate::store::Result;

/// Tasks that were running when the last process died run again (PROCESSING 1 → QUEUED 0).
const REQUEUE_RUNNING: &str = "UPDATE tasks SET status = 0 WHERE status = 1";

/// The next sequence number: `seq` is the primary key, so this reads the last row.
const NEXT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks";

/// Every organization's scheduling limits and balance (a small table).
const ORG_LIMITS: &str = "SELECT id, concurrency, queue_limit, credits FROM orgs";

/// One scan for both in-memory indexes: the queued tasks (with their retry time) and the
/// pending webhook deliveries (with their attempts and due time; a never-attempted delivery is
/// due at its task's finish time; one claimed when the last process died, `wh_state = 3`, is
/// pending with that attempt counted). A full scan, once per start: an index on either condition
/// would cost every submission and finish. A queued AI Mode task (`task_type` 0) comes with
/// its payload: what its pickup reserves depends on it (`include.expandProducts`).
const SCAN_INDEXES: &str =
    "SELECT seq, org, priority, credits_to_charge, run_after_ms, status, wh_state,
                            COALESCE(wh_attempts, 0), COALESCE(wh_next_at, finished_ms), finished_ms,
                            task_type, CASE WHEN status = 0 AND task_type = 0 THEN payload END
                     FROM tasks WHERE status = 0 OR wh_state IN (0, 3)";

/// What start-up rebuilt.
pub(crate) struct Loaded {
    pub(crate) ready: ReadySet,
    pub(crate) hooks: HookIndex,
    pub(crate) next_seq: i64,
}

/// Recovers the rows and rebuilds the indexes as of `now` (retries due by then are ready).
pub(crate) fn load(conn: &mut Connection, now: i64) -> Result<Loaded> {
    let mut ready = ReadySet::new();
    let mut hooks = HookIndex::default();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(REQUEUE_RUNNING, [])?;
    let next_seq = tx.query_row(NEXT_SEQ, [], |r| r.get(0))?;
    {
        let mut stmt = tx.prepare(ORG_LIMITS)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (org, concurrency, queue_limit, credits) = row?;
            ready.set_org(
                org,
                OrgLimits {
                    concurrency,
                    queue_limit,
                    credits,
                },
            );
        }
        let mut stmt = tx.prepare(SCAN_INDEXES)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (seq, org): (i64, i64) = (r.get(0)?, r.get(1)?);
            if r.get::<_, i64>(5)? == 0 {
                let (prio, price, run_after, kind): (u8, i64, Option<i64>, u8) =
                    (r.get(2)?, r.get(3)?, r.get(4)?, r.get(10)?);
                let payload: Option<String> = r.get(11)?;
                let add_ons = TaskType::from_code(i64::from(kind))
                    .map_or(0, |t| max_add_ons_text(t, payload.as_deref()));
                let cost = price + add_ons;
                match run_after {
                    Some(due) if due > now => ready.push_delayed(org, seq, prio, cost, kind, due),
                    _ => ready.push(org, seq, prio, cost, kind),
                }
            }
            if matches!(r.get::<_, Option<i64>>(6)?, Some(0 | 3)) {
                let hook = PendingHook {
                    org,
                    attempts: r.get(7)?,
                    in_flight: false,
                    created_ms: r.get::<_, Option<i64>>(9)?.unwrap_or(now),
                };
                hooks.add(seq, r.get::<_, Option<i64>>(8)?.unwrap_or(now), hook);
            }
        }
    }
    tx.commit()?;
    Ok(Loaded {
        ready,
        hooks,
        next_seq,
    })
}
