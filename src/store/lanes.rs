//! Engine lanes: the per-engine limits a claim honours, and the start-rate arithmetic (GCRA)
//! both stores share.
//!
//! A lane is an engine of the engines file. Several task types may share one (GOOGLE,
//! GOOGLE_NEWS and AIMODE on one SerpApi key). A claim given [`Lanes`] starts a task only if
//! its lane has room: fewer of the lane's tasks PROCESSING than `max_in_flight` (cluster-wide:
//! the store counts them) and fewer started by this claim than `starts` (the dispatcher's
//! budget: rate tokens it took, 0 while the engine is paused, 1 for a probe). A task without
//! room keeps its place in the queue; its organization is offered its best task of a lane with
//! room.
//!
//! Rate tokens ([`TaskQueue::take_lane_starts`](crate::store::TaskQueue::take_lane_starts))
//! follow the generic cell rate algorithm: one start every `T = ceil(60 000 / per_minute)` ms,
//! with a burst of at most `max(1, per_minute / 60)` (one second's worth). The state is one
//! number per lane, its theoretical arrival time (`tat`); [`gcra_take`] and [`gcra_return`]
//! are the whole arithmetic. SQLite keeps `tat` in memory; PostgreSQL in `lane_rate.tat_ms`,
//! moved by one statement that computes the same thing (checked against [`gcra_take`] on every
//! call). `T` rounds up, so a rate that does not divide 60 000 is honoured conservatively.

/// Per-engine limits one claim honours. Each task type belongs to at most one lane (its engine).
#[derive(Debug, Clone, Default)]
pub struct Lanes {
    /// Indexed by the position of the task type in `TaskType::ALL`; `None`: unlimited.
    pub lane_of: [Option<usize>; 8],
    pub lanes: Vec<Lane>,
}

#[derive(Debug, Clone)]
pub struct Lane {
    /// The engine's name in the engines file (stable across nodes; PostgreSQL keys on it).
    pub name: String,
    /// Most tasks of this lane PROCESSING at once, cluster-wide (store-enforced). None: no cap.
    pub max_in_flight: Option<u32>,
    /// Most tasks of this lane this one claim may start (the dispatcher's per-node budget:
    /// rate-limit tokens taken, 0 while the engine is paused, 1 for a probe). None: no cap.
    pub starts: Option<u32>,
}

/// What [`TaskQueue::take_lane_starts`](crate::store::TaskQueue::take_lane_starts) granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneStarts {
    pub granted: u32,
    /// When the next start becomes possible, if fewer than asked were granted.
    pub next_ms: Option<i64>,
}

/// One GCRA decision: what was granted and the lane's new theoretical arrival time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    pub tat_ms: i64,
    pub next_ms: Option<i64>,
}

/// The emission interval: ms between two starts at `per_minute` (at least 1 ms; rounded up).
pub fn interval_ms(per_minute: u32) -> i64 {
    let pm = i64::from(per_minute.max(1));
    ((60_000 + pm - 1) / pm).max(1)
}

/// The burst: starts allowed at once after a quiet spell (one second's worth, at least 1).
pub fn burst(per_minute: u32) -> i64 {
    i64::from((per_minute / 60).max(1))
}

/// Takes up to `want` starts at `now_ms` from a lane whose theoretical arrival time is `tat_ms`
/// (0 for a lane never used): a start is allowed while `max(tat, now) + T - now <= burst * T`.
pub fn gcra_take(tat_ms: i64, now_ms: i64, want: u32, per_minute: u32) -> Grant {
    let t = interval_ms(per_minute);
    let b = burst(per_minute);
    let base = tat_ms.max(now_ms);
    // Starts that fit: base + k*T - now <= b*T.
    let fit = ((b * t - (base - now_ms)) / t).max(0);
    let granted = fit.min(i64::from(want));
    let tat = base + granted * t;
    let next_ms = (granted < i64::from(want)).then(|| (tat - (b - 1) * t).max(now_ms + 1));
    Grant {
        granted: granted as u32,
        tat_ms: tat,
        next_ms,
    }
}

/// Gives back `n` unused starts: the lane's theoretical arrival time moves back by `n * T`.
pub fn gcra_return(tat_ms: i64, n: u32, per_minute: u32) -> i64 {
    tat_ms - i64::from(n) * interval_ms(per_minute)
}

/// Task types (positions in `TaskType::ALL`, which are also their stored codes).
pub(crate) const KINDS: usize = 8;
/// Every task type open: no lane limits.
pub(crate) const ALL_OPEN: u8 = u8::MAX;

/// The task type's lane under `lanes`, if it has a valid one.
pub(crate) fn lane_of_kind(lanes: &Lanes, kind: usize) -> Option<usize> {
    lanes
        .lane_of
        .get(kind)
        .copied()
        .flatten()
        .filter(|&l| l < lanes.lanes.len())
}

