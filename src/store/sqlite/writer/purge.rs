//! Purge: deletes terminal tasks that finished before the retention cutoff, a batch per
//! command, so one purge never holds the writer for long (the store sends batches until one
//! comes back short: [`PURGE_BATCH`]).
//!
//! A webhook delivery's state is in its task's row, so deliveries go with their tasks; the
//! store then forgets them in the in-memory index and removes whole result-log segments.

use super::Group;

/// Most tasks one purge command deletes; `PURGE` says the same number (a test checks).
pub(crate) const PURGE_BATCH: u64 = 20_000;

/// Deletes a batch of tasks finished before ?1, found through the partial index
/// `tasks_finished (finished_ms)`, whose rows are appended in time order.
const PURGE: &str = "DELETE FROM tasks WHERE seq IN (
                        SELECT seq FROM tasks WHERE finished_ms IS NOT NULL AND finished_ms < ?1 LIMIT 20000)";

/// Deletes one batch; returns how many tasks went. Also deletes the interned webhook URLs no
/// task uses any more, at most hourly (see [`crate::store::sqlite::url_cache`]).
pub(super) fn purge(g: &mut Group<'_, '_>, cutoff: i64) -> rusqlite::Result<u64> {
    let n = g.tx.execute(PURGE, [cutoff])?;
    g.urls.collect_garbage(g.tx, g.now)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_statement_deletes_at_most_a_batch() {
        assert!(super::PURGE.contains(&format!("LIMIT {})", super::PURGE_BATCH)));
    }
}
