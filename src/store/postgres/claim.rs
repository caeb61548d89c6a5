//! The claim: how queued tasks become PROCESSING on this node, fairly, within caps and credits.
//!
//! One transaction, in named steps (each with its statement below):
//!
//! 0. [`lane_room`] (only when the claim has [`Lanes`]): for each lane with `max_in_flight`,
//!    take its advisory lock ([`LOCK_LANE`], in key order, so claims never deadlock on them),
//!    then count its PROCESSING tasks ([`RUNNING_BY_TYPE`], from the `run_lanes` counter
//!    rows that claims and finishes keep per node and task type). Only claims move tasks into PROCESSING, and every claim that may start a task of
//!    a limited lane holds the lane's lock until it commits; the count is a fresh statement
//!    (READ COMMITTED) after the lock was granted, so it sees every earlier claim's commit:
//!    it is exact, cluster-wide, and only finishes and the reaper (which only lower it) can
//!    change it meanwhile. A dead node's tasks leave PROCESSING with its lease, so the count
//!    heals itself. A claim without limited lanes runs no extra statement, and sends step 1
//!    together with the lease check ([`HOLD_LEASE`](super::lease::HOLD_LEASE)) and the commit
//!    mode, pipelined (a lease found run out rolls the locks back).
//! 1. [`lock_orgs`]: lock up to `2n+16` organizations with queued work and (as last committed)
//!    a free slot, least recently served first, `FOR UPDATE SKIP LOCKED` ([`LOCK_ORGS`]).
//!    Another node claiming at the same time skips them, so the cap check and the increment of
//!    the running count can never interleave: an organization never has more PROCESSING tasks
//!    than its limit, cluster-wide.
//! 2. [`usage`]: their running tasks and spent credits over every node ([`USAGE`]).
//! 3. [`share_slots`] (no I/O): organizations at their cap are skipped; the `n` free worker
//!    slots are shared among the others round-robin, one per turn.
//! 4. [`pick_tasks`]: walk each organization's queued tasks per priority, highest first, in
//!    `seq` order from its claim cursor `orgs.c<p>` ([`PICK`], a page at a time), so the dead
//!    index entries of tasks claimed earlier (which a long transaction elsewhere keeps from
//!    vacuum) are not walked again. A task waiting for its retry time, or of a lane without
//!    room, is passed over (the cursor stays at or before it, so it is picked again later);
//!    one whose cost (its price plus the most its engine may add after the run, which is what
//!    it reserves) exceeds the balance minus reservations is rejected. While some task types
//!    have no room the walk asks only for the others ([`PICK_OPEN`]) and leaves the cursor
//!    where it was (it cannot see the skipped rows). Every organization's first page is asked
//!    for up front, all pipelined in one round trip ([`pick_tasks`]).
//! 5. [`start_tasks`]: mark the picked tasks PROCESSING with this node's id ([`START`]): a
//!    heap-only (HOT) update, no index entry (`0009_hot_claims.sql`), of the rows at the
//!    addresses the pick read (their `ctid`: no primary-key lookup); each started task keeps its
//!    new row version's address for its finish ([`ClaimedTask::row_at`]).
//! 6. [`fail_unaffordable`]: the rejected ones become FAILED `INSUFFICIENT_CREDITS`, with their
//!    webhook deliveries ([`FAIL_UNAFFORDABLE`]).
//! 7. [`record_turns`]: per organization, the queued counts, the cursors and `served_at`
//!    ([`SERVED`]), then this node's claim-side counter row ([`TAKE_SLOTS`]); then its
//!    claim-side running counts per task type ([`TAKE_LANES`]).
//!
//! Steps 5 to 7 depend only on what step 4 picked: their statements go out pipelined.
//!
//! Before step 0 the claim holds this node's lease ([`HOLD_LEASE`](super::lease::HOLD_LEASE)):
//! a node whose lease ran out claims nothing, and no reaper takes the node over while the claim
//! runs. Its tasks are registered as running here before the claim returns
//! ([`reconcile`](super::reconcile)).
//!
//! The commit is asynchronous ([`ASYNC_COMMIT`]). `started_ms` and the "is this retry due"
//! test use the store's [`Clock`](crate::clock::Clock); a retry's `run_after_ms` was set from
//! the same kind of clock by the dispatcher.

use std::collections::HashMap;

use tokio_postgres::Statement;
use uuid::Uuid;

