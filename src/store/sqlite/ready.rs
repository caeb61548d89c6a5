//! The in-memory ready index of the embedded store.
//!
//! The embedded (SQLite) store is owned by one process, so it can keep the scheduling state in
//! memory and write only state changes to disk: claiming never rescans the table. This module
//! is pure (no I/O, no clock) so its invariants are property-tested directly:
//!
//! * per organization, picks come out by priority (10 first), then by sequence (FIFO);
//! * an organization's `processing` plus its sync calls in flight (`POST /v1/monitor/*`, which
//!   hold a slot for their whole duration: [`ReadySet::sync_enter`]) never exceeds its
//!   concurrency limit; a lane's `max_in_flight` likewise counts running tasks plus sync
//!   attempts ([`ReadySet::sync_lane_enter`]);
//! * organizations with runnable work are served least-recently-served first, one task per
//!   turn: a round-robin in which an organization that just got work goes ahead of those
//!   that were served meanwhile, so a single new task waits for at most one free slot;
//! * every pick is matched by exactly one `finish` (or `requeue`), which frees the slot;
//! * with [`Lanes`](crate::store::Lanes), a task whose lane has no room (its engine's tasks in
//!   flight at `max_in_flight`, or this claim already started the lane's `starts`) is skipped
//!   without losing its place: its organization is offered its best task of a lane with room
//!   (strict priority, then FIFO, among runnable tasks), and an organization with nothing
//!   runnable keeps its turn in the round-robin, so it is first once room frees.
//!
//! Ready tasks are kept in one heap per (priority, task type) of each organization: a blocked
//! lane's tasks stay where they are, and the best runnable task is the smallest head among the
//! open types of the highest priority that has one (a type holds one heap per priority it uses,
//! so the usual single-type organization looks at one heap per pick, as before).
//!
//! Memory: one 16-byte heap entry per queued task (sequence and cost), so a million queued tasks
//! cost about 16 MB here.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use crate::store::lanes::{KINDS, Room, lane_of_kind};
use crate::store::{Lanes, OrgKey};

/// Ready heaps of one priority: one min-heap on `(seq, cost)` per task type present.
type Kinds = Vec<(u8, BinaryHeap<Reverse<(i64, i64)>>)>;

/// Limits and balance of an organization, as loaded from the store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrgLimits {
    pub(crate) concurrency: u32,
    pub(crate) queue_limit: i64,
    pub(crate) credits: i64,
}

#[derive(Debug, Default)]
struct OrgState {
    /// Ready heaps, index `priority - 1`, per task type.
    ready: [Kinds; 10],
    /// Ready tasks per priority, index `priority - 1`.
    ready_n: [u32; 10],
    ready_count: u64,
    /// Tasks waiting for a retry: seq → (priority, cost, task type).
    delayed: HashMap<i64, (u8, i64, u8)>,
    /// Queued tasks per priority (ready and delayed), index `priority - 1`.
    per_prio: [u64; 10],
    /// Submitted but not yet committed; counts toward the queue limit.
    pending: u64,
    processing: u32,
    /// Sync calls in flight ([`ReadySet::sync_enter`]): they hold slots like running tasks.
    sync: u32,
    concurrency: u32,
    queue_limit: i64,
    /// Committed balance.
    credits: i64,
    /// Credits reserved by running tasks and sync calls in flight.
    reserved: i64,
    /// Turn at which it was last served; its key in the ring while it is runnable.
    served_at: u64,
    in_ring: bool,
}

impl OrgState {
    fn queued(&self) -> u64 {
        self.ready_count + self.delayed.len() as u64
    }
    /// Slots in use: running tasks plus sync calls in flight.
    fn used(&self) -> u32 {
        self.processing + self.sync
    }
    fn runnable(&self) -> bool {
        self.ready_count > 0 && self.used() < self.concurrency
    }

    /// Adds a ready task.
    fn push_ready(&mut self, seq: i64, priority: u8, cost: i64, kind: u8) {
        let p = idx(priority);
        let entry = Reverse((seq, cost));
        match self.ready[p].iter_mut().find(|(k, _)| *k == kind) {
            Some((_, heap)) => heap.push(entry),
            None => self.ready[p].push((kind, BinaryHeap::from(vec![entry]))),
        }
        self.ready_n[p] += 1;
        self.ready_count += 1;
    }

    /// The best ready task among the task types in `open` (bit `k`: type `k`): the highest
    /// priority, then the lowest seq. Returns `(priority index, heap index)`.
    fn best(&self, open: u8) -> Option<(usize, usize)> {
        for p in (0..10).rev() {
            if self.ready_n[p] == 0 {
                continue;
            }
            let mut best: Option<(i64, usize)> = None;
            for (i, (kind, heap)) in self.ready[p].iter().enumerate() {
                if open & (1 << kind) == 0 {
                    continue;
                }
                if let Some(Reverse((seq, _))) = heap.peek()
                    && best.is_none_or(|(b, _)| *seq < b)
                {
                    best = Some((*seq, i));
                }
            }
            if let Some((_, i)) = best {
                return Some((p, i));
            }
        }
        None
    }
}

/// What a claim decided for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    pub(crate) org: OrgKey,
    pub(crate) seq: i64,
    pub(crate) priority: u8,
    /// What its pickup reserves: the task's price plus the most its engine may add after the
    /// run (every `cost` in this index is that reservation, not the price).
    pub(crate) cost: i64,
    /// Its task type (position in `TaskType::ALL`, its stored code).
    pub(crate) kind: u8,
    /// `false`: the cost did not fit the live balance; the task must be FAILED with
    /// `INSUFFICIENT_CREDITS` (it holds no slot).
    pub(crate) run: bool,
}

