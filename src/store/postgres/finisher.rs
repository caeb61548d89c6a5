//! The finisher: how attempts end, grouped into one transaction per batch (group commit).
//!
//! [`Store::finish`](crate::store::Store::finish) hands its outcomes to this node's finisher
//! task over a channel and waits for the commit. The finisher takes everything queued up to
//! [`MAX_FINISH_GROUP`] outcomes and commits it as one transaction ([`FINISHERS`] groups at a
//! time): the task rows, the webhook deliveries of the tasks that became terminal (the outbox),
//! the queued counts and cursors of retried tasks, and this node's finish-side counter row per
//! organization (running count, reservations, charges), on the counter side of that group
//! ([`FINISH_SIDES`]), so groups in flight together never wait for each other. A finish only
//! applies while the task is still PROCESSING with the same attempt number, so an attempt taken
//! over by another node changes nothing.
//!
//! The transaction first holds this node's lease ([`HOLD_LEASE`](super::lease::HOLD_LEASE)), so
//! no reaper deletes the node's counter rows while it writes them. A lease that ran out but was
//! not reaped yet still lets outcomes commit (the tasks are still this node's, and the reaper
//! waits for the commit, then finds them finished); a node found reaped lets its outcomes go:
//! its tasks were requeued and may run elsewhere.
//!
//! Whatever the outcome, an attempt's upstream usage is added to its task's `usage` by the same
//! statement (summed in SQL, see `usage_plus!`).
//!
//! `finished_ms` and a new delivery's due time are this node's [`Clock`](crate::clock::Clock)
//! reading; a retry's `run_after_ms` was decided by the dispatcher.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Shared;
use super::cluster::NOTIFY_WORK;
use super::counters::{OrgDelta, REQUEUE, requeue};
use super::errors::pg_err;
use super::lease::{self, Held};
use crate::store::{ClaimedTask, Error, Outcome, Result};

/// Most outcomes folded into one finish transaction. A task's slot frees only when its group
/// commits: when a wave of attempts ends together (a slow engine, many in flight), smaller
/// groups free the first slots sooner. Measured (docs/PERFORMANCE.md): 1024 → 256 with three
/// finishers took 5,000 in flight on a 2 s engine from 94.5% to 95.5% of the ideal (medians of
/// 5), the drain level within the noise (−2%); 256 with two finishers drained 8% less.
const MAX_FINISH_GROUP: usize = 256;
/// Finish transactions in flight at once per node. Several let one group's statements run while
/// another waits for its durable commit. Measured (docs/PERFORMANCE.md): with groups of 1024,
/// 1 → 2 drained +24% on one node and 4 was no better than 2; with groups of 256, three keep the
/// drain where two groups of 1024 had it.
const FINISHERS: usize = FINISH_SIDES.len();
/// The counter side (`org_nodes.side`, `run_lanes.side`) each finish group in flight writes: one
/// per group, so groups never wait for each other's commit on a counter row. Sides up to 1 are
/// tasks (0 is the claims'), side 2 is sync calls (see [`sync`](super::sync)): every reader sums
/// `side < 2` for the running tasks, so a finish side is 1 or below 0.
pub(super) const FINISH_SIDES: [i16; 3] = [1, -1, -2];

/// SQL: the task's `usage` (`t.usage`) plus its attempt's (`u.usage`, a JSON object or NULL), field
/// by field (a field either side has is kept; absent counts as 0); unchanged when `u.usage` is
/// NULL. Both are stored as text (`0006_usage.sql`).
macro_rules! usage_plus {
    () => {
        "usage = CASE WHEN u.usage IS NULL THEN t.usage WHEN t.usage IS NULL THEN u.usage
                 ELSE (SELECT jsonb_object_agg(k, n)::text
                         FROM (SELECT key AS k, sum(value::bigint) AS n
                                 FROM (SELECT key, value FROM jsonb_each_text(t.usage::jsonb)
                                       UNION ALL
                                       SELECT key, value FROM jsonb_each_text(u.usage::jsonb)) AS e
                                GROUP BY key) AS s) END"
    };
}