use super::PgStore;
use super::counters::{Params, deltas};
use super::errors::pg_err;
use super::lease::{self, Held};
use crate::domain::request::max_add_ons_text;
use crate::domain::types::TaskType;
use crate::store::lanes::{ALL_OPEN, KINDS, Room, lane_of_kind};
use crate::store::{ClaimedTask, Error, Lanes, Result};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// A claim need not wait for its WAL flush: if the database loses it in a crash, the tasks are
/// QUEUED again and simply run again (as after a node's death). Every later durable commit (a
/// finish, a submission) flushes the WAL past it anyway.
const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// Step 1: up to `$1` organizations with queued work and, as last committed, a free slot
/// under their cap, least recently served first, locked; with their cap, committed credits,
/// queued counts and claim cursors per priority.
///
/// The free-slot test reads the running counts without their locks: it only keeps
/// organizations at their cap out of the window (step 2 counts again, under the lock). Without
/// it, organizations at their cap (whose turn does not come, so they stay least recently
/// served) filled the window of a small claim, and a slot free further on was not found until
/// enough slots were free for the window to reach it (store test
/// `a_small_claim_reaches_a_free_slot_behind_organizations_at_their_cap`).
pub(super) const LOCK_ORGS: &str = concat!(
    "SELECT id, concurrency, credits, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, ",
    "c1, c2, c3, c4, c5, c6, c7, c8, c9, c10 FROM orgs
                      WHERE ",
    q_sum!(),
    " > 0
                        AND concurrency > (SELECT coalesce(sum(n.processing), 0) FROM org_nodes n
                                            WHERE n.org = orgs.id)
                      ORDER BY served_at LIMIT $1 FOR UPDATE SKIP LOCKED"
);

/// Step 2: per organization in `$1`, the running tasks and the credits reserved or charged
/// but not yet folded, over every node and side.
const USAGE: &str = "SELECT org, sum(processing)::bigint, (sum(reserved) + sum(charged))::bigint
                   FROM org_nodes WHERE org = ANY($1) GROUP BY org";

/// Step 4: organization `$1`'s queued tasks of priority `$2` from seq `$3` on, in FIFO order,
/// `$4` at a time. An AI Mode task (`task_type` 0) comes with its payload: what its pickup
/// reserves depends on it. No row lock (`FOR UPDATE` would write each row and a WAL record
/// once more): every transaction that changes an organization's QUEUED rows holds its `orgs`
/// row locked (claims from step 1, `clear_queue`), and the others (finishes, the reaper) touch
/// only PROCESSING rows, so nothing changes these rows before [`START`] (which checks anyway).
const PICK: &str = "SELECT seq, credits_to_charge, run_after_ms, task_type,
                         CASE WHEN task_type = 0 THEN payload END, ctid::text FROM tasks
                  WHERE org = $1 AND priority = $2 AND finished_ms IS NULL AND status = 0
                    AND seq >= $3
                  ORDER BY seq LIMIT $4";

/// Step 4 while only the task types `$5` have room: [`PICK`] restricted to them.
const PICK_OPEN: &str = "SELECT seq, credits_to_charge, run_after_ms, task_type,
                         CASE WHEN task_type = 0 THEN payload END, ctid::text FROM tasks
                  WHERE org = $1 AND priority = $2 AND finished_ms IS NULL AND status = 0
                    AND seq >= $3 AND task_type = ANY($5)
                  ORDER BY seq LIMIT $4";

/// Step 0: the lock of one lane (`$1`: [`lane_key`] of its name), held to the commit.
pub(super) const LOCK_LANE: &str = "SELECT pg_advisory_xact_lock($1)";

/// Step 0: PROCESSING tasks ([`run_lanes`](TAKE_LANES)) plus sync attempts in flight
/// ([`sync_lanes`](super::sync)) per task type among `$1`, cluster-wide. Claims and sync
/// attempts take their places under the same lane lock, so the count is exact for both.
pub(super) const RUNNING_BY_TYPE: &str = "SELECT task_type, sum(n)::bigint FROM (
                    SELECT task_type, sum(n) AS n FROM run_lanes
                     WHERE task_type = ANY($1) GROUP BY task_type
                    UNION ALL
                    SELECT task_type, sum(n) FROM sync_lanes
                     WHERE task_type = ANY($1) GROUP BY task_type) AS r
                  GROUP BY task_type";

/// Step 5: the tasks at row addresses `$1` (their `ctid`s as [`PICK`] read them) start on node
/// `$3` at `$2` (the first start is kept): the attempt is counted here, so a finish from an
/// earlier attempt matches nothing. No index covers a column this changes
/// (`0009_hot_claims.sql`), so the update is heap-only (HOT): no index entry. The rows are
/// found by address (a TID scan), not looked up again in the primary key: nothing changed
/// them since the pick (every writer of QUEUED rows holds the organization's row, see
/// [`PICK`]), and a row that did change would not match `status = 0` and the claim would
/// roll back ([`start_tasks`]).
const START: &str =
    "UPDATE tasks SET status = 1, attempts = attempts + 1, started_ms = COALESCE(started_ms, $2),
                        node = $3, run_after_ms = NULL
                  WHERE ctid = ANY($1::text[]::tid[]) AND status = 0
                 RETURNING seq, id, org, task_type, payload, attempts, credits_to_charge, ctid::text";