/// What one claim may still start per lane, and which task types are open (see [`Lanes`]).
pub(crate) struct Room {
    lane_of: [Option<usize>; KINDS],
    /// Starts left per lane in this claim.
    left: Vec<u32>,
    /// Bit `k`: task type `k` may start.
    pub(crate) open: u8,
}

impl Room {
    /// `processing[k]`: tasks of type `k` running now.
    pub(crate) fn new(lanes: &Lanes, processing: &[u32; KINDS]) -> Room {
        let mut lane_of = [None; KINDS];
        for (k, l) in lane_of.iter_mut().enumerate() {
            *l = lane_of_kind(lanes, k);
        }
        let mut in_flight = vec![0u32; lanes.lanes.len()];
        for (l, n) in lane_of.iter().zip(processing) {
            if let Some(l) = *l {
                in_flight[l] += n;
            }
        }
        let left: Vec<u32> = lanes
            .lanes
            .iter()
            .zip(&in_flight)
            .map(|(lane, &n)| {
                let by_cap = lane.max_in_flight.map_or(u32::MAX, |m| m.saturating_sub(n));
                by_cap.min(lane.starts.unwrap_or(u32::MAX))
            })
            .collect();
        let mut room = Room {
            lane_of,
            left,
            open: ALL_OPEN,
        };
        for (k, l) in lane_of.iter().enumerate() {
            if let Some(l) = *l
                && room.left[l] == 0
            {
                room.open &= !(1 << k);
            }
        }
        room
    }

    /// Whether a task of type `kind` may start.
    pub(crate) fn is_open(&self, kind: u8) -> bool {
        self.open & (1 << kind.min(KINDS as u8 - 1)) != 0
    }

    /// A task of type `kind` started.
    pub(crate) fn take(&mut self, kind: u8) {
        let Some(l) = self.lane_of[usize::from(kind).min(KINDS - 1)] else {
            return;
        };
        self.left[l] = self.left[l].saturating_sub(1);
        if self.left[l] == 0 {
            for k in 0..KINDS {
                if self.lane_of[k] == Some(l) {
                    self.open &= !(1 << k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_quiet_lane_grants_its_burst_then_one_per_interval() {
        // 600/min: T = 100 ms, burst 10.
        let g = gcra_take(0, 1_000, 50, 600);
        assert_eq!(g.granted, 10);
        assert_eq!(g.next_ms, Some(1_100));
        let g2 = gcra_take(g.tat_ms, 1_050, 5, 600);
        assert_eq!(g2.granted, 0);
        assert_eq!(g2.next_ms, Some(1_100));
        let g3 = gcra_take(g.tat_ms, 1_100, 5, 600);
        assert_eq!(g3.granted, 1);
        // A slow rate: 1/min, burst 1.
        let g = gcra_take(0, 0, 3, 1);
        assert_eq!((g.granted, g.next_ms), (1, Some(60_000)));
    }

    #[test]
    fn returned_starts_can_be_taken_again() {
        let g = gcra_take(0, 0, 10, 600);
        assert_eq!(g.granted, 10);
        let tat = gcra_return(g.tat_ms, 4, 600);
        assert_eq!(gcra_take(tat, 0, 10, 600).granted, 4);
    }

    proptest! {
        /// Random calls (each take's unused grants returned at once, as the dispatcher does):
        /// in any 60 s window at most `per_minute + burst` starts are used, and every take
        /// grants as many as fit (a refused start would really have exceeded the schedule).
        #[test]
        fn never_more_than_allowed_and_as_many_as_allowed(
            per_minute in 1u32..5_000,
            calls in proptest::collection::vec((0i64..3_000, 0u32..40, 0u32..40), 1..300),
        ) {
            let t = interval_ms(per_minute);
            let b = burst(per_minute);
            let mut tat = 0i64;
            let mut now = 0i64;
            let mut used: Vec<i64> = Vec::new();
            for (step, want, unused) in calls {
                now += step;
                let g = gcra_take(tat, now, want, per_minute);
                prop_assert!(g.granted <= want);
                // As many as allowed: one more would break the GCRA condition.
                if g.granted < want {
                    prop_assert!(g.tat_ms + t - now > b * t);
                    let next = g.next_ms.expect("a next time when refused");
                    prop_assert!(next > now);
                    prop_assert!(gcra_take(g.tat_ms, next, 1, per_minute).granted == 1);
                    prop_assert!(next - 1 <= now || gcra_take(g.tat_ms, next - 1, 1, per_minute).granted == 0);
                } else {
                    prop_assert!(g.next_ms.is_none());
                }
                let back = unused.min(g.granted);
                tat = gcra_return(g.tat_ms, back, per_minute);
                used.extend(std::iter::repeat_n(now, (g.granted - back) as usize));
            }
            // Every 60 s window starting at a start.
            let limit = i64::from(per_minute) + b;
            for (i, &start) in used.iter().enumerate() {
                let n = used[i..].iter().take_while(|&&u| u < start + 60_000).count() as i64;
                prop_assert!(n <= limit, "{} starts in 60 s from {}, limit {}", n, start, limit);
            }
        }
    }
}