/// The terminal-outcome update: the arrays `$1` seq, `$2` attempt, `$3` status, `$4` response,
/// `$5` charge, `$7` usage (plus `$arrays`, named `$names`), `$6` the finish time; each row
/// found by `$found` and applied only while still PROCESSING in that attempt. Returns what the
/// counters and the outbox need.
macro_rules! finish_terminal {
    ($arrays:literal, $names:literal, $found:literal) => {
        concat!(
            "UPDATE tasks AS t SET status = u.status, response = u.response,
                        credits_charged = u.charged, finished_ms = $6, node = NULL, ",
            usage_plus!(),
            "
                   FROM unnest($1::bigint[], $2::int[], $3::smallint[], $4::text[], $5::bigint[],
                               $7::text[]",
            $arrays,
            ") AS u(seq, attempt, status, response, charged, usage",
            $names,
            ")
                  WHERE ",
            $found,
            " AND t.seq = u.seq AND t.status = 1 AND t.attempts = u.attempt
                 RETURNING t.seq, t.org, u.charged, t.webhook_url, t.id, t.task_type"
        )
    };
}

/// Terminal outcomes found by `seq` (the primary key).
const FINISH_TERMINAL: &str = finish_terminal!("", "", "TRUE");

/// Terminal outcomes found by address: `$8` is each task's row version as its claim left it
/// (`ctid` as text, [`ClaimedTask::row_at`]), so no primary-key lookup is needed. Only the
/// finish and a reaper's requeue change a PROCESSING row; after a requeue the address holds a
/// dead version and the row does not match, as by `seq` the attempt check would not:
/// [`finish_terminal`] tries the rows this did not update by `seq` ([`FINISH_TERMINAL`]).
const FINISH_TERMINAL_AT: &str = finish_terminal!(", $8::text[]", ", at", "t.ctid = u.at::tid");

/// The outbox: a pending delivery per task that just became terminal with a webhook URL, due
/// now (`$5`), committed with the terminal statuses.
const INSERT_DELIVERIES: &str = "INSERT INTO webhook_deliveries(seq, org, id, url, next_at, created_ms)
             SELECT u.seq, u.org, u.id, u.url, $5, $5
               FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::text[]) AS u(seq, org, id, url)
             ON CONFLICT (seq) DO NOTHING";

/// Retries (`$1` seq, `$2` attempt, `$3` run after, `$4` usage, as arrays): back to QUEUED with
/// no node, runnable again at their time; only tasks still PROCESSING in that attempt.
const FINISH_RETRY: &str = concat!(
    "UPDATE tasks AS t SET status = 0, run_after_ms = u.run_after, node = NULL, ",
    usage_plus!(),
    "
                   FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::text[])
                        AS u(seq, attempt, run_after, usage)
                  WHERE t.seq = u.seq AND t.status = 1 AND t.attempts = u.attempt
                 RETURNING t.seq, t.org, t.priority, u.run_after, t.task_type"
);

/// Requeues (`$1` seq, `$2` attempt, `$3` usage, as arrays): back to QUEUED at their own place,
/// runnable at once, the attempt not spent (`attempts` one less; `started_ms` NULL again when
/// none is left); only tasks still PROCESSING in that attempt.
const FINISH_REQUEUE: &str = concat!(
    "UPDATE tasks AS t SET status = 0, attempts = t.attempts - 1, run_after_ms = NULL, node = NULL,
                        started_ms = CASE WHEN t.attempts <= 1 THEN NULL ELSE t.started_ms END, ",
    usage_plus!(),
    "
                   FROM unnest($1::bigint[], $2::int[], $3::text[]) AS u(seq, attempt, usage)
                  WHERE t.seq = u.seq AND t.status = 1 AND t.attempts = u.attempt
                 RETURNING t.seq, t.org, t.priority, t.task_type"
);