/// Step 6: tasks `$1` are FAILED at `$2` with response `$3`, charged nothing. FAILED is
/// terminal: their webhooks go out like any other (outbox rows in the same statement).
const FAIL_UNAFFORDABLE: &str = "WITH failed AS (
                    UPDATE tasks SET status = 3, finished_ms = $2, credits_charged = 0, response = $3, run_after_ms = NULL
                     WHERE seq = ANY($1)
                    RETURNING seq, org, id, webhook_url)
                 INSERT INTO webhook_deliveries(seq, org, id, url, next_at, created_ms)
                 SELECT seq, org, id, webhook_url, $2, $2 FROM failed WHERE webhook_url IS NOT NULL
                 ON CONFLICT (seq) DO NOTHING";

/// Step 7: organizations `$1` (ascending) were served now, in one statement: each one's turn
/// moves to the back (in that order), its queued counts per priority change by `$2..$11` and
/// its cursors become `$12..$21` (arrays, one element per organization).
pub(super) const SERVED: &str = "UPDATE orgs o SET served_at = u.turn,
                    q1 = o.q1 + u.d1, q2 = o.q2 + u.d2, q3 = o.q3 + u.d3, q4 = o.q4 + u.d4,
                    q5 = o.q5 + u.d5, q6 = o.q6 + u.d6, q7 = o.q7 + u.d7, q8 = o.q8 + u.d8,
                    q9 = o.q9 + u.d9, q10 = o.q10 + u.d10,
                    c1 = u.c1, c2 = u.c2, c3 = u.c3, c4 = u.c4, c5 = u.c5, c6 = u.c6,
                    c7 = u.c7, c8 = u.c8, c9 = u.c9, c10 = u.c10
                 FROM (SELECT s.*, nextval('serve_turn') AS turn
                         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                                     $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
                                     $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                                     $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
                                     $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[],
                                     $21::bigint[])
                              WITH ORDINALITY AS s(org, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10,
                                                   c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, ord)
                        ORDER BY ord) AS u
                WHERE o.id = u.org";

/// Step 7: this node's claim-side (side 0) counter rows of organizations `$2` (ascending: the
/// lock order): `$3` more tasks running, `$4` more credits reserved (arrays, one element per
/// organization). Finishes write their own sides
/// ([`FINISH_SIDES`](super::finisher::FINISH_SIDES)), so they never wait on a claim.
const TAKE_SLOTS: &str = "INSERT INTO org_nodes(org, node, side, processing, reserved)
                 SELECT u.org, $1, 0, u.p, u.r
                   FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS u(org, p, r)
                 ON CONFLICT (org, node, side) DO UPDATE SET
                    processing = org_nodes.processing + EXCLUDED.processing,
                    reserved = org_nodes.reserved + EXCLUDED.reserved";

/// Step 7: this node's claim-side (side 0) running counts per task type: `$2[i]` more tasks of
/// type `$1[i]` (sorted, so concurrent claims of this node lock the rows in the same order).
/// [`RUNNING_BY_TYPE`] sums them with the finish sides'.
pub(super) const TAKE_LANES: &str = "INSERT INTO run_lanes(node, task_type, side, n)
                 SELECT $3, u.t, 0, u.n FROM unnest($1::smallint[], $2::int[]) AS u(t, n)
                 ON CONFLICT (node, task_type, side) DO UPDATE SET n = run_lanes.n + EXCLUDED.n";

/// A page of [`PICK`] asks for what the organization still wants plus this many (tasks passed
/// over for their retry time do not force a second page)...
const PAGE_SLACK: i64 = 8;
/// ...and at most this many.
const PAGE_MAX: i64 = 512;

/// How many organizations [`LOCK_ORGS`] locks for a claim of `max` tasks: more than `max`, so
/// organizations that turn out to be at their cap or out of credits do not starve the others.
fn lock_limit(max: usize) -> i64 {
    max as i64 * 2 + 16
}

/// An organization locked by step 1.
struct Locked {
    org: i64,
    concurrency: i32,
    /// Committed credits (unfolded charges are in [`USAGE`]).
    credits: i64,
    /// Queued tasks per priority (index 0 is priority 1).
    queued: [i64; 10],
    /// Claim cursor per priority.
    cursor: [i64; 10],
}

/// An organization's share of the claim (step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    org: i64,
    /// Slots below its cap.
    free: i64,
    /// Credits it may still reserve.
    budget: i64,
    /// Tasks it gets in this claim.
    want: i64,
}

/// What step 4 picked in one organization, for step 7.
struct OrgClaim {
    org: i64,
    /// Tasks started.
    started: i32,
    /// Credits they reserve.
    reserved: i64,
    /// `(priority, -1)` per task taken off the queue (started or rejected).
    by_prio: Vec<(u8, i64)>,
    /// The new claim cursors.
    cursor: [i64; 10],
}