/// What [`ReadySet::sync_enter`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncEnter {
    /// Admitted: the limit, and the slots in use with this call.
    Admitted { limit: u32, current: u32 },
    /// The balance minus reservations is below the cost.
    Credits,
    /// No free slot: the limit, and the slots in use plus this refused call.
    Limit { limit: u32, current: u32 },
}

/// Per-organization numbers for the status endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrgCounts {
    pub(crate) queued: u64,
    pub(crate) processing: u64,
    /// Sync calls in flight (slots they hold beside `processing`).
    pub(crate) sync: u64,
    pub(crate) by_priority: Vec<(u8, u64)>,
    pub(crate) concurrency: u32,
    pub(crate) credits: i64,
}

/// The ready index (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ReadySet {
    orgs: HashMap<OrgKey, OrgState>,
    /// Runnable organizations by `(served_at, org)`: the first was served longest ago.
    ring: BTreeSet<(u64, OrgKey)>,
    turn: u64,
    /// Retry timers: (due, org, seq). Entries of cleared tasks are skipped lazily.
    timers: BinaryHeap<Reverse<(i64, OrgKey, i64)>>,
    total_queued: u64,
    total_processing: u64,
    /// Tasks running per task type, over every organization (a lane's in-flight count).
    processing_by_kind: [u32; KINDS],
    /// Sync attempts in flight per task type ([`ReadySet::sync_lane_enter`]): a lane's
    /// `max_in_flight` counts them beside `processing_by_kind`.
    sync_by_kind: [u32; KINDS],
    /// Picks returned with `run: false` whose FAILED row is not committed yet: still QUEUED
    /// in the database, so [`ReadySet::totals`] counts them as queued until [`ReadySet::settle`].
    settling: u64,
}

fn idx(priority: u8) -> usize {
    usize::from(priority.clamp(1, 10) - 1)
}

/// A stored task type code as an index (unknown codes count as the last type).
fn kind_of(code: u8) -> u8 {
    code.min(KINDS as u8 - 1)
}

impl ReadySet {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn knows(&self, org: OrgKey) -> bool {
        self.orgs.contains_key(&org)
    }

    /// Makes an organization known, or refreshes its limits (balance included).
    pub(crate) fn set_org(&mut self, org: OrgKey, limits: OrgLimits) {
        let st = self.orgs.entry(org).or_default();
        st.concurrency = limits.concurrency;
        st.queue_limit = limits.queue_limit;
        st.credits = limits.credits;
        self.mark(org);
    }

    fn mark(&mut self, org: OrgKey) {
        if let Some(st) = self.orgs.get_mut(&org)
            && !st.in_ring
            && st.runnable()
        {
            st.in_ring = true;
            self.ring.insert((st.served_at, org));
        }
    }

    /// Reserves room for `n` tasks under the queue limit; `Err(limit)` if they do not fit.
    pub(crate) fn reserve_submission(&mut self, org: OrgKey, n: u64) -> Result<(), i64> {
        let st = self.orgs.entry(org).or_default();
        if (st.queued() + st.pending + n) as i64 > st.queue_limit {
            return Err(st.queue_limit);
        }
        st.pending += n;
        Ok(())
    }

    /// Releases a reservation made by [`reserve_submission`](Self::reserve_submission).
    pub(crate) fn release_submission(&mut self, org: OrgKey, n: u64) {
        if let Some(st) = self.orgs.get_mut(&org) {
            st.pending = st.pending.saturating_sub(n);
        }
    }

    /// Sets the committed balance (a new billing cycle).
    pub(crate) fn set_credits(&mut self, org: OrgKey, credits: i64) {
        if let Some(st) = self.orgs.get_mut(&org) {
            st.credits = credits;
        }
        self.mark(org);
    }

    /// The committed balance, for the submission-time credit check.
    pub(crate) fn credits(&self, org: OrgKey) -> i64 {
        self.orgs.get(&org).map_or(0, |s| s.credits)
    }

    /// Adds a committed QUEUED task (a new one, one restored at start-up, or one requeued at
    /// its own place) of task type `kind`.
    pub(crate) fn push(&mut self, org: OrgKey, seq: i64, priority: u8, cost: i64, kind: u8) {
        let st = self.orgs.entry(org).or_default();
        st.push_ready(seq, priority, cost, kind_of(kind));
        st.per_prio[idx(priority)] += 1;
        self.total_queued += 1;
        self.mark(org);
    }

    /// Adds a QUEUED task waiting for a retry until `due`.
    pub(crate) fn push_delayed(
        &mut self,
        org: OrgKey,
        seq: i64,
        priority: u8,
        cost: i64,
        kind: u8,
        due: i64,
    ) {
        let st = self.orgs.entry(org).or_default();
        st.delayed.insert(seq, (priority, cost, kind_of(kind)));
        st.per_prio[idx(priority)] += 1;
        self.total_queued += 1;
        self.timers.push(Reverse((due, org, seq)));
    }

    /// Counts a task recovered as PROCESSING (used only by tests and recovery bookkeeping).
    pub(crate) fn earliest_timer(&self) -> Option<i64> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Moves retries whose time has come to the ready heaps.
    pub(crate) fn promote_due(&mut self, now: i64) {
        while let Some(Reverse((due, org, seq))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(st) = self.orgs.get_mut(&org) else {
                continue;
            };
            if let Some((priority, cost, kind)) = st.delayed.remove(&seq) {
                st.push_ready(seq, priority, cost, kind);
                self.mark(org);
            }
        }
    }