/// This node's finish-side counter rows (side `$3`, one of [`FINISH_SIDES`]) of organizations
/// `$1` (ascending: the lock order): `$4` tasks left PROCESSING, releasing `$5` reserved credits
/// and charging `$6` (arrays, one element per organization). No claim and no other node's
/// finish, nor another finish group of this node, waits on these rows.
const RELEASE_SLOTS: &str = "INSERT INTO org_nodes(org, node, side, processing, reserved, charged)
             SELECT u.org, $2, $3, -u.p, -u.r, u.c
               FROM unnest($1::bigint[], $4::int[], $5::bigint[], $6::bigint[]) AS u(org, p, r, c)
             ON CONFLICT (org, node, side) DO UPDATE SET
                processing = org_nodes.processing + EXCLUDED.processing,
                reserved = org_nodes.reserved + EXCLUDED.reserved,
                charged = org_nodes.charged + EXCLUDED.charged";

/// This node's finish-side (side `$4`) running counts per task type: `$2[i]` tasks of type
/// `$1[i]` left PROCESSING (sorted by type: the lock order). See
/// [`TAKE_LANES`](super::claim::TAKE_LANES).
const RELEASE_LANES: &str = "INSERT INTO run_lanes(node, task_type, side, n)
             SELECT $3, u.t, $4, -u.n FROM unnest($1::smallint[], $2::int[]) AS u(t, n)
             ON CONFLICT (node, task_type, side) DO UPDATE SET n = run_lanes.n + EXCLUDED.n";

/// One `finish` call waiting for the finisher.
pub(crate) struct FinishReq {
    rows: Vec<FinishRow>,
    reply: oneshot::Sender<Result<()>>,
}

/// One attempt's outcome, as the finisher writes it.
pub(crate) struct FinishRow {
    pub(crate) seq: i64,
    pub(crate) attempt: i32,
    /// The credits the claim reserved for it.
    pub(crate) cost: i64,
    /// What the attempt used upstream, as its stored JSON.
    pub(crate) usage: Option<String>,
    /// The row version the claim left ([`ClaimedTask::row_at`]).
    pub(crate) at: Option<Box<str>>,
    pub(crate) kind: FinishKind,
}

pub(crate) enum FinishKind {
    Done {
        status: i16,
        response: Arc<str>,
        charged: i64,
    },
    Retry {
        run_after_ms: i64,
    },
    Requeue,
}

/// [`Store::finish`](crate::store::Store::finish): sends the outcomes to the finisher and
/// waits for their commit.
pub(crate) async fn finish(
    finisher: &mpsc::Sender<FinishReq>,
    outcomes: &[(&ClaimedTask, &Outcome)],
) -> Result<()> {
    let rows = outcomes
        .iter()
        .map(|(t, o)| FinishRow {
            seq: t.seq,
            attempt: t.attempt as i32,
            cost: t.reserved,
            at: t.row_at.clone(),
            usage: t
                .usage
                .and_then(crate::store::Usage::nonempty)
                .map(crate::store::Usage::to_json),
            kind: match o {
                Outcome::Completed { result, credits } => FinishKind::Done {
                    status: 2,
                    response: result.clone(),
                    charged: *credits,
                },
                Outcome::Failed { error } => FinishKind::Done {
                    status: 3,
                    response: crate::store::json_text(error).into(),
                    charged: 0,
                },
                Outcome::Retry { run_after_ms } => FinishKind::Retry {
                    run_after_ms: *run_after_ms,
                },
                Outcome::Requeue => FinishKind::Requeue,
            },
        })
        .collect();
    let (reply, rx) = oneshot::channel();
    finisher
        .send(FinishReq { rows, reply })
        .await
        .map_err(|_| Error::Unavailable("the finisher stopped".into()))?;
    rx.await
        .map_err(|_| Error::Unavailable("the finisher stopped".into()))?
}