/// What step 4 picked overall.
#[derive(Default)]
struct Picked {
    /// Tasks to start, in hand-out order (fairness, then priority and FIFO).
    run: Vec<i64>,
    /// Their row addresses (`ctid` as text), for [`START`].
    run_at: Vec<String>,
    /// Their task types, as [`PICK`] read them.
    run_types: Vec<i16>,
    /// Tasks to fail for lack of credits.
    reject: Vec<i64>,
    per_org: Vec<OrgClaim>,
}

/// [`Store::claim`](crate::store::Store::claim): claims up to `max` tasks (see the module
/// docs for the steps).
pub(crate) async fn claim(store: &PgStore, max: usize, lanes: &Lanes) -> Result<Vec<ClaimedTask>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    // Fencing: no claim unless this node still provably holds its lease (see `lease`).
    if !store.shared.lease.is_current() {
        return Err(Error::Unavailable(
            "this node's lease is not provably current".into(),
        ));
    }
    let mut ticket = store.shared.running.claim();
    let now = store.shared.clock.now_ms();
    let node = store.shared.node;
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let lease_held = || async {
        // The commit mode and the lease go out together (one round trip).
        let ((), held) = futures_util::future::try_join(
            async { tx.batch_execute(ASYNC_COMMIT).await.map_err(pg_err) },
            lease::hold(&tx, &store.shared.lease, node),
        )
        .await?;
        match held {
            Held::Current => Ok(()),
            _ => Err(Error::Unavailable("this node's lease ran out".into())),
        }
    };
    let (mut room, locked) = if locks_lanes(lanes) {
        // The lanes' locks come first, before any organization's row (the lock order).
        lease_held().await?;
        let room = lane_room(&tx, lanes).await?;
        if room.as_ref().is_some_and(|r| r.open == 0) {
            tx.commit().await.map_err(pg_err)?;
            return Ok(Vec::new());
        }
        (room, lock_orgs(&tx, max).await?)
    } else {
        // No statement for the lanes: step 1 goes out with the lease (one round trip instead
        // of two). A lease found run out rolls its locks back with the rest.
        let room = lane_room(&tx, lanes).await?;
        if room.as_ref().is_some_and(|r| r.open == 0) {
            return Ok(Vec::new());
        }
        let ((), locked) =
            futures_util::future::try_join(lease_held(), lock_orgs(&tx, max)).await?;
        (room, locked)
    };
    if locked.is_empty() {
        tx.commit().await.map_err(pg_err)?;
        return Ok(Vec::new());
    }
    let used = usage(&tx, &locked).await?;
    let turns = share_slots(&locked, &used, max);
    let picked = pick_tasks(&tx, &locked, &turns, now, &mut room).await?;
    // From here the claim may commit without this node hearing of it: until it hands the
    // tasks out, they are suspects for reconciliation.
    ticket.trying(&picked.run);
    // Steps 5 to 7 depend only on the pick: their statements go out pipelined (one round trip
    // instead of five). Their order does not matter for locks: the organizations' rows are
    // held since step 1, the picked rows change only under them, and the counter rows are this
    // node's claim side. A failure of any (a picked task that changed) rolls all back.
    let (started, (), ()) = futures_util::future::try_join3(
        start_tasks(&tx, &picked.run_at, now, node),
        fail_unaffordable(&tx, &picked.reject, now),
        async {
            record_turns(&tx, picked.per_org, node).await?;
            take_lanes(&tx, &picked.run_types, node).await
        },
    )
    .await?;
    tx.commit().await.map_err(pg_err)?;
    store.shared.bump();
    let tasks = hand_out(&started, &picked.run);
    let current = store.shared.lease.is_current();
    ticket.handed_out(tasks.iter().map(|t| (t.seq, t.attempt as i32)), current);
    Ok(tasks)
}

/// The advisory-lock key of a lane: FNV-1a of its name (the same on every node), in a range
/// of its own.
pub(super) fn lane_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"cloro lane\0".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Whether step 0 ([`lane_room`]) runs statements: some lane has `max_in_flight`.
fn locks_lanes(lanes: &Lanes) -> bool {
    (0..KINDS)
        .any(|k| lane_of_kind(lanes, k).is_some_and(|l| lanes.lanes[l].max_in_flight.is_some()))
}

