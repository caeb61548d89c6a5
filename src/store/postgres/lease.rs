//! This node's lease as the node itself can prove it: fencing.
//!
//! The database decides leases by its own clock: a renewal sets `alive_until_ms = db now +
//! lease` when it runs, and once that passes any node may reap this one and run its tasks.
//! The node cannot read the database's clock, but a renewal that succeeded ran *after* it was
//! sent, so the lease lasts at least until `sent + lease` on this node's monotonic clock (the
//! two clocks run at the same rate up to a drift the [`MARGIN`] covers). Until that instant
//! the lease is *provably current*; past it, this node starts no claim ([`LeaseClock::is_current`]).
//!
//! The local clock only keeps the node from starting work it may not own; what makes a
//! claim or a finish safe is checked in SQL by the transaction itself ([`HOLD_LEASE`]): this
//! node's row must still exist, and the claim also needs it unexpired. The row is locked
//! `FOR KEY SHARE`, which a renewal (`UPDATE` of a non-key column) does not wait for, but a
//! reaper (`FOR UPDATE SKIP LOCKED`, then `DELETE`) does: a reap and a claim or finish of the
//! same node are serialized, so the reaper never misses tasks a claim is starting, nor deletes
//! counter rows a claim or finish is writing.
//!
//! A node that finds its row gone was reaped: its tasks run elsewhere now. It forgets them
//! ([`lost`](LeaseClock::lost)), lets its late outcomes go (they would match nothing), and
//! joins again ([`cluster::rejoin`](super::cluster::rejoin)).
//!
//! Its running attempts stop earlier still: the moment the lease is no longer provably current
//! ([`run_fence`]), before any reaper can take them, so a task never runs on two nodes at once
//! because one of them lost the database for longer than its lease.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Locks this node's row (`$1`) against reapers for the rest of the transaction; whether its
/// lease is unexpired by the database's clock. No row: the node was reaped.
pub(super) const HOLD_LEASE: &str = concat!(
    "SELECT alive_until_ms > ",
    db_now!(),
    " FROM nodes WHERE id = $1 FOR KEY SHARE"
);

/// The part of the lease not trusted locally (clock drift, scheduling): a tenth of it, at most
/// this much.
const MARGIN: Duration = Duration::from_secs(1);

/// What a transaction found holding this node's lease ([`HOLD_LEASE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The row exists and its lease runs.
    Current,
    /// The row exists but its lease ran out: not reaped yet (the lock keeps reapers off
    /// until the transaction ends), but no new work may start.
    Expired,
    /// The row is gone: a reaper took this node's tasks over.
    Reaped,
}

/// Runs [`HOLD_LEASE`] in `tx` for `node`; a reaped node's clock is marked [`lost`](LeaseClock::lost).
pub(crate) async fn hold(
    tx: &deadpool_postgres::Transaction<'_>,
    lease: &LeaseClock,
    node: uuid::Uuid,
) -> crate::store::Result<Held> {
    let stmt = tx
        .prepare_cached(HOLD_LEASE)
        .await
        .map_err(super::errors::pg_err)?;
    let row = tx
        .query_opt(&stmt, &[&node])
        .await
        .map_err(super::errors::pg_err)?;
    Ok(match row.map(|r| r.get::<_, bool>(0)) {
        Some(true) => Held::Current,
        Some(false) => Held::Expired,
        None => {
            // The heartbeat joins again now rather than at its next beat.
            lease.lost();
            lease.reaped.notify_one();
            Held::Reaped
        }
    })
}

/// Until when this node's lease is provably current (see the module docs).
pub(crate) struct LeaseClock {
    /// The lease minus the margin.
    trusted: Duration,
    /// `None`: not renewed since the node (re)joined, or found reaped.
    until: Mutex<Option<Instant>>,
    /// Wakes the heartbeat when a transaction found this node reaped, so it joins again now.
    pub(crate) reaped: Notify,
    /// Wakes [`run_fence`] when the lease was renewed or lost.
    changed: Notify,
}

impl LeaseClock {
    /// A clock for leases of `lease_ms` (none of it is trusted when it is not positive).
    pub(crate) fn new(lease_ms: i64) -> LeaseClock {
        let lease = Duration::from_millis(u64::try_from(lease_ms).unwrap_or(0));
        LeaseClock {
            trusted: lease.saturating_sub((lease / 10).min(MARGIN)),
            until: Mutex::new(None),
            reaped: Notify::new(),
            changed: Notify::new(),
        }
    }

    /// A renewal (or the join) sent at `at` succeeded.
    pub(crate) fn renewed(&self, at: Instant) {
        let t = at + self.trusted;
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
        self.changed.notify_one();
    }

    /// Until when the lease is provably current (`None`: not since the node was found reaped).
    fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease is provably current now.
    pub(crate) fn is_current(&self) -> bool {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|u| Instant::now() < u)
    }

    /// This node was found reaped: nothing is current until it joins again.
    pub(crate) fn lost(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.changed.notify_one();
    }
}

/// Gives up this node's running attempts the moment its lease is no longer provably current
/// (before any other node can reap it and run them): their runs stop, nothing is recorded for
/// them, and they come back to the queue (by [`reconcile`](super::reconcile) once the lease is
/// renewed, or by the reaper that takes the node over).
pub(crate) async fn run_fence(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        match shared.lease.until() {
            Some(until) if Instant::now() < until => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = shared.lease.changed.notified() => {}
                    _ = cancel.cancelled() => return,
                }
            }
            _ => {
                let n = shared.running.forget_all();
                if n > 0 {
                    tracing::warn!(
                        tasks = n,
                        "This node's lease is no longer provably current; gave up its running tasks"
                    );
                }
                tokio::select! {
                    _ = shared.lease.changed.notified() => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_current_from_the_renewal_for_the_trusted_part_only() {
        let clock = LeaseClock::new(60_000);
        assert!(!clock.is_current(), "never renewed");
        clock.renewed(Instant::now());
        assert!(clock.is_current());
        assert_eq!(clock.trusted, Duration::from_secs(59));
        // An older renewal does not move it back.
        clock.renewed(Instant::now() - Duration::from_secs(120));
        assert!(clock.is_current());
        clock.lost();
        assert!(!clock.is_current());
        clock.renewed(Instant::now() - Duration::from_secs(60));
        assert!(!clock.is_current(), "sent a lease ago: no longer provable");
        let none = LeaseClock::new(-1_000);
        none.renewed(Instant::now());
        assert!(!none.is_current());
    }
}