/// Groups finishes into one transaction each (group commit).
/// Once `cancel` fires (the store is closing, so the dispatcher has stopped) it takes no new
/// outcomes, commits the ones already sent, and ends.
pub(crate) async fn run_finisher(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<FinishReq>,
    cancel: CancellationToken,
) {
    // A few groups in flight at once, each writing its own counter side: commits overlap
    // instead of queueing behind each other.
    let (side_back, mut sides) = mpsc::channel::<i16>(FINISHERS);
    for side in FINISH_SIDES {
        let _ = side_back.try_send(side);
    }
    let groups = TaskTracker::new();
    let mut closing = false;
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            _ = cancel.cancelled(), if !closing => {
                // Refuse new outcomes; `recv` still yields the buffered ones, then `None`.
                rx.close();
                closing = true;
                continue;
            }
        };
        let Some(first) = next else { break };
        let Some(side) = sides.recv().await else {
            break;
        };
        let side = SideHeld {
            side,
            back: side_back.clone(),
        };
        let mut group = vec![first];
        let mut n = group[0].rows.len();
        while n < MAX_FINISH_GROUP {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.rows.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        groups.spawn(async move {
            finish_group(&shared, group, side.side).await;
            drop(side);
        });
    }
    groups.close();
    groups.wait().await;
}

/// A finish group's counter side, given back to the finisher when the group ends, however it
/// ends (a panic included: no side is ever lost).
struct SideHeld {
    side: i16,
    back: mpsc::Sender<i16>,
}

impl Drop for SideHeld {
    fn drop(&mut self) {
        // The channel has room for every side, so this never fails while the finisher runs.
        let _ = self.back.try_send(self.side);
    }
}

/// Commits one group of finish calls on counter side `side` and answers each call.
async fn finish_group(shared: &Arc<Shared>, group: Vec<FinishReq>, side: i16) {
    let rows: Vec<&FinishRow> = group.iter().flat_map(|g| g.rows.iter()).collect();
    // Bounded: a held lock or a dead connection fails the group (its finishes are retried by
    // their callers) instead of stalling every finish of this node.
    let result = shared.bounded(finish_rows(shared, &rows, side)).await;
    drop(rows);
    if result.is_ok() {
        shared.notify.notify_one();
        shared.bump();
    } else if group.len() > 1 {
        // One call's outcomes may be what failed (its organization's row is held locked): the
        // other calls must not fail with it, so each is tried alone.
        for g in group {
            let rows: Vec<&FinishRow> = g.rows.iter().collect();
            let alone = shared.bounded(finish_rows(shared, &rows, side)).await;
            if alone.is_ok() {
                shared.notify.notify_one();
                shared.bump();
            }
            let _ = g.reply.send(alone);
        }
        return;
    }
    for g in group {
        let _ = g.reply.send(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Unavailable(e.to_string().into())),
        });
    }
}

/// Terminal outcomes as the array parameters of [`FINISH_TERMINAL`] / [`FINISH_TERMINAL_AT`].
#[derive(Default)]
struct Terminal<'a> {
    seq: Vec<i64>,
    att: Vec<i32>,
    status: Vec<i16>,
    resp: Vec<&'a str>,
    charged: Vec<i64>,
    usage: Vec<Option<&'a str>>,
    /// The row addresses the claims left ([`ClaimedTask::row_at`]).
    at: Vec<Option<&'a str>>,
}

impl<'a> Terminal<'a> {
    /// The outcomes whose task is not in `found`.
    fn without(&self, found: &std::collections::HashSet<i64>) -> Terminal<'a> {
        let mut t = Terminal::default();
        for i in (0..self.seq.len()).filter(|&i| !found.contains(&self.seq[i])) {
            t.seq.push(self.seq[i]);
            t.att.push(self.att[i]);
            t.status.push(self.status[i]);
            t.resp.push(self.resp[i]);
            t.charged.push(self.charged[i]);
            t.usage.push(self.usage[i]);
            t.at.push(self.at[i]);
        }
        t
    }
}