/// Step 0: the room the lanes leave this claim (`None`: no lanes given, nothing is limited).
/// Lanes with `max_in_flight` are locked ([`LOCK_LANE`]) and their running tasks counted
/// ([`RUNNING_BY_TYPE`]).
async fn lane_room(tx: &Tx<'_>, lanes: &Lanes) -> Result<Option<Room>> {
    let kinds: Vec<(usize, usize)> = (0..KINDS)
        .filter_map(|k| lane_of_kind(lanes, k).map(|l| (k, l)))
        .collect();
    if kinds.is_empty() {
        return Ok(None);
    }
    let capped = |l: usize| lanes.lanes[l].max_in_flight.is_some();
    let mut keys: Vec<i64> = kinds
        .iter()
        .filter(|&&(_, l)| capped(l))
        .map(|&(_, l)| lane_key(&lanes.lanes[l].name))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut processing = [0u32; KINDS];
    if !keys.is_empty() {
        for key in &keys {
            tx.execute(&tx.prepare_cached(LOCK_LANE).await.map_err(pg_err)?, &[key])
                .await
                .map_err(pg_err)?;
        }
        let types: Vec<i16> = kinds
            .iter()
            .filter(|&&(_, l)| capped(l))
            .map(|&(k, _)| k as i16)
            .collect();
        for r in tx
            .query(
                &tx.prepare_cached(RUNNING_BY_TYPE).await.map_err(pg_err)?,
                &[&types],
            )
            .await
            .map_err(pg_err)?
        {
            let (k, n): (i16, i64) = (r.get(0), r.get(1));
            if let Some(slot) = processing.get_mut(k as usize) {
                *slot = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
    }
    Ok(Some(Room::new(lanes, &processing)))
}

/// Step 1 ([`LOCK_ORGS`]).
async fn lock_orgs(tx: &Tx<'_>, max: usize) -> Result<Vec<Locked>> {
    let stmt = tx.prepare_cached(LOCK_ORGS).await.map_err(pg_err)?;
    let rows = tx.query(&stmt, &[&lock_limit(max)]).await.map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut queued = [0i64; 10];
            let mut cursor = [0i64; 10];
            for p in 0..10 {
                queued[p] = r.get(3 + p);
                cursor[p] = r.get(13 + p);
            }
            Locked {
                org: r.get(0),
                concurrency: r.get(1),
                credits: r.get(2),
                queued,
                cursor,
            }
        })
        .collect())
}

