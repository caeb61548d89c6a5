//! The per-organization counters kept beside the task rows, and the statements that move them.
//!
//! Nothing counts task rows on a hot path: `orgs.q1..q10` hold the QUEUED tasks per priority
//! (waiting retries included), `orgs.c1..c10` the claim cursor per priority (the lowest `seq`
//! that may still be queued), and `org_nodes` rows the running tasks, reservations and
//! unfolded charges per (organization, node, side). Every transaction that changes a task's
//! status changes these in the same transaction; the helpers here turn a list of changes into
//! the ten per-priority parameters those statements take.
//!
//! Lock order, in every transaction: `orgs` rows before `org_nodes` rows, each by organization
//! id. No deadlocks.

use tokio_postgres::types::ToSql;

/// Statement parameters, borrowed.
pub(crate) type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// Tasks went back to QUEUED (a retry, a dead node's tasks): the queued counts change by
/// `$2..$11` and each claim cursor comes down to `$12..$21` where that is lower, so the next
/// claim walks back to them. `$1` is the organization.
pub(super) const REQUEUE: &str = concat!(
    "UPDATE orgs SET ",
    q_deltas_from_2!(),
    ", c1 = LEAST(c1, $12), c2 = LEAST(c2, $13), c3 = LEAST(c3, $14), c4 = LEAST(c4, $15), ",
    "c5 = LEAST(c5, $16), c6 = LEAST(c6, $17), c7 = LEAST(c7, $18), c8 = LEAST(c8, $19), ",
    "c9 = LEAST(c9, $20), c10 = LEAST(c10, $21) WHERE id = $1"
);

/// Queued tasks went away without being claimed (a submission's duplicates, a cleared
/// queue): the queued counts change by `$2..$11`. `$1` is the organization.
pub(super) const ADD_QUEUED: &str =
    concat!("UPDATE orgs SET ", q_deltas_from_2!(), " WHERE id = $1");

/// What a transaction changes in one organization's counters.
#[derive(Debug, Default)]
pub(crate) struct OrgDelta {
    /// Tasks that left PROCESSING.
    pub(crate) released: i32,
    /// Credits they had reserved.
    pub(crate) cost: i64,
    /// Credits charged.
    pub(crate) charged: i64,
    /// `(priority, change)` of the queued counts.
    pub(crate) queued: Vec<(u8, i64)>,
    /// `(priority, seq)` of the tasks that went back to QUEUED.
    pub(crate) requeued: Vec<(u8, i64)>,
}

/// Per priority, the lowest seq among `(priority, seq)` pairs (`i64::MAX` where none).
pub(crate) fn lows<'a>(items: impl IntoIterator<Item = &'a (u8, i64)>) -> [i64; 10] {
    let mut low = [i64::MAX; 10];
    for &(p, seq) in items {
        let i = usize::from(p.clamp(1, 10) - 1);
        low[i] = low[i].min(seq);
    }
    low
}

/// Per-priority deltas from `(priority, change)` pairs.
pub(crate) fn deltas(items: impl IntoIterator<Item = (u8, i64)>) -> [i64; 10] {
    let mut d = [0i64; 10];
    for (p, n) in items {
        d[usize::from(p.clamp(1, 10) - 1)] += n;
    }
    d
}

/// Appends ten per-priority values (priority 1 first) to a statement's parameters.
pub(crate) fn push_deltas<'a>(params: &mut Params<'a>, d: &'a [i64; 10]) {
    for v in d {
        params.push(v);
    }
}

/// Runs [`REQUEUE`] for one organization: `queued` changes the counts, `requeued` lowers the
/// cursors.
pub(crate) async fn requeue(
    tx: &deadpool_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    org: &i64,
    queued: &[(u8, i64)],
    requeued: &[(u8, i64)],
) -> crate::store::Result<()> {
    let d = deltas(queued.iter().copied());
    let low = lows(requeued.iter());
    let mut params: Params = vec![org];
    push_deltas(&mut params, &d);
    push_deltas(&mut params, &low);
    tx.execute(stmt, &params)
        .await
        .map_err(super::errors::pg_err)?;
    Ok(())
}

/// Runs [`ADD_QUEUED`] for one organization with the `(priority, change)` pairs.
pub(crate) async fn add_queued(
    tx: &deadpool_postgres::Transaction<'_>,
    org: &i64,
    changes: &[(u8, i64)],
) -> crate::store::Result<()> {
    let d = deltas(changes.iter().copied());
    let mut params: Params = vec![org];
    push_deltas(&mut params, &d);
    tx.execute(ADD_QUEUED, &params)
        .await
        .map_err(super::errors::pg_err)?;
    Ok(())
}