/// A group's outcomes as the array parameters of [`FINISH_TERMINAL`] and [`FINISH_RETRY`].
#[derive(Default)]
struct Columns<'a> {
    /// Terminal outcomes.
    done: Terminal<'a>,
    /// Retries: seq, attempt, run after, usage.
    r_seq: Vec<i64>,
    r_att: Vec<i32>,
    r_after: Vec<i64>,
    r_usage: Vec<Option<&'a str>>,
    /// Requeues: seq, attempt, usage.
    q_seq: Vec<i64>,
    q_att: Vec<i32>,
    q_usage: Vec<Option<&'a str>>,
    /// The credits each task reserved, by seq.
    cost_of: HashMap<i64, i64>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[&'a FinishRow]) -> Columns<'a> {
        let mut c = Columns::default();
        for r in rows {
            c.cost_of.insert(r.seq, r.cost);
            match &r.kind {
                FinishKind::Done {
                    status,
                    response,
                    charged,
                } => {
                    let d = &mut c.done;
                    d.seq.push(r.seq);
                    d.att.push(r.attempt);
                    d.status.push(*status);
                    d.resp.push(response);
                    d.charged.push(*charged);
                    d.usage.push(r.usage.as_deref());
                    d.at.push(r.at.as_deref());
                }
                FinishKind::Retry { run_after_ms } => {
                    c.r_seq.push(r.seq);
                    c.r_att.push(r.attempt);
                    c.r_after.push(*run_after_ms);
                    c.r_usage.push(r.usage.as_deref());
                }
                FinishKind::Requeue => {
                    c.q_seq.push(r.seq);
                    c.q_att.push(r.attempt);
                    c.q_usage.push(r.usage.as_deref());
                }
            }
        }
        c
    }
}

/// The deliveries of the tasks that reached a terminal status (columns of
/// [`INSERT_DELIVERIES`]).
#[derive(Default)]
struct Hooks {
    seq: Vec<i64>,
    org: Vec<i64>,
    id: Vec<Uuid>,
    url: Vec<String>,
}