/// Step 2 ([`USAGE`]): organization → (running tasks, credits reserved or unfolded).
async fn usage(tx: &Tx<'_>, locked: &[Locked]) -> Result<HashMap<i64, (i64, i64)>> {
    let ids: Vec<i64> = locked.iter().map(|l| l.org).collect();
    let stmt = tx.prepare_cached(USAGE).await.map_err(pg_err)?;
    Ok(tx
        .query(&stmt, &[&ids])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Step 3: the turns. Organizations at their cap are not served; at most `max` organizations,
/// in lock order (least recently served first), share the `max` slots one per turn.
fn share_slots(locked: &[Locked], used: &HashMap<i64, (i64, i64)>, max: usize) -> Vec<Turn> {
    let mut turns: Vec<Turn> = locked
        .iter()
        .filter_map(|l| {
            let (running, spent) = used.get(&l.org).copied().unwrap_or((0, 0));
            let free = i64::from(l.concurrency) - running;
            (free > 0).then_some(Turn {
                org: l.org,
                free,
                budget: l.credits - spent,
                want: 0,
            })
        })
        .take(max)
        .collect();
    let mut left = max as i64;
    while left > 0 {
        let mut gave = false;
        for t in turns.iter_mut() {
            if left > 0 && t.want < t.free {
                t.want += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    turns
}

/// Step 4: each turn's organization walked for its tasks ([`PICK`]).
///
/// The first page of every organization's walk is asked for before any walk, all at once
/// (the statements go out pipelined on the one connection: one round trip for them all instead
/// of one per organization, which made a claim over 200 organizations take 40-90 ms). Those
/// first statements are known in advance: the highest priority with queued tasks, from its
/// cursor, a page of the organization's whole share plus the slack. Nothing changes the rows
/// they read before the walks use them (the organizations are locked, see [`PICK`], and this
/// transaction writes no task before step 5), so a walk given its first page reads exactly what
/// it would have read itself. A walk uses it only while every task type has room, as its own
/// first statement would then be that [`PICK`]; otherwise (a lane closed during an earlier
/// organization's walk) it asks again.
async fn pick_tasks(
    tx: &Tx<'_>,
    locked: &[Locked],
    turns: &[Turn],
    now: i64,
    room: &mut Option<Room>,
) -> Result<Picked> {
    let pick = tx.prepare_cached(PICK).await.map_err(pg_err)?;
    let by_org: HashMap<i64, &Locked> = locked.iter().map(|l| (l.org, l)).collect();
    let firsts: Vec<Option<FirstPage>> = turns
        .iter()
        .map(|t| by_org.get(&t.org).and_then(|l| first_page(t, l)))
        .collect();
    let pages = futures_util::future::try_join_all(
        firsts
            .iter()
            .flatten()
            .map(|f| async { tx.query(&pick, &[&f.org, &f.prio, &f.from, &f.page]).await }),
    )
    .await
    .map_err(pg_err)?;
    let mut pages = pages.into_iter();
    let mut picked = Picked::default();
    for (turn, first) in turns.iter().zip(firsts) {
        let Some(l) = by_org.get(&turn.org) else {
            continue;
        };
        let first = first.and_then(|f| pages.next().map(|rows| (f.priority, rows)));
        let claim = walk_org(tx, &pick, turn, l, now, room, first, &mut picked).await?;
        picked.per_org.push(claim);
    }
    Ok(picked)
}

/// The first [`PICK`] of an organization's walk ([`walk_org`]), when it has one.
struct FirstPage {
    org: i64,
    /// Index of the priority (0 is priority 1)...
    priority: usize,
    /// ...and the priority.
    prio: i16,
    from: i64,
    page: i64,
}

/// The first statement [`walk_org`] runs for `turn` while every task type has room: the
/// highest priority with queued tasks, from its cursor, a page of the whole share.
fn first_page(turn: &Turn, l: &Locked) -> Option<FirstPage> {
    if turn.want <= 0 {
        return None;
    }
    let p = (0..10).rev().find(|&p| l.queued[p] > 0)?;
    Some(FirstPage {
        org: turn.org,
        priority: p,
        prio: p as i16 + 1,
        from: l.cursor[p],
        page: (turn.want + PAGE_SLACK).min(PAGE_MAX),
    })
}

/// One organization's walk: per priority, highest first, from its cursor in `seq` order, a
/// page at a time, until it has its share. Started tasks go to `picked.run`, unaffordable ones
/// to `picked.reject`. With lanes, a task of a type without room is passed over like a retry
/// that is not due, and the tasks started use up `room`. `first` is the result of its first
/// [`PICK`] asked in advance ([`first_page`]: the priority index and the rows), used in place
/// of that statement when the walk would run exactly it.
#[allow(clippy::too_many_arguments)]
async fn walk_org(
    tx: &Tx<'_>,
    pick: &Statement,
    turn: &Turn,
    l: &Locked,
    now: i64,
    room: &mut Option<Room>,
    mut first: Option<(usize, Vec<tokio_postgres::Row>)>,
    picked: &mut Picked,
) -> Result<OrgClaim> {
    let (org, want) = (turn.org, turn.want);
    let mut budget = turn.budget;
    let mut cursor = l.cursor;
    let (mut taken, mut started, mut reserved, mut by_prio) = (0i64, 0i32, 0i64, Vec::new());
    for p in (0..10).rev() {
        if taken >= want || l.queued[p] <= 0 {
            continue;
        }
        let prio = p as i16 + 1;
        // The cursor may move past a task only once it is claimed (or rejected): not past one
        // waiting for its retry time, nor past one left for the next claim.
        let mut first_left: Option<i64> = None;
        let mut from = cursor[p];
        let mut last_seen = None;
        // Some rows were not asked for (their type had no room): the cursor stays.
        let mut filtered = false;
        loop {
            let open = room.as_ref().map_or(ALL_OPEN, |r| r.open);
            if open == 0 {
                break;
            }
            let page = (want - taken + PAGE_SLACK).min(PAGE_MAX);
            // The page asked in advance is this statement's result if this is the walk's very
            // first statement (nothing taken yet, at the cursor of that priority) and a PICK.
            let ready = match first.take() {
                Some((fp, rows))
                    if fp == p && taken == 0 && from == cursor[p] && open == ALL_OPEN =>
                {
                    Some(rows)
                }
                _ => None,
            };
            let rows = if let Some(rows) = ready {
                Ok(rows)
            } else if open == ALL_OPEN {
                tx.query(pick, &[&org, &prio, &from, &page]).await
            } else {
                filtered = true;
                let types: Vec<i16> = (0..KINDS as i16).filter(|k| open & (1 << k) != 0).collect();
                tx.query(
                    &tx.prepare_cached(PICK_OPEN).await.map_err(pg_err)?,
                    &[&org, &prio, &from, &page, &types],
                )
                .await
            }
            .map_err(pg_err)?;
            for r in &rows {
                let (seq, price, after): (i64, i64, Option<i64>) = (r.get(0), r.get(1), r.get(2));
                let kind = r.get::<_, i16>(3).clamp(0, KINDS as i16 - 1) as u8;
                let cost = price + reserve_add_ons(r.get(3), r.get(4));
                last_seen = Some(seq);
                let no_room = room.as_ref().is_some_and(|r| !r.is_open(kind));
                if taken >= want || after.is_some_and(|a| a > now) || no_room {
                    first_left.get_or_insert(seq);
                    continue;
                }
                taken += 1;
                by_prio.push((prio as u8, -1i64));
                if cost <= budget {
                    budget -= cost;
                    started += 1;
                    reserved += cost;
                    picked.run.push(seq);
                    picked.run_at.push(r.get(5));
                    picked.run_types.push(r.get(3));
                    if let Some(r) = room.as_mut() {
                        r.take(kind);
                    }
                } else {
                    picked.reject.push(seq);
                }
            }
            let full = rows.len() as i64 == page;
            match last_seen {
                Some(last) if full && taken < want => from = last + 1,
                _ => break,
            }
        }
        cursor[p] = match (filtered, first_left, last_seen) {
            (true, _, _) => cursor[p],
            (false, Some(seq), _) => seq,
            (false, None, Some(last)) => last + 1,
            (false, None, None) => cursor[p],
        };
    }
    Ok(OrgClaim {
        org,
        started,
        reserved,
        by_prio,
        cursor,
    })
}

/// Step 5 ([`START`]).
async fn start_tasks(
    tx: &Tx<'_>,
    run: &[String],
    now: i64,
    node: Uuid,
) -> Result<Vec<tokio_postgres::Row>> {
    if run.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = tx.prepare_cached(START).await.map_err(pg_err)?;
    let started = tx
        .query(&stmt, &[&run, &now, &node])
        .await
        .map_err(pg_err)?;
    if started.len() != run.len() {
        // Cannot happen while every writer of QUEUED rows holds the organization's row (see
        // [`PICK`]); if it did, the counters computed from the pick would be wrong: roll back.
        return Err(Error::Unavailable(
            "a picked task changed before it was started".into(),
        ));
    }
    Ok(started)
}

/// Step 7 ([`TAKE_LANES`]): the started tasks counted per task type.
async fn take_lanes(tx: &Tx<'_>, started: &[i16], node: Uuid) -> Result<()> {
    let (types, counts) = per_type(started.iter().copied());
    if types.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(TAKE_LANES).await.map_err(pg_err)?;
    tx.execute(&stmt, &[&types, &counts, &node])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// How many of `types` there are of each, by type in ascending order (the lock order of
/// `run_lanes` rows).
pub(super) fn per_type(types: impl IntoIterator<Item = i16>) -> (Vec<i16>, Vec<i32>) {
    let mut by: std::collections::BTreeMap<i16, i32> = Default::default();
    for t in types {
        *by.entry(t).or_default() += 1;
    }
    by.into_iter().unzip()
}

/// Step 6 ([`FAIL_UNAFFORDABLE`]).
async fn fail_unaffordable(tx: &Tx<'_>, reject: &[i64], now: i64) -> Result<()> {
    if reject.is_empty() {
        return Ok(());
    }
    let insufficient = serde_json::json!({"error": {
        "code": "INSUFFICIENT_CREDITS",
        "message": "Insufficient credits"
    }})
    .to_string();
    tx.execute(
        &tx.prepare_cached(FAIL_UNAFFORDABLE).await.map_err(pg_err)?,
        &[&reject, &now, &insufficient],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Step 7 ([`SERVED`] for every organization that had a turn, then [`TAKE_SLOTS`] for those
/// that started something), one statement each, pipelined. Lock order: `orgs` rows (already
/// held) before `org_nodes` rows, by organization id.
async fn record_turns(tx: &Tx<'_>, mut per_org: Vec<OrgClaim>, node: Uuid) -> Result<()> {
    if per_org.is_empty() {
        return Ok(());
    }
    per_org.sort_by_key(|p| p.org);
    let orgs: Vec<i64> = per_org.iter().map(|c| c.org).collect();
    // Per priority: the queued-count change, then the cursor, of each organization.
    let mut d: Vec<Vec<i64>> = vec![Vec::new(); 10];
    let mut c: Vec<Vec<i64>> = vec![Vec::new(); 10];
    for o in &per_org {
        let delta = deltas(o.by_prio.iter().copied());
        for p in 0..10 {
            d[p].push(delta[p]);
            c[p].push(o.cursor[p]);
        }
    }
    let mut params: Params = vec![&orgs];
    params.extend(
        d.iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    params.extend(
        c.iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    let served = tx.prepare_cached(SERVED).await.map_err(pg_err)?;
    let mine = tx.prepare_cached(TAKE_SLOTS).await.map_err(pg_err)?;
    let took: Vec<&OrgClaim> = per_org.iter().filter(|c| c.started > 0).collect();
    let took_orgs: Vec<i64> = took.iter().map(|c| c.org).collect();
    let started: Vec<i32> = took.iter().map(|c| c.started).collect();
    let reserved: Vec<i64> = took.iter().map(|c| c.reserved).collect();
    // Pipelined, in this order.
    futures_util::future::try_join(tx.execute(&served, &params), async {
        if took_orgs.is_empty() {
            return Ok(0);
        }
        tx.execute(&mine, &[&node, &took_orgs, &started, &reserved])
            .await
    })
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// What a pickup reserves beside the price of a task of type `code` whose stored payload is
/// `payload` ([`PICK`] reads it for AI Mode only): the most its engine may add after the run.
/// Step 4 (the budget) and the hand-out (the reservation the finish releases) both use it on
/// the same row, so they always agree.
fn reserve_add_ons(code: i16, payload: Option<&str>) -> i64 {
    TaskType::from_code(i64::from(code)).map_or(0, |t| max_add_ons_text(t, payload))
}

/// The started tasks in the order they were picked (fairness, then priority and FIFO).
fn hand_out(started: &[tokio_postgres::Row], run: &[i64]) -> Vec<ClaimedTask> {
    let mut tasks: Vec<ClaimedTask> = started
        .iter()
        .map(|r| {
            let payload: String = r.get(4);
            let price: i64 = r.get(6);
            let reserved = price + reserve_add_ons(r.get(3), Some(&payload));
            ClaimedTask {
                seq: r.get(0),
                id: r.get(1),
                org: r.get(2),
                task_type: TaskType::from_code(i64::from(r.get::<_, i16>(3)))
                    .unwrap_or(TaskType::Chatgpt),
                payload: payload.into_boxed_str(),
                attempt: r.get::<_, i32>(5).max(1) as u32,
                credits_to_charge: price,
                reserved,
                usage: None,
                row_at: Some(r.get::<_, String>(7).into_boxed_str()),
            }
        })
        .collect();
    let order: HashMap<i64, usize> = run.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    tasks.sort_by_key(|t| order.get(&t.seq).copied().unwrap_or(usize::MAX));
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(org: i64, concurrency: i32, credits: i64) -> Locked {
        Locked {
            org,
            concurrency,
            credits,
            queued: [1; 10],
            cursor: [0; 10],
        }
    }

    /// The page asked in advance is the walk's own first statement: the highest priority with
    /// queued tasks, at its cursor, the whole share plus the slack (at most a full page); none
    /// for an organization with no share or nothing queued.
    #[test]
    fn the_first_page_is_the_walks_first_statement() {
        let mut l = locked(7, 10, 100);
        l.queued = [0, 3, 0, 0, 5, 0, 0, 0, 0, 0];
        l.cursor = [0, 11, 0, 0, 55, 0, 0, 0, 0, 0];
        let turn = |want| Turn {
            org: 7,
            free: 10,
            budget: 100,
            want,
        };
        let f = first_page(&turn(4), &l).expect("a first page");
        assert_eq!((f.org, f.priority, f.prio, f.from), (7, 4, 5, 55));
        assert_eq!(f.page, 4 + PAGE_SLACK);
        assert_eq!(
            first_page(&turn(10_000), &l).map(|f| f.page),
            Some(PAGE_MAX)
        );
        assert!(first_page(&turn(0), &l).is_none());
        l.queued = [0; 10];
        assert!(first_page(&turn(4), &l).is_none());
    }

    #[test]
    fn slots_are_shared_one_per_turn_and_capped_organizations_are_skipped() {
        let l = [locked(1, 10, 100), locked(2, 2, 50), locked(3, 1, 10)];
        // Organization 2 runs both of its slots' worth already; 3 has spent 4 credits.
        let used = HashMap::from([(2, (2, 0)), (3, (0, 4))]);
        let turns = share_slots(&l, &used, 5);
        let got: Vec<(i64, i64, i64)> = turns.iter().map(|t| (t.org, t.want, t.budget)).collect();
        assert_eq!(got, vec![(1, 4, 100), (3, 1, 6)]);
    }

    #[test]
    fn the_pick_reads_the_payload_of_the_task_type_that_has_add_ons() {
        // `PICK`'s `task_type = 0` is AI Mode, the only type billed more after the run.
        assert_eq!(TaskType::Aimode.code(), 0);
        assert!(PICK.contains("CASE WHEN task_type = 0 THEN payload END"));
        assert!(PICK_OPEN.contains("CASE WHEN task_type = 0 THEN payload END"));
        let expand = r#"{"prompt":"a","include":{"expandProducts":true}}"#;
        assert_eq!(reserve_add_ons(0, Some(expand)), 6);
        assert_eq!(reserve_add_ons(0, None), 0);
        assert_eq!(reserve_add_ons(4, Some(expand)), 0);
    }

    #[test]
    fn at_most_max_organizations_get_a_turn() {
        let l = [locked(1, 5, 0), locked(2, 5, 0), locked(3, 5, 0)];
        let turns = share_slots(&l, &HashMap::new(), 2);
        let got: Vec<(i64, i64)> = turns.iter().map(|t| (t.org, t.want)).collect();
        assert_eq!(got, vec![(1, 1), (2, 1)]);
    }
}
