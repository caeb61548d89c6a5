//! Reconciliation: what the database says this node runs against what it really runs.
//!
//! A claim commits, then its reply travels back; if the connection drops in between, the
//! claim fails here although the database has the tasks PROCESSING on this node, their slots
//! taken. Nobody runs them and no reaper frees them (this node is alive). So this node keeps
//! the attempts it handed to its dispatcher and has not finished ([`Running`]), and the
//! *suspects*: tasks a claim tried to start but did not hand out (it failed or was dropped
//! after picking them: its commit may have happened anyway), and attempts it gave up
//! ([`Running::forget_all`]). Every heartbeat it reads the suspects' rows by seq
//! ([`SUSPECTS_RUNNING`]): one PROCESSING on this node that it does not run is requeued like
//! an attempt that never started (a `Requeue` outcome through the finisher: back to QUEUED at
//! its place, the attempt not spent, the slot and reservation released). No other task can be
//! PROCESSING on this node unknown to it, so no index by node is needed (a claim writes no
//! index entry, `0009_hot_claims.sql`), and a round without suspects reads nothing.
//!
//! The comparison is exact, with no grace period: a claim registers its tasks before it
//! returns, and a round whose read may have raced a claim still in flight (one that began
//! before the read) is skipped. A finish forgets its tasks only after its commit. A suspect
//! leaves the set once a round has settled it, unless it became a suspect again meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio::sync::watch;

use super::Shared;
use super::errors::pg_err;
use super::finisher::{self, FinishKind, FinishRow};
use crate::store::Result;

/// Which of tasks `$1` are PROCESSING on this node (`$2`) by the database: seq, attempt,
/// reserved credits (primary key lookups).
const SUSPECTS_RUNNING: &str = "SELECT seq, attempts, credits_to_charge FROM tasks
             WHERE seq = ANY($1) AND status = 1 AND node = $2";

/// The attempts this node handed out and has not finished, and its claims in flight.
#[derive(Default)]
pub(crate) struct Running {
    inner: Mutex<Inner>,
    /// Changes when every attempt is given up ([`Running::forget_all`]).
    forgotten: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// seq → attempt.
    tasks: HashMap<i64, i32>,
    next_ticket: u64,
    claims: BTreeSet<u64>,
    /// Tasks that may be PROCESSING on this node although it does not run them: seq → the
    /// generation at which they became suspect (a later one keeps them for the next round).
    suspects: HashMap<i64, u64>,
    generation: u64,
}

impl Inner {
    fn suspect(&mut self, seqs: impl IntoIterator<Item = i64>) {
        self.generation += 1;
        let g = self.generation;
        for seq in seqs {
            self.suspects.insert(seq, g);
        }
    }
}