/// Commits one group of outcomes, this node's counters on side `side` (one of
/// [`FINISH_SIDES`]; see the module docs).
pub(crate) async fn finish_rows(shared: &Shared, rows: &[&FinishRow], side: i16) -> Result<()> {
    let now = shared.clock.now_ms();
    let mut client = shared.conn().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let done = || rows.iter().map(|r| (r.seq, r.attempt));
    // Fencing: no reaper takes this node over while the outcomes are written. Once it was
    // reaped, its attempts were requeued (their outcomes would match nothing): they are let go.
    if lease::hold(&tx, &shared.lease, shared.node).await? == Held::Reaped {
        drop(tx);
        shared.running.finished(done());
        tracing::warn!(
            outcomes = rows.len(),
            "Dropped outcomes: this node was reaped and its tasks were taken over"
        );
        return Ok(());
    }
    let cols = Columns::of(rows);
    // org → what its counters lose and gain.
    let mut per_org: BTreeMap<i64, OrgDelta> = Default::default();
    // The task type of each attempt that left PROCESSING.
    let mut left: Vec<i16> = Vec::new();
    let hooks = finish_terminal(&tx, &cols, now, &mut per_org, &mut left).await?;
    if !hooks.seq.is_empty() {
        tx.execute(
            &tx.prepare_cached(INSERT_DELIVERIES).await.map_err(pg_err)?,
            &[&hooks.seq, &hooks.org, &hooks.id, &hooks.url, &now],
        )
        .await
        .map_err(pg_err)?;
    }
    finish_retries(shared, &tx, &cols, &mut per_org, &mut left).await?;
    let requeued = finish_requeues(&tx, &cols, &mut per_org, &mut left).await?;
    update_counters(shared, &tx, &per_org, &left, side).await?;
    if requeued {
        // Runnable at once: every node's dispatcher may take them.
        tx.execute(&tx.prepare_cached(NOTIFY_WORK).await.map_err(pg_err)?, &[])
            .await
            .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    shared.running.finished(done());
    if !hooks.seq.is_empty() {
        shared.hook_notify.notify_one();
    }
    Ok(())
}

/// Step 1: the terminal outcomes, by row address ([`FINISH_TERMINAL_AT`]), then the rest by
/// `seq` ([`FINISH_TERMINAL`]); returns the deliveries they make.
async fn finish_terminal(
    tx: &deadpool_postgres::Transaction<'_>,
    cols: &Columns<'_>,
    now: i64,
    per_org: &mut BTreeMap<i64, OrgDelta>,
    left: &mut Vec<i16>,
) -> Result<Hooks> {
    let mut hooks = Hooks::default();
    let d = &cols.done;
    if d.seq.is_empty() {
        return Ok(hooks);
    }
    let mut done = Vec::new();
    if d.at.iter().any(Option::is_some) {
        let stmt = tx
            .prepare_cached(FINISH_TERMINAL_AT)
            .await
            .map_err(pg_err)?;
        done = tx
            .query(
                &stmt,
                &[
                    &d.seq, &d.att, &d.status, &d.resp, &d.charged, &now, &d.usage, &d.at,
                ],
            )
            .await
            .map_err(pg_err)?;
    }
    if done.len() < d.seq.len() {
        // Rows without an address, or whose address no longer holds them: by `seq`.
        let rest = d.without(&done.iter().map(|r| r.get(0)).collect());
        let stmt = tx.prepare_cached(FINISH_TERMINAL).await.map_err(pg_err)?;
        done.extend(
            tx.query(
                &stmt,
                &[
                    &rest.seq,
                    &rest.att,
                    &rest.status,
                    &rest.resp,
                    &rest.charged,
                    &now,
                    &rest.usage,
                ],
            )
            .await
            .map_err(pg_err)?,
        );
    }
    for r in &done {
        let (seq, org, charged): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        if let Some(url) = r.get::<_, Option<String>>(3) {
            hooks.seq.push(seq);
            hooks.org.push(org);
            hooks.id.push(r.get::<_, Uuid>(4));
            hooks.url.push(url);
        }
        left.push(r.get(5));
        let e = per_org.entry(org).or_default();
        e.released += 1;
        e.cost += cols.cost_of.get(&seq).copied().unwrap_or(0);
        e.charged += charged;
    }
    Ok(hooks)
}

/// Step 2: the retries ([`FINISH_RETRY`]); their due times go on this node's retry heap so
/// its dispatcher wakes for them.
async fn finish_retries(
    shared: &Shared,
    tx: &deadpool_postgres::Transaction<'_>,
    cols: &Columns<'_>,
    per_org: &mut BTreeMap<i64, OrgDelta>,
    left: &mut Vec<i16>,
) -> Result<()> {
    if cols.r_seq.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(FINISH_RETRY).await.map_err(pg_err)?;
    let back = tx
        .query(
            &stmt,
            &[&cols.r_seq, &cols.r_att, &cols.r_after, &cols.r_usage],
        )
        .await
        .map_err(pg_err)?;
    let mut due = Vec::new();
    for r in &back {
        let (seq, org, prio, after): (i64, i64, i16, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        left.push(r.get(4));
        let e = per_org.entry(org).or_default();
        e.released += 1;
        e.cost += cols.cost_of.get(&seq).copied().unwrap_or(0);
        e.queued.push((prio as u8, 1));
        e.requeued.push((prio as u8, seq));
        due.push(after);
    }
    let mut heap = shared.retries.lock().unwrap_or_else(|e| e.into_inner());
    heap.extend(due.into_iter().map(Reverse));
    Ok(())
}

/// Step 3: the requeues ([`FINISH_REQUEUE`]): QUEUED again at their own place, runnable now,
/// so the claim cursors come back to them. Returns whether any applied.
async fn finish_requeues(
    tx: &deadpool_postgres::Transaction<'_>,
    cols: &Columns<'_>,
    per_org: &mut BTreeMap<i64, OrgDelta>,
    left: &mut Vec<i16>,
) -> Result<bool> {
    if cols.q_seq.is_empty() {
        return Ok(false);
    }
    let back = tx
        .query(
            &tx.prepare_cached(FINISH_REQUEUE).await.map_err(pg_err)?,
            &[&cols.q_seq, &cols.q_att, &cols.q_usage],
        )
        .await
        .map_err(pg_err)?;
    for r in &back {
        let (seq, org, prio): (i64, i64, i16) = (r.get(0), r.get(1), r.get(2));
        left.push(r.get(3));
        let e = per_org.entry(org).or_default();
        e.released += 1;
        e.cost += cols.cost_of.get(&seq).copied().unwrap_or(0);
        e.queued.push((prio as u8, 1));
        e.requeued.push((prio as u8, seq));
    }
    Ok(!back.is_empty())
}

/// Step 4: the counters. Retried tasks' queued counts and cursors ([`REQUEUE`]), then this
/// node's finish-side rows on side `side` ([`RELEASE_SLOTS`]), then its finish-side lane counts
/// ([`RELEASE_LANES`]). Lock order: `orgs` rows before `org_nodes` rows, each by organization
/// id (BTreeMap order), then `run_lanes` rows by task type.
async fn update_counters(
    shared: &Shared,
    tx: &deadpool_postgres::Transaction<'_>,
    per_org: &BTreeMap<i64, OrgDelta>,
    left: &[i16],
    side: i16,
) -> Result<()> {
    let stmt = tx.prepare_cached(REQUEUE).await.map_err(pg_err)?;
    for (org, delta) in per_org.iter().filter(|(_, d)| !d.queued.is_empty()) {
        requeue(tx, &stmt, org, &delta.queued, &delta.requeued).await?;
    }
    if !per_org.is_empty() {
        let orgs: Vec<i64> = per_org.keys().copied().collect();
        let released: Vec<i32> = per_org.values().map(|d| d.released).collect();
        let cost: Vec<i64> = per_org.values().map(|d| d.cost).collect();
        let charged: Vec<i64> = per_org.values().map(|d| d.charged).collect();
        let stmt = tx.prepare_cached(RELEASE_SLOTS).await.map_err(pg_err)?;
        tx.execute(
            &stmt,
            &[&orgs, &shared.node, &side, &released, &cost, &charged],
        )
        .await
        .map_err(pg_err)?;
    }
    let (types, counts) = super::claim::per_type(left.iter().copied());
    if !types.is_empty() {
        let stmt = tx.prepare_cached(RELEASE_LANES).await.map_err(pg_err)?;
        tx.execute(&stmt, &[&types, &counts, &shared.node, &side])
            .await
            .map_err(pg_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finish group's side goes back to the finisher when the group ends, and when it panics.
    #[test]
    fn a_side_comes_back_however_its_group_ends() {
        let (back, mut sides) = mpsc::channel::<i16>(FINISHERS);
        drop(SideHeld {
            side: FINISH_SIDES[1],
            back: back.clone(),
        });
        assert_eq!(sides.try_recv().ok(), Some(FINISH_SIDES[1]));
        let held = SideHeld {
            side: FINISH_SIDES[2],
            back: back.clone(),
        };
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = held;
            panic!("a group panics");
        }));
        assert!(panicked.is_err());
        assert_eq!(sides.try_recv().ok(), Some(FINISH_SIDES[2]));
        assert!(sides.try_recv().is_err(), "no side came back twice");
    }
}