    /// Picks up to `max` tasks to run, fairly (see the module docs). Tasks whose cost does not
    /// fit the balance are returned with `run: false` and do not count toward `max`.
    #[cfg(test)]
    pub(crate) fn claim(&mut self, max: usize) -> Vec<Pick> {
        self.claim_in(max, &Lanes::default())
    }

    /// [`claim`](Self::claim) within the lanes' room: a task whose lane has none is skipped
    /// in place, and an organization with nothing runnable keeps its turn.
    pub(crate) fn claim_in(&mut self, max: usize, lanes: &Lanes) -> Vec<Pick> {
        let mut room = Room::new(lanes, &self.in_flight_by_kind());
        let mut picks = Vec::new();
        let mut started = 0;
        // Organizations whose ready tasks are all in lanes without room: back in the ring at
        // their old turn once the claim is over.
        let mut blocked = Vec::new();
        while started < max && room.open != 0 {
            let Some((at, org)) = self.ring.pop_first() else {
                break;
            };
            let Some(st) = self.orgs.get_mut(&org) else {
                continue;
            };
            let best = if st.runnable() {
                st.best(room.open)
            } else {
                None
            };
            let Some((p, i)) = best else {
                if st.runnable() {
                    blocked.push((at, org));
                    continue;
                }
                st.in_ring = false;
                self.turn += 1;
                st.served_at = self.turn;
                continue;
            };
            st.in_ring = false;
            self.turn += 1;
            st.served_at = self.turn;
            let (kind, heap) = &mut st.ready[p][i];
            let kind = *kind;
            let Some(Reverse((seq, cost))) = heap.pop() else {
                continue;
            };
            st.ready_n[p] -= 1;
            st.ready_count -= 1;
            st.per_prio[p] -= 1;
            self.total_queued -= 1;
            let run = st.credits - st.reserved >= cost;
            if run {
                st.processing += 1;
                st.reserved += cost;
                self.total_processing += 1;
                self.processing_by_kind[usize::from(kind)] += 1;
                room.take(kind);
                started += 1;
            } else {
                self.settling += 1;
            }
            picks.push(Pick {
                org,
                seq,
                priority: p as u8 + 1,
                cost,
                kind,
                run,
            });
            self.mark(org);
        }
        self.ring.extend(blocked);
        picks
    }

    /// Ends a running pick of task type `kind`: frees its slot and reservation, charges
    /// `charged`.
    pub(crate) fn finish(&mut self, org: OrgKey, kind: u8, cost: i64, charged: i64) {
        if let Some(st) = self.orgs.get_mut(&org) {
            st.processing = st.processing.saturating_sub(1);
            st.reserved -= cost;
            st.credits -= charged;
            self.total_processing = self.total_processing.saturating_sub(1);
            let k = &mut self.processing_by_kind[usize::from(kind_of(kind))];
            *k = k.saturating_sub(1);
        }
        self.mark(org);
    }

    /// Tasks running plus sync attempts in flight, per task type (what a lane's
    /// `max_in_flight` counts).
    fn in_flight_by_kind(&self) -> [u32; KINDS] {
        let mut n = self.processing_by_kind;
        for (n, s) in n.iter_mut().zip(&self.sync_by_kind) {
            *n += s;
        }
        n
    }

    /// Admits a sync call costing `cost` (see [`TaskQueue::sync_enter`]): the balance minus
    /// reservations first, then a slot. Admitted: the slot and the reservation are taken.
    ///
    /// [`TaskQueue::sync_enter`]: crate::store::TaskQueue::sync_enter
    pub(crate) fn sync_enter(&mut self, org: OrgKey, cost: i64) -> SyncEnter {
        let Some(st) = self.orgs.get_mut(&org) else {
            return SyncEnter::Limit {
                limit: 0,
                current: 1,
            };
        };
        if st.credits - st.reserved < cost {
            return SyncEnter::Credits;
        }
        if st.used() >= st.concurrency {
            return SyncEnter::Limit {
                limit: st.concurrency,
                current: st.used() + 1,
            };
        }
        st.sync += 1;
        st.reserved += cost;
        SyncEnter::Admitted {
            limit: st.concurrency,
            current: st.used(),
        }
    }

    /// Ends a sync call admitted by [`ReadySet::sync_enter`]: frees its slot and its
    /// reservation, and takes `charged` (already committed) off the balance.
    pub(crate) fn sync_leave(&mut self, org: OrgKey, cost: i64, charged: i64) {
        if let Some(st) = self.orgs.get_mut(&org) {
            st.sync = st.sync.saturating_sub(1);
            st.reserved -= cost;
            st.credits -= charged;
        }
        self.mark(org);
    }

    /// Takes a lane place for a sync attempt of task type `kind` if its lane has room (see
    /// [`TaskQueue::sync_lane_enter`]); a type without a capped lane always has room, and its
    /// place is counted all the same so the leave is unconditional.
    ///
    /// [`TaskQueue::sync_lane_enter`]: crate::store::TaskQueue::sync_lane_enter
    pub(crate) fn sync_lane_enter(&mut self, lanes: &Lanes, kind: u8) -> bool {
        let kind = usize::from(kind_of(kind));
        if let Some(l) = lane_of_kind(lanes, kind)
            && let Some(m) = lanes.lanes[l].max_in_flight
        {
            let in_flight = self.in_flight_by_kind();
            let n: u32 = (0..KINDS)
                .filter(|&k| lane_of_kind(lanes, k) == Some(l))
                .map(|k| in_flight[k])
                .sum();
            if n >= m {
                return false;
            }
        }
        self.sync_by_kind[kind] += 1;
        true
    }

