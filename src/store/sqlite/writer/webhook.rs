//! Webhook: records how a delivery attempt ended, in the task's row.
//!
//! Only the attempt that holds the delivery may record it: the stored count of finished
//! attempts (`wh_attempts`, NULL = 0) must still be the one before that attempt, and the
//! delivery must still be pending (`wh_state = 0`). A record that matches no row (the task was
//! purged, or the attempt is stale) changes nothing. The in-memory due index follows after the
//! commit (see [`super::after`]).

use rusqlite::params;

use super::Group;
use crate::store::WebhookResult;

/// A 2xx came back: delivered (`wh_state = 1`) at ?3, which `GET` shows as `deliveredAt`.
const DELIVERED: &str = "UPDATE tasks SET wh_attempts = ?2, wh_state = 1, wh_delivered_ms = ?3
                             WHERE seq = ?1 AND wh_state = 0 AND COALESCE(wh_attempts, 0) = ?4";

/// Try again at ?3 (kept in the row so a restart restores the due time); still pending.
const RETRY: &str = "UPDATE tasks SET wh_attempts = ?2, wh_next_at = ?3
                             WHERE seq = ?1 AND wh_state = 0 AND COALESCE(wh_attempts, 0) = ?4";

/// No further attempt (`wh_state = 2`).
const GAVE_UP: &str = "UPDATE tasks SET wh_attempts = ?2, wh_state = 2
                             WHERE seq = ?1 AND wh_state = 0 AND COALESCE(wh_attempts, 0) = ?3";

/// Records an attempt: `claimed` is the attempt number the claim handed out, `attempt` the
/// attempts counted once this is recorded. Returns whether the row changed.
pub(super) fn record(
    g: &mut Group<'_, '_>,
    seq: i64,
    claimed: u32,
    attempt: u32,
    result: WebhookResult,
) -> rusqlite::Result<bool> {
    let before = claimed.saturating_sub(1);
    let n = match result {
        WebhookResult::Delivered => {
            g.tx.prepare_cached(DELIVERED)
                .and_then(|mut s| s.execute(params![seq, attempt, g.now, before]))
        }
        WebhookResult::Retry { delay_ms } | WebhookResult::Deferred { delay_ms } => {
            g.tx.prepare_cached(RETRY)
                .and_then(|mut s| s.execute(params![seq, attempt, g.now + delay_ms, before]))
        }
        WebhookResult::GaveUp => {
            g.tx.prepare_cached(GAVE_UP)
                .and_then(|mut s| s.execute(params![seq, attempt, before]))
        }
    }?;
    Ok(n == 1)
}
