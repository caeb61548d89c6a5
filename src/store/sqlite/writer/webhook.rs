//! Webhook: counts a delivery attempt when it is claimed, and records how it ended, in the
//! task's row.
//!
//! **The claim writes the attempt before it is sent** (`wh_attempts` = the claimed attempt,
//! `wh_state = 3`: claimed, pending): the in-memory index alone would forget an attempt in
//! flight when the process dies, and a receiver whose answer kills the process would then get
//! the same attempt again after every restart, forever. A claimed row (state 3) left by a
//! crash is still pending; the next claim (attempt `wh_attempts + 1`) takes it as it is, and
//! one claimed beyond the last attempt is recorded as given up without being sent.
//!
//! Only the attempt that holds the delivery may record it: the row must be claimed
//! (`wh_state = 3`) by that very attempt (`wh_attempts`). A record that matches no row (the
//! task was purged, or the attempt is stale) changes nothing. The in-memory due index follows
//! after the commit (see [`super::after`]).
//!
//! `wh_state`: NULL no delivery, 0 pending, 1 delivered, 2 given up, 3 pending with an attempt
//! claimed (the values of migration 0004, plus 3).

use rusqlite::params;

use super::Group;
use crate::store::WebhookResult;

/// Claims attempt ?2 of delivery ?1: counted now, before it is sent. Applies only if the
/// delivery is still pending with ?2 - 1 attempts counted (pending, or claimed by an attempt
/// a crash interrupted).
const CLAIM: &str = "UPDATE tasks SET wh_attempts = ?2, wh_state = 3
                          WHERE seq = ?1 AND wh_state IN (0, 3) AND COALESCE(wh_attempts, 0) = ?2 - 1";

/// A 2xx came back: delivered (`wh_state = 1`) at ?3, which `GET` shows as `deliveredAt`.
const DELIVERED: &str = "UPDATE tasks SET wh_attempts = ?2, wh_state = 1, wh_delivered_ms = ?3
                             WHERE seq = ?1 AND wh_state = 3 AND wh_attempts = ?4";

/// Try again at ?3 (kept in the row so a restart restores the due time); pending again.
const RETRY: &str = "UPDATE tasks SET wh_attempts = ?2, wh_next_at = ?3, wh_state = 0
                             WHERE seq = ?1 AND wh_state = 3 AND wh_attempts = ?4";

/// No further attempt (`wh_state = 2`).
const GAVE_UP: &str = "UPDATE tasks SET wh_attempts = ?2, wh_state = 2
                             WHERE seq = ?1 AND wh_state = 3 AND wh_attempts = ?3";

/// Counts the claimed attempts `(seq, attempt)` in their rows. Returns, per claim, whether its
/// row changed (not: the task was purged since).
pub(super) fn claim(g: &mut Group<'_, '_>, claims: &[(i64, u32)]) -> rusqlite::Result<Vec<bool>> {
    let mut stmt = g.tx.prepare_cached(CLAIM)?;
    claims
        .iter()
        .map(|&(seq, attempt)| Ok(stmt.execute(params![seq, attempt])? == 1))
        .collect()
}

/// Records an attempt: `claimed` is the attempt number the claim handed out (and counted),
/// `attempt` the attempts counted once this is recorded (one less for an attempt deferred
/// unsent). Returns whether the row changed.
pub(super) fn record(
    g: &mut Group<'_, '_>,
    seq: i64,
    claimed: u32,
    attempt: u32,
    result: WebhookResult,
) -> rusqlite::Result<bool> {
    let n = match result {
        WebhookResult::Delivered => {
            g.tx.prepare_cached(DELIVERED)
                .and_then(|mut s| s.execute(params![seq, attempt, g.now, claimed]))
        }
        WebhookResult::Retry { delay_ms } | WebhookResult::Deferred { delay_ms } => {
            g.tx.prepare_cached(RETRY)
                .and_then(|mut s| s.execute(params![seq, attempt, g.now + delay_ms, claimed]))
        }
        WebhookResult::GaveUp => {
            g.tx.prepare_cached(GAVE_UP)
                .and_then(|mut s| s.execute(params![seq, attempt, claimed]))
        }
    }?;
    Ok(n == 1)
}