    /// Gives back a place taken by [`ReadySet::sync_lane_enter`].
    pub(crate) fn sync_lane_leave(&mut self, kind: u8) {
        let k = &mut self.sync_by_kind[usize::from(kind_of(kind))];
        *k = k.saturating_sub(1);
    }

    /// Tasks of each task type running now (tests).
    #[cfg(test)]
    pub(crate) fn processing_by_kind(&self) -> [u32; KINDS] {
        self.processing_by_kind
    }

    /// Takes every QUEUED task of `org` (ready and delayed) out of the index; returns their
    /// `(seq, priority, cost, kind)` so a failed delete can put them back.
    pub(crate) fn take_queued(&mut self, org: OrgKey) -> Vec<(i64, u8, i64, u8)> {
        let Some(st) = self.orgs.get_mut(&org) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(st.queued() as usize);
        for (p, kinds) in st.ready.iter_mut().enumerate() {
            for (kind, heap) in kinds.iter_mut() {
                let kind = *kind;
                out.extend(
                    heap.drain()
                        .map(|Reverse((seq, cost))| (seq, p as u8 + 1, cost, kind)),
                );
            }
        }
        out.extend(
            st.delayed
                .drain()
                .map(|(seq, (p, cost, kind))| (seq, p, cost, kind)),
        );
        st.ready_n = [0; 10];
        st.ready_count = 0;
        st.per_prio = [0; 10];
        self.total_queued -= out.len() as u64;
        out
    }

    pub(crate) fn counts(&self, org: OrgKey) -> OrgCounts {
        let Some(st) = self.orgs.get(&org) else {
            return OrgCounts {
                queued: 0,
                processing: 0,
                sync: 0,
                by_priority: Vec::new(),
                concurrency: 0,
                credits: 0,
            };
        };
        let by_priority = (0..10)
            .rev()
            .filter(|&p| st.per_prio[p] > 0)
            .map(|p| (p as u8 + 1, st.per_prio[p]))
            .collect();
        OrgCounts {
            queued: st.queued(),
            processing: u64::from(st.processing),
            sync: u64::from(st.sync),
            by_priority,
            concurrency: st.concurrency,
            credits: st.credits,
        }
    }

