//! Reload: the organizations' settings as the database holds them now, after `cloro org set`
//! changed them from another process (see `sqlite::orgs_watch`).
//!
//! It runs in the writer's transaction so the balance read is exactly the committed one: the
//! writer is the only one in this process that charges (by difference, `credits - n`), and the
//! ready index takes the balances after the commit in the group's order, so a charge before the
//! reload is in the balance read and one after it is applied on top. Running tasks keep their
//! reservations; a lower concurrency only stops new starts.

use crate::store::Org;
use crate::store::sqlite::admin::org_row;

/// Every organization's settings and committed balance (a scan of `orgs`, which is small), in
/// the columns [`org_row`] maps.
const RELOAD: &str = "SELECT id, public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit
         FROM orgs";

/// Reads every organization's settings.
pub(super) fn reload(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<Org>> {
    let mut stmt = tx.prepare_cached(RELOAD)?;
    let rows = stmt.query_map([], org_row)?;
    rows.collect()
}
