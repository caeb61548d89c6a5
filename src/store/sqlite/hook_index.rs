//! The in-memory index of pending webhook deliveries, and when each is due.
//!
//! A delivery's durable state lives in its task's row (`tasks.wh_state`, `wh_attempts`,
//! `wh_next_at`: migration 0004), written by the same row update as the terminal status. What
//! the webhook sender needs to find the next due delivery without scanning the table is kept
//! here, in memory: one process owns the file, so a delivery in flight when it dies is simply
//! due again when [`super::startup`] rebuilds this from the rows.
//!
//! The writer thread adds one entry per finished task with a webhook, while it holds the ready
//! index's lock: that is a push onto `fresh` (due at once, in finish order), with no map or
//! ordered-set insert and no heap data (the task id and the URL are read from the task row when
//! the delivery is claimed). The ordered set and the map, dearer, are the claim's business (the
//! sender's task) and hold retries, deliveries in flight and what start-up found.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::store::OrgKey;

/// A pending webhook delivery as the index knows it: small and free of heap data.
#[derive(Debug, Clone)]
pub(crate) struct PendingHook {
    pub(crate) org: OrgKey,
    /// Finished attempts.
    pub(crate) attempts: u32,
    /// Handed to a sender and not recorded yet.
    pub(crate) in_flight: bool,
    /// The task's finish time (purge removes the delivery with the task).
    pub(crate) created_ms: i64,
}

impl PendingHook {
    /// The delivery of a task that just finished (`now`): never attempted, due at once.
    pub(crate) fn fresh(org: OrgKey, now: i64) -> PendingHook {
        PendingHook {
            org,
            attempts: 0,
            in_flight: false,
            created_ms: now,
        }
    }
}

/// Deliveries that became pending in a group, `(seq, hook)`: added to the index's `fresh`
/// queue once the group committed.
pub(crate) type NewHooks = Vec<(i64, PendingHook)>;

/// The pending deliveries (`tasks.wh_state = 0`) and when each is due (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HookIndex {
    /// Never attempted, due at their finish time (`created_ms`), oldest first.
    pub(crate) fresh: VecDeque<(i64, PendingHook)>,
    /// `(due, seq)` of the pending deliveries in `pending` that are not in flight.
    pub(crate) due: BTreeSet<(i64, i64)>,
    pub(crate) pending: HashMap<i64, PendingHook>,
}

impl HookIndex {
    /// Pending deliveries (in flight included).
    pub(crate) fn len(&self) -> usize {
        self.fresh.len() + self.pending.len()
    }

    /// Adds a delivery due at `due` (start-up).
    pub(crate) fn add(&mut self, seq: i64, due: i64, hook: PendingHook) {
        self.due.insert((due, seq));
        self.pending.insert(seq, hook);
    }

    /// Takes up to `max` deliveries due at `now`, earliest first, and marks them in flight:
    /// `(seq, org, attempt number)`.
    pub(crate) fn take_due(&mut self, now: i64, max: usize) -> Vec<(i64, OrgKey, u32)> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let fresh = self.fresh.front().map(|(_, h)| h.created_ms);
            let queued = self.due.first().map(|&(due, _)| due);
            match (fresh, queued) {
                (Some(f), q) if f <= now && q.is_none_or(|q| f <= q) => {
                    let Some((seq, mut h)) = self.fresh.pop_front() else {
                        break;
                    };
                    h.in_flight = true;
                    taken.push((seq, h.org, h.attempts + 1));
                    self.pending.insert(seq, h);
                }
                (_, Some(q)) if q <= now => {
                    let Some((due, seq)) = self.due.pop_first() else {
                        break;
                    };
                    debug_assert_eq!(due, q);
                    if let Some(h) = self.pending.get_mut(&seq)
                        && !h.in_flight
                    {
                        h.in_flight = true;
                        taken.push((seq, h.org, h.attempts + 1));
                    }
                }
                _ => break,
            }
        }
        taken
    }

    /// The earliest due time of a delivery not in flight.
    pub(crate) fn next_due(&self) -> Option<i64> {
        let fresh = self.fresh.front().map(|(_, h)| h.created_ms);
        let queued = self.due.first().map(|&(due, _)| due);
        match (fresh, queued) {
            (Some(f), Some(q)) => Some(f.min(q)),
            (f, q) => f.or(q),
        }
    }

    /// Forgets the deliveries of tasks that finished before `cutoff_ms` (purged with them),
    /// except those in flight (their record will find no row to change).
    pub(crate) fn purge(&mut self, cutoff_ms: i64) {
        self.fresh.retain(|(_, h)| h.created_ms >= cutoff_ms);
        self.pending
            .retain(|_, h| h.created_ms >= cutoff_ms || h.in_flight);
        let pending = &self.pending;
        self.due.retain(|(_, seq)| pending.contains_key(seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(created_ms: i64) -> PendingHook {
        PendingHook {
            org: 1,
            attempts: 0,
            in_flight: false,
            created_ms,
        }
    }

    #[test]
    fn the_hook_index_hands_out_fresh_and_retried_deliveries_earliest_first_and_once() {
        let mut idx = HookIndex::default();
        idx.fresh.push_back((1, hook(100)));
        idx.fresh.push_back((2, hook(300)));
        // Seq 3 failed once and is due again at 200.
        idx.add(
            3,
            200,
            PendingHook {
                attempts: 1,
                ..hook(50)
            },
        );
        assert_eq!(idx.next_due(), Some(100));
        assert_eq!(idx.take_due(99, 10), vec![], "nothing due yet");
        assert_eq!(
            idx.take_due(1_000, 10),
            vec![(1, 1, 1), (3, 1, 2), (2, 1, 1)],
            "earliest due first, attempt numbers counted"
        );
        assert_eq!(
            idx.take_due(1_000, 10),
            vec![],
            "in flight: not handed out twice"
        );
        assert_eq!(idx.next_due(), None);
        assert!(idx.pending.values().all(|h| h.in_flight));
        // Purge forgets what finished before the cutoff, except what is in flight.
        idx.fresh.push_back((4, hook(150)));
        idx.fresh.push_back((5, hook(400)));
        idx.purge(200);
        assert_eq!(
            idx.fresh.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(idx.pending.len(), 3, "in-flight deliveries stay");
        assert_eq!(idx.take_due(1_000, 1), vec![(5, 1, 1)], "at most max");
    }
}