    /// Queued (including picks still settling) and processing, over every organization.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.total_queued + self.settling, self.total_processing)
    }

    /// The claim that returned `picks` has committed or failed: its rejected picks are no
    /// longer counted as queued by [`ReadySet::totals`] (a failed claim pushes them back).
    pub(crate) fn settle(&mut self, picks: &[Pick]) {
        let n = picks.iter().filter(|p| !p.run).count() as u64;
        self.settling = self.settling.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(concurrency: u32) -> OrgLimits {
        OrgLimits {
            concurrency,
            queue_limit: 1_000_000,
            credits: 1_000_000,
        }
    }

    #[test]
    fn higher_priority_runs_first_then_fifo() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(10));
        r.push(1, 1, 1, 1, 0);
        r.push(1, 2, 5, 1, 0);
        r.push(1, 3, 10, 1, 0);
        r.push(1, 4, 5, 1, 0);
        let seqs: Vec<i64> = r.claim(10).iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![3, 2, 4, 1]);
    }

    #[test]
    fn the_concurrency_cap_holds_and_a_finish_frees_the_slot() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(2));
        for s in 0..5 {
            r.push(1, s, 1, 1, 0);
        }
        assert_eq!(r.claim(10).len(), 2);
        assert!(r.claim(10).is_empty());
        r.finish(1, 0, 1, 1);
        assert_eq!(r.claim(10).len(), 1);
        assert_eq!(r.counts(1).processing, 2);
    }

    #[test]
    fn a_single_task_of_a_second_org_goes_next() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(100));
        r.set_org(2, limits(100));
        for s in 0..1000 {
            r.push(1, s, 10, 1, 0);
        }
        assert_eq!(r.claim(1)[0].org, 1);
        r.push(2, 5000, 1, 1, 0);
        assert_eq!(r.claim(1)[0].org, 2);
    }

    #[test]
    fn a_task_that_no_longer_fits_the_balance_is_rejected_without_a_slot() {
        let mut r = ReadySet::new();
        r.set_org(
            1,
            OrgLimits {
                concurrency: 5,
                queue_limit: 100,
                credits: 7,
            },
        );
        r.push(1, 1, 1, 5, 0);
        r.push(1, 2, 1, 5, 0);
        let picks = r.claim(5);
        assert_eq!(
            picks.iter().map(|p| p.run).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert_eq!(r.counts(1).processing, 1);
        // The rejected task is still QUEUED in the database until its claim commits.
        assert_eq!(r.totals(), (1, 1));
        r.settle(&picks);
        assert_eq!(r.totals(), (0, 1));
    }

    #[test]
    fn the_queue_limit_counts_delayed_and_pending_tasks() {
        let mut r = ReadySet::new();
        r.set_org(
            1,
            OrgLimits {
                concurrency: 1,
                queue_limit: 3,
                credits: 100,
            },
        );
        r.push(1, 1, 1, 1, 0);
        r.push_delayed(1, 2, 1, 1, 0, 100);
        r.reserve_submission(1, 1).expect("fits");
        assert_eq!(r.reserve_submission(1, 1), Err(3));
        r.release_submission(1, 1);
        assert!(r.reserve_submission(1, 1).is_ok());
    }

    #[test]
    fn a_retry_becomes_runnable_only_when_due_and_clear_takes_it() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(1));
        r.push_delayed(1, 7, 3, 1, 0, 100);
        assert!(r.claim(1).is_empty());
        r.promote_due(99);
        assert!(r.claim(1).is_empty());
        r.promote_due(100);
        assert_eq!(r.claim(1)[0].seq, 7);
        r.finish(1, 0, 1, 0);
        r.push_delayed(1, 8, 3, 1, 0, 200);
        assert_eq!(r.take_queued(1).len(), 1);
        r.promote_due(300);
        assert!(r.claim(1).is_empty());
        assert_eq!(r.totals(), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { org: i64, priority: u8 },
        Claim(usize),
        FinishOne(usize),
        RetryOne(usize),
        Promote,
        Clear(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4i64, 1..=10u8).prop_map(|(org, priority)| Op::Push { org, priority }),
            3 => (0..6usize).prop_map(Op::Claim),
            3 => any::<usize>().prop_map(Op::FinishOne),
            1 => any::<usize>().prop_map(Op::RetryOne),
            1 => Just(Op::Promote),
            1 => (0..4i64).prop_map(Op::Clear),
        ]
    }

    proptest! {
        /// Random workloads: picks respect order and caps, round-robin holds, and when
        /// everything has finished no slot is left taken.
        #[test]
        fn scheduling_invariants_hold(ops in proptest::collection::vec(op(), 1..300), caps in proptest::collection::vec(1..4u32, 4)) {
            let mut r = ReadySet::new();
            for (org, cap) in caps.iter().enumerate() {
                r.set_org(org as i64, limits(*cap));
            }
            // Model: queued (seq, priority) per org, running picks.
            let mut queued: HashMap<i64, Vec<(i64, u8)>> = HashMap::new();
            let mut delayed: Vec<(i64, i64, u8)> = Vec::new();
            let mut running: Vec<Pick> = Vec::new();
            let mut seq = 0i64;
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Push { org, priority } => {
                        seq += 1;
                        r.push(org, seq, priority, 1, 0);
                        queued.entry(org).or_default().push((seq, priority));
                    }
                    Op::Claim(n) => {
                        let picks = r.claim(n);
                        prop_assert!(picks.len() <= n);
                        let orgs_with_work: Vec<i64> = (0..4).filter(|o| {
                            let q = queued.get(o).map_or(0, |v| v.len());
                            let p = running.iter().filter(|x| x.org == *o).count() as u32;
                            q > 0 && p < caps[*o as usize]
                        }).collect();
                        // Round-robin: no org gets a second pick in one claim while another
                        // org that could run got none.
                        let mut per_org: HashMap<i64, usize> = HashMap::new();
                        for p in &picks { *per_org.entry(p.org).or_default() += 1; }
                        if per_org.values().any(|&c| c > 1) {
                            for o in &orgs_with_work {
                                let served = per_org.get(o).copied().unwrap_or(0) > 0;
                                prop_assert!(served, "org {} had runnable work but got nothing while another got two", o);
                            }
                        }
                        for p in picks {
                            prop_assert!(p.run);
                            let q = queued.get_mut(&p.org).expect("org has queue");
                            // The pick is the best queued task of its org.
                            let best = q.iter().copied().max_by_key(|&(s, pr)| (pr, Reverse(s))).expect("non-empty");
                            prop_assert_eq!((p.seq, p.priority), best);
                            q.retain(|&(s, _)| s != p.seq);
                            running.push(p);
                            let n_run = running.iter().filter(|x| x.org == p.org).count() as u32;
                            prop_assert!(n_run <= caps[p.org as usize]);
                        }
                    }
                    Op::FinishOne(i) => {
                        if !running.is_empty() {
                            let p = running.remove(i % running.len());
                            r.finish(p.org, 0, p.cost, 0);
                        }
                    }
                    Op::RetryOne(i) => {
                        if !running.is_empty() {
                            let p = running.remove(i % running.len());
                            r.finish(p.org, 0, p.cost, 0);
                            r.push_delayed(p.org, p.seq, p.priority, p.cost, 0, now + 5);
                            delayed.push((p.org, p.seq, p.priority));
                        }
                    }
                    Op::Promote => {
                        now += 10;
                        r.promote_due(now);
                        for (org, s, pr) in delayed.drain(..) {
                            queued.entry(org).or_default().push((s, pr));
                        }
                    }
                    Op::Clear(org) => {
                        let taken = r.take_queued(org);
                        let expect = queued.remove(&org).map_or(0, |v| v.len())
                            + delayed.iter().filter(|d| d.0 == org).count();
                        delayed.retain(|d| d.0 != org);
                        prop_assert_eq!(taken.len(), expect);
                    }
                }
                for org in 0..4i64 {
                    let c = r.counts(org);
                    let p = running.iter().filter(|x| x.org == org).count() as u64;
                    prop_assert_eq!(c.processing, p);
                    prop_assert!(c.processing <= u64::from(caps[org as usize]));
                    let q = queued.get(&org).map_or(0, |v| v.len()) + delayed.iter().filter(|d| d.0 == org).count();
                    prop_assert_eq!(c.queued, q as u64);
                    prop_assert_eq!(c.by_priority.iter().map(|x| x.1).sum::<u64>(), q as u64);
                }
            }
            // Drain everything: no slot is leaked.
            for p in running.drain(..) {
                r.finish(p.org, 0, p.cost, 0);
            }
            now += 1_000;
            r.promote_due(now);
            loop {
                let picks = r.claim(100);
                if picks.is_empty() { break; }
                for p in picks { r.finish(p.org, 0, p.cost, 0); }
            }
            prop_assert_eq!(r.totals(), (0, 0));
            for org in 0..4 { prop_assert_eq!(r.counts(org).processing, 0); }
        }
    }

    #[test]
    fn a_sync_call_holds_a_slot_that_claims_count() {
        let mut r = ReadySet::new();
        r.set_org(
            1,
            OrgLimits {
                concurrency: 2,
                queue_limit: 100,
                credits: 10,
            },
        );
        for s in 0..5 {
            r.push(1, s, 1, 1, 0);
        }
        assert_eq!(
            r.sync_enter(1, 3),
            SyncEnter::Admitted {
                limit: 2,
                current: 1
            }
        );
        assert_eq!(r.claim(10).len(), 1);
        assert_eq!(
            r.sync_enter(1, 1),
            SyncEnter::Limit {
                limit: 2,
                current: 3
            }
        );
        // 10 credits: 3 reserved by the call, 1 by the task: 6 left. Credits are checked first.
        assert_eq!(r.sync_enter(1, 7), SyncEnter::Credits);
        r.sync_leave(1, 3, 2);
        assert_eq!(r.credits(1), 8);
        assert_eq!(r.claim(10).len(), 1);
        let c = r.counts(1);
        assert_eq!((c.processing, c.sync), (2, 0));
    }

    #[derive(Debug, Clone)]
    enum SyncOp {
        Push { org: i64 },
        Claim(usize),
        FinishOne(usize),
        Enter { org: i64, cost: i64 },
        Leave { i: usize, charge: bool },
    }

    fn sync_op() -> impl Strategy<Value = SyncOp> {
        prop_oneof![
            3 => (0..3i64).prop_map(|org| SyncOp::Push { org }),
            2 => (0..4usize).prop_map(SyncOp::Claim),
            2 => any::<usize>().prop_map(SyncOp::FinishOne),
            3 => (0..3i64, 0..30i64).prop_map(|(org, cost)| SyncOp::Enter { org, cost }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, charge)| SyncOp::Leave { i, charge }),
        ]
    }

    proptest! {
        /// Random mixes of claims, finishes and sync calls (with and without a charge): running
        /// tasks plus sync calls never exceed an organization's limit, the admission's numbers
        /// are right, reservations always equal what is in flight, the balance goes down by
        /// exactly what was charged, and once everything ended no slot is left taken.
        #[test]
        fn sync_calls_share_the_cap_with_tasks(
            ops in proptest::collection::vec(sync_op(), 1..300),
            caps in proptest::collection::vec(1..4u32, 3),
        ) {
            const START: i64 = 200;
            let mut r = ReadySet::new();
            for (org, cap) in caps.iter().enumerate() {
                r.set_org(org as i64, OrgLimits { concurrency: *cap, queue_limit: 1_000, credits: START });
            }
            let mut running: Vec<Pick> = Vec::new();
            // (org, cost) of the sync calls in flight.
            let mut calls: Vec<(i64, i64)> = Vec::new();
            let mut charged = [0i64; 3];
            let mut seq = 0i64;
            for op in ops {
                match op {
                    SyncOp::Push { org } => {
                        seq += 1;
                        r.push(org, seq, 1, 2, 0);
                    }
                    SyncOp::Claim(n) => {
                        for p in r.claim(n) {
                            if p.run { running.push(p); }
                        }
                    }
                    SyncOp::FinishOne(i) => {
                        if !running.is_empty() {
                            let p = running.remove(i % running.len());
                            r.finish(p.org, 0, p.cost, p.cost);
                            charged[p.org as usize] += p.cost;
                        }
                    }
                    SyncOp::Enter { org, cost } => {
                        let o = org as usize;
                        let busy = (running.iter().filter(|p| p.org == org).count()
                            + calls.iter().filter(|c| c.0 == org).count()) as u32;
                        let reserved: i64 = running.iter().filter(|p| p.org == org).map(|p| p.cost).sum::<i64>()
                            + calls.iter().filter(|c| c.0 == org).map(|c| c.1).sum::<i64>();
                        let got = r.sync_enter(org, cost);
                        let expect = if START - charged[o] - reserved < cost {
                            SyncEnter::Credits
                        } else if busy >= caps[o] {
                            SyncEnter::Limit { limit: caps[o], current: busy + 1 }
                        } else {
                            SyncEnter::Admitted { limit: caps[o], current: busy + 1 }
                        };
                        prop_assert_eq!(got, expect);
                        if matches!(got, SyncEnter::Admitted { .. }) {
                            calls.push((org, cost));
                        }
                    }
                    SyncOp::Leave { i, charge } => {
                        if !calls.is_empty() {
                            let (org, cost) = calls.remove(i % calls.len());
                            let amount = if charge { cost } else { 0 };
                            r.sync_leave(org, cost, amount);
                            charged[org as usize] += amount;
                        }
                    }
                }
                for org in 0..3i64 {
                    let o = org as usize;
                    let c = r.counts(org);
                    let n_calls = calls.iter().filter(|c| c.0 == org).count() as u64;
                    prop_assert_eq!(c.sync, n_calls);
                    prop_assert!(c.processing + c.sync <= u64::from(caps[o]));
                    prop_assert_eq!(c.credits, START - charged[o]);
                    let reserved: i64 = running.iter().filter(|p| p.org == org).map(|p| p.cost).sum::<i64>()
                        + calls.iter().filter(|c| c.0 == org).map(|c| c.1).sum::<i64>();
                    prop_assert_eq!(r.orgs[&org].reserved, reserved);
                }
            }
            for p in running.drain(..) {
                r.finish(p.org, 0, p.cost, 0);
            }
            for (org, cost) in calls.drain(..) {
                r.sync_leave(org, cost, 0);
            }
            for org in 0..3i64 {
                let c = r.counts(org);
                prop_assert_eq!((c.processing, c.sync), (0, 0));
                prop_assert_eq!(r.orgs[&org].reserved, 0);
                prop_assert_eq!(c.credits, START - charged[org as usize]);
            }
        }
    }

    use crate::store::{Lane, Lanes};

    const CHATGPT: u8 = 4;
    const GEMINI: u8 = 3;

    /// Lanes: `lane_of[kind]` for the listed kinds, one lane per `(max_in_flight, starts)`.
    fn lanes(of: &[(u8, usize)], limits: &[(Option<u32>, Option<u32>)]) -> Lanes {
        let mut l = Lanes::default();
        for &(k, lane) in of {
            l.lane_of[usize::from(k)] = Some(lane);
        }
        l.lanes = limits
            .iter()
            .enumerate()
            .map(|(i, &(max_in_flight, starts))| Lane {
                name: format!("engine{i}"),
                max_in_flight,
                starts,
            })
            .collect();
        l
    }

    #[test]
    fn a_saturated_lane_blocks_nothing_else_and_its_tasks_keep_their_place() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(10));
        r.push(1, 1, 10, 1, CHATGPT);
        r.push(1, 2, 10, 1, CHATGPT);
        r.push(1, 3, 1, 1, GEMINI);
        r.push(1, 4, 1, 1, GEMINI);
        let l = lanes(&[(CHATGPT, 0)], &[(Some(1), None)]);
        let got: Vec<i64> = r.claim_in(10, &l).iter().map(|p| p.seq).collect();
        // Strict priority among runnable tasks: the first CHATGPT, then (lane full) GEMINI.
        assert_eq!(got, vec![1, 3, 4]);
        assert!(r.claim_in(10, &l).is_empty());
        assert_eq!(r.processing_by_kind()[usize::from(CHATGPT)], 1);
        r.finish(1, CHATGPT, 1, 0);
        r.push(1, 5, 10, 1, GEMINI);
        // Room again: the waiting CHATGPT task is still the oldest of priority 10.
        let got: Vec<i64> = r.claim_in(10, &l).iter().map(|p| p.seq).collect();
        assert_eq!(got, vec![2, 5]);
    }

    #[test]
    fn a_claims_starts_cap_its_lane_and_a_shared_lane_counts_every_type() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(100));
        for s in 0..9 {
            r.push(1, s, 5, 1, (s % 3) as u8); // AIMODE, GOOGLE, GOOGLE_NEWS
        }
        let l = lanes(&[(0, 0), (1, 0), (2, 0)], &[(Some(5), Some(2))]);
        assert_eq!(r.claim_in(10, &l).len(), 2);
        assert_eq!(r.claim_in(10, &l).len(), 2);
        // Four running: one more fits under max_in_flight 5.
        assert_eq!(r.claim_in(10, &l).len(), 1);
        assert!(r.claim_in(10, &l).is_empty());
        // Paused: starts 0.
        r.finish(1, 0, 1, 0);
        let paused = lanes(&[(0, 0), (1, 0), (2, 0)], &[(Some(5), Some(0))]);
        assert!(r.claim_in(10, &paused).is_empty());
        assert_eq!(r.claim_in(10, &l).len(), 1);
    }

    #[test]
    fn a_blocked_organization_keeps_its_turn_for_when_room_frees() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(100));
        r.set_org(2, limits(100));
        for s in 0..100 {
            r.push(1, s, 5, 1, CHATGPT);
        }
        let l = lanes(&[(CHATGPT, 0)], &[(Some(1), None)]);
        let first = r.claim_in(10, &l);
        assert_eq!((first.len(), first[0].org), (1, 1));
        r.push(2, 1_000, 5, 1, CHATGPT);
        assert!(r.claim_in(10, &l).is_empty());
        r.finish(1, CHATGPT, 1, 0);
        // Organization 2 waited for at most one engine call.
        let next = r.claim_in(10, &l);
        assert_eq!((next.len(), next[0].org, next[0].seq), (1, 2, 1_000));
    }

    #[test]
    fn a_task_rejected_for_credits_takes_no_room_in_its_lane() {
        let mut r = ReadySet::new();
        r.set_org(
            1,
            OrgLimits {
                concurrency: 5,
                queue_limit: 100,
                credits: 5,
            },
        );
        r.push(1, 1, 1, 5, CHATGPT);
        r.push(1, 2, 1, 5, CHATGPT);
        r.push(1, 3, 1, 0, CHATGPT);
        let l = lanes(&[(CHATGPT, 0)], &[(Some(2), Some(2))]);
        let picks = r.claim_in(10, &l);
        let got: Vec<(i64, bool)> = picks.iter().map(|p| (p.seq, p.run)).collect();
        assert_eq!(got, vec![(1, true), (2, false), (3, true)]);
        assert_eq!(r.processing_by_kind()[usize::from(CHATGPT)], 2);
    }

    #[test]
    fn sync_attempts_take_lane_places_that_claims_count() {
        let mut r = ReadySet::new();
        r.set_org(1, limits(10));
        r.push(1, 1, 1, 1, CHATGPT);
        r.push(1, 2, 1, 1, CHATGPT);
        let l = lanes(&[(CHATGPT, 0)], &[(Some(2), None)]);
        assert!(r.sync_lane_enter(&l, CHATGPT));
        assert_eq!(r.claim_in(10, &l).len(), 1);
        // Lane full: one task, one sync attempt.
        assert!(!r.sync_lane_enter(&l, CHATGPT));
        r.sync_lane_leave(CHATGPT);
        assert_eq!(r.claim_in(10, &l).len(), 1);
        assert!(!r.sync_lane_enter(&l, CHATGPT));
        // A type without a capped lane always has room; its places are counted and given back.
        assert!(r.sync_lane_enter(&l, GEMINI));
        r.sync_lane_leave(GEMINI);
        assert_eq!(r.sync_by_kind, [0; KINDS]);
    }

    #[derive(Debug, Clone)]
    enum LaneOp {
        Push { org: i64, priority: u8, kind: u8 },
        Claim { n: usize, starts: Option<u32> },
        FinishOne(usize),
        RequeueOne(usize),
    }

    fn lane_op() -> impl Strategy<Value = LaneOp> {
        prop_oneof![
            5 => (0..3i64, 1..=4u8, 0..4u8).prop_map(|(org, priority, kind)| LaneOp::Push { org, priority, kind }),
            3 => (0..6usize, proptest::option::of(0..3u32)).prop_map(|(n, starts)| LaneOp::Claim { n, starts }),
            3 => any::<usize>().prop_map(LaneOp::FinishOne),
            1 => any::<usize>().prop_map(LaneOp::RequeueOne),
        ]
    }

    proptest! {
        /// Random workloads under lanes (kinds 0 and 1 share lane 0 with `max_in_flight`,
        /// kind 2 is lane 1 with a per-claim `starts`, kind 3 is unlimited): every pick is its
        /// organization's best task among the types with room at that moment, caps and lane
        /// limits hold, a claim stops short only when nothing else could run, and no slot is
        /// leaked.
        #[test]
        fn lane_invariants_hold(
            ops in proptest::collection::vec(lane_op(), 1..300),
            caps in proptest::collection::vec(1..4u32, 3),
            max0 in 1..4u32,
        ) {
            let mut r = ReadySet::new();
            for (org, cap) in caps.iter().enumerate() {
                r.set_org(org as i64, limits(*cap));
            }
            let lane_of = |k: u8| match k { 0 | 1 => Some(0usize), 2 => Some(1), _ => None };
            let mut queued: HashMap<i64, Vec<(i64, u8, u8)>> = HashMap::new();
            let mut running: Vec<Pick> = Vec::new();
            let mut seq = 0i64;
            for op in ops {
                match op {
                    LaneOp::Push { org, priority, kind } => {
                        seq += 1;
                        r.push(org, seq, priority, 1, kind);
                        queued.entry(org).or_default().push((seq, priority, kind));
                    }
                    LaneOp::Claim { n, starts } => {
                        let l = lanes(&[(0, 0), (1, 0), (2, 1)], &[(Some(max0), None), (None, starts)]);
                        let picks = r.claim_in(n, &l);
                        prop_assert!(picks.len() <= n);
                        let mut started1 = 0u32;
                        for p in &picks {
                            prop_assert!(p.run);
                            let in0 = running.iter().filter(|x| lane_of(x.kind) == Some(0)).count() as u32;
                            let open = |k: u8| match lane_of(k) {
                                Some(0) => in0 < max0,
                                Some(_) => starts.is_none_or(|s| started1 < s),
                                None => true,
                            };
                            let q = queued.get_mut(&p.org).expect("org has queue");
                            let best = q.iter().copied().filter(|&(_, _, k)| open(k))
                                .max_by_key(|&(s, pr, _)| (pr, Reverse(s))).expect("a runnable task");
                            prop_assert_eq!((p.seq, p.priority, p.kind), best);
                            q.retain(|&(s, _, _)| s != p.seq);
                            if lane_of(p.kind) == Some(1) { started1 += 1; }
                            running.push(*p);
                            let in0 = running.iter().filter(|x| lane_of(x.kind) == Some(0)).count() as u32;
                            prop_assert!(in0 <= max0);
                            let n_org = running.iter().filter(|x| x.org == p.org).count() as u32;
                            prop_assert!(n_org <= caps[p.org as usize]);
                        }
                        if let Some(s) = starts { prop_assert!(started1 <= s); }
                        if picks.len() < n {
                            // Nothing else could have run.
                            let in0 = running.iter().filter(|x| lane_of(x.kind) == Some(0)).count() as u32;
                            for (org, q) in &queued {
                                let busy = running.iter().filter(|x| x.org == *org).count() as u32;
                                if busy >= caps[*org as usize] { continue; }
                                for &(_, _, k) in q {
                                    let open = match lane_of(k) {
                                        Some(0) => in0 < max0,
                                        Some(_) => starts.is_none_or(|s| started1 < s),
                                        None => true,
                                    };
                                    prop_assert!(!open, "org {} had a runnable task of kind {}", org, k);
                                }
                            }
                        }
                    }
                    LaneOp::FinishOne(i) => {
                        if !running.is_empty() {
                            let p = running.remove(i % running.len());
                            r.finish(p.org, p.kind, p.cost, 0);
                        }
                    }
                    LaneOp::RequeueOne(i) => {
                        if !running.is_empty() {
                            let p = running.remove(i % running.len());
                            r.finish(p.org, p.kind, p.cost, 0);
                            r.push(p.org, p.seq, p.priority, p.cost, p.kind);
                            queued.entry(p.org).or_default().push((p.seq, p.priority, p.kind));
                        }
                    }
                }
                let by_kind = r.processing_by_kind();
                for k in 0..4u8 {
                    let n = running.iter().filter(|x| x.kind == k).count() as u32;
                    prop_assert_eq!(by_kind[usize::from(k)], n);
                }
            }
            for p in running.drain(..) {
                r.finish(p.org, p.kind, p.cost, 0);
            }
            loop {
                let picks = r.claim_in(100, &Lanes::default());
                if picks.is_empty() { break; }
                for p in picks { r.finish(p.org, p.kind, p.cost, 0); }
            }
            prop_assert_eq!(r.totals(), (0, 0));
            prop_assert_eq!(r.processing_by_kind(), [0; 8]);
        }
    }
}
