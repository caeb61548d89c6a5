//! Clear: deletes an organization's queued tasks (`DELETE /v1/async/queue`).
//!
//! The store has already taken them out of the ready index (so no claim picks them meanwhile);
//! here their rows go. If the group fails they are put back (see [`super::after`]).

use super::Queued;

/// Deletes one task if it is still QUEUED (it may have been claimed before the index gave it
/// up). By primary key: one statement per task, no scan of the organization's rows.
const DELETE_QUEUED: &str = "DELETE FROM tasks WHERE seq = ?1 AND status = 0";

/// Deletes the taken tasks; returns how many rows went.
pub(super) fn delete(tx: &rusqlite::Transaction<'_>, taken: &[Queued]) -> rusqlite::Result<u64> {
    let mut del = tx.prepare_cached(DELETE_QUEUED)?;
    let mut n = 0;
    for (seq, _, _, _) in taken {
        n += del.execute([seq])? as u64;
    }
    Ok(n)
}