/// A claim in flight; its tasks are registered by [`ClaimTicket::handed_out`]. Dropped (the
/// claim failed, or its future was dropped) it only leaves the set of claims in flight.
pub(crate) struct ClaimTicket<'a> {
    running: &'a Running,
    ticket: u64,
    /// What the claim tries to start: suspects unless handed out.
    trying: Vec<i64>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A claim begins.
    pub(crate) fn claim(&self) -> ClaimTicket<'_> {
        let mut inner = self.lock();
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        inner.claims.insert(ticket);
        ClaimTicket {
            running: self,
            ticket,
            trying: Vec::new(),
        }
    }

    /// These attempts' outcomes committed (or were let go): they no longer run here.
    pub(crate) fn finished(&self, done: impl IntoIterator<Item = (i64, i32)>) {
        let mut inner = self.lock();
        for (seq, attempt) in done {
            if inner.tasks.get(&seq) == Some(&attempt) {
                inner.tasks.remove(&seq);
            }
        }
    }

    /// This node gives up every attempt it runs (it was reaped, or its lease is no longer
    /// provably current): their runs stop ([`Running::abandoned`]); the ones the database still
    /// gives this node are requeued by the next [`reconcile`], or by a reaper.
    pub(crate) fn forget_all(&self) -> usize {
        let n = {
            let mut inner = self.lock();
            let gone = std::mem::take(&mut inner.tasks);
            let n = gone.len();
            inner.suspect(gone.into_keys());
            n
        };
        self.forgotten.send_modify(|g| *g = g.wrapping_add(1));
        n
    }

    /// Returns once attempt `attempt` of task `seq` no longer runs here by this node's
    /// account (given up, or never handed out).
    pub(crate) async fn abandoned(&self, seq: i64, attempt: i32) {
        let mut changes = self.forgotten.subscribe();
        loop {
            if self.lock().tasks.get(&seq) != Some(&attempt) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

impl ClaimTicket<'_> {
    /// The claim is about to start tasks `seqs`: from now on it may commit without this node
    /// hearing of it, so unless they are handed out they become suspects.
    pub(crate) fn trying(&mut self, seqs: &[i64]) {
        self.trying = seqs.to_vec();
    }

    /// The claim committed and hands these attempts out. Unless `current` (the lease ran out
    /// while the claim ran) they are not taken on: given up at once, requeued like a lost claim.
    pub(crate) fn handed_out(mut self, tasks: impl IntoIterator<Item = (i64, i32)>, current: bool) {
        let tried = std::mem::take(&mut self.trying);
        let mut inner = self.running.lock();
        if current {
            inner.tasks.extend(tasks);
        } else {
            inner.suspect(tried);
        }
    }
}

impl Drop for ClaimTicket<'_> {
    fn drop(&mut self) {
        let tried = std::mem::take(&mut self.trying);
        let mut inner = self.running.lock();
        inner.claims.remove(&self.ticket);
        if !tried.is_empty() {
            inner.suspect(tried);
        }
    }
}

/// Requeues this node's PROCESSING tasks that it does not run (see the module docs); returns
/// how many.
pub(crate) async fn reconcile(shared: &Shared) -> Result<u64> {
    let (mark, checked): (u64, Vec<(i64, u64)>) = {
        let inner = shared.running.lock();
        let checked = inner.suspects.iter().map(|(s, g)| (*s, *g)).collect();
        (inner.next_ticket, checked)
    };
    if checked.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = checked.iter().map(|(s, _)| *s).collect();
    let rows = {
        let client = shared.conn().await?;
        client
            .query(SUSPECTS_RUNNING, &[&seqs, &shared.node])
            .await
            .map_err(pg_err)?
    };
    let orphans: Vec<FinishRow> = {
        let inner = shared.running.lock();
        if inner.claims.first().is_some_and(|&t| t < mark) {
            // A claim that began before the read has not returned: its tasks may be in the
            // rows and not yet registered. The next round decides.
            return Ok(0);
        }
        rows.iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i32>(1), r.get::<_, i64>(2)))
            .filter(|(seq, attempt, _)| inner.tasks.get(seq) != Some(attempt))
            .map(|(seq, attempt, cost)| FinishRow {
                seq,
                attempt,
                cost,
                usage: None,
                at: None,
                kind: FinishKind::Requeue,
            })
            .collect()
    };
    if !orphans.is_empty() {
        let refs: Vec<&FinishRow> = orphans.iter().collect();
        finisher::finish_rows(shared, &refs, finisher::FINISH_SIDES[0]).await?;
        shared.notify.notify_one();
        shared.bump();
        tracing::warn!(
            tasks = orphans.len(),
            "Requeued tasks the database had running on this node but it did not run (a lost claim reply)"
        );
    }
    // Settled: not running here unknown to this node (any more). One that became a suspect
    // again since the read stays for the next round.
    let mut inner = shared.running.lock();
    for (seq, generation) in checked {
        if inner.suspects.get(&seq) == Some(&generation) {
            inner.suspects.remove(&seq);
        }
    }
    Ok(orphans.len() as u64)
}
