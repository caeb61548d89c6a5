//! Renew: starts a new billing cycle for every paid organization whose cycle has ended.
//!
//! Credits do not roll over: at the end of a cycle the balance is the plan's credits again
//! (`per_cycle`) and the next reset is one cycle later, skipping cycles that were missed while
//! no server ran. The ready index takes the new balances after the commit.

use rusqlite::params;

use crate::store::{CYCLE_MS, OrgKey};

/// An organization whose billing cycle restarted: `(org, new balance, next reset)`.
pub(crate) type Renewed = (OrgKey, i64, i64);

/// Restores the balance of every organization whose cycle ended by ?1 and moves its next reset
/// past ?1 by whole cycles (?2: the cycle's length). Free plans have no `per_cycle` and are
/// never touched. A scan of `orgs`, which is small.
const RENEW: &str = "UPDATE orgs SET credits = per_cycle,
                                cycle_resets_ms = cycle_resets_ms + ((?1 - cycle_resets_ms) / ?2 + 1) * ?2
                         WHERE per_cycle IS NOT NULL AND cycle_resets_ms IS NOT NULL AND cycle_resets_ms <= ?1
                         RETURNING id, credits, cycle_resets_ms";

/// Renews the cycles that ended by `now`; returns the organizations renewed.
pub(super) fn renew(tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<Vec<Renewed>> {
    let mut stmt = tx.prepare_cached(RENEW)?;
    let rows = stmt.query_map(params![now, CYCLE_MS], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    rows.collect()
}
