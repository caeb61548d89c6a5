//! Engine lanes in the cluster: start-rate tokens shared by every node (`lane_rate`), and the
//! in-flight count a claim checks under the lane's advisory lock (used by [`super::claim`]).
//!
//! Rate: one row per lane holds its GCRA theoretical arrival time ([`crate::store::lanes`]).
//! [`TAKE_STARTS`] locks the row, computes the same arithmetic as
//! [`gcra_take`](crate::store::lanes::gcra_take) from the locked (latest) value and returns the
//! old and new times; the Rust function then decides `granted` from the old time and must agree
//! on the new one. Concurrent takes on any node queue on the row lock, so no start is granted
//! twice.

use super::PgStore;
use super::errors::pg_err;
use crate::store::lanes::{Grant, burst, gcra_take, interval_ms};
use crate::store::{Error, LaneStarts, Result};

/// Takes starts from lane `$1` at `$2` (ms): up to `$3` of them, emission interval `$4` ms,
/// burst `$5`. The CTE locks the row and reads its latest value; the update computes from it.
/// Returns the old and the new theoretical arrival time.
const TAKE_STARTS: &str = "WITH o AS (SELECT tat_ms FROM lane_rate WHERE name = $1 FOR UPDATE)
             UPDATE lane_rate AS l
                SET tat_ms = GREATEST(o.tat_ms, $2::bigint)
                             + $4::bigint * LEAST($3::bigint, GREATEST(0, ($5::bigint * $4
                                 - (GREATEST(o.tat_ms, $2) - $2)) / $4))
               FROM o WHERE l.name = $1
             RETURNING o.tat_ms, l.tat_ms";

/// Creates lane `$1`'s row (never used: anything may start).
const NEW_LANE: &str =
    "INSERT INTO lane_rate(name, tat_ms) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING";

/// Gives back `$2` ms of lane `$1`'s schedule (unused starts times the interval).
const RETURN_STARTS: &str = "UPDATE lane_rate SET tat_ms = tat_ms - $2 WHERE name = $1";

/// [`TaskQueue::take_lane_starts`](crate::store::TaskQueue::take_lane_starts).
pub(crate) async fn take_starts(
    store: &PgStore,
    lane: &str,
    want: u32,
    per_minute: u32,
    now_ms: i64,
) -> Result<LaneStarts> {
    if want == 0 {
        return Ok(LaneStarts {
            granted: 0,
            next_ms: None,
        });
    }
    let client = store.client().await?;
    let stmt = client.prepare_cached(TAKE_STARTS).await.map_err(pg_err)?;
    let (t, b, w) = (interval_ms(per_minute), burst(per_minute), i64::from(want));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&lane, &now_ms, &w, &t, &b];
    let mut row = client.query_opt(&stmt, &params).await.map_err(pg_err)?;
    if row.is_none() {
        client
            .execute(
                &client.prepare_cached(NEW_LANE).await.map_err(pg_err)?,
                &[&lane],
            )
            .await
            .map_err(pg_err)?;
        row = client.query_opt(&stmt, &params).await.map_err(pg_err)?;
    }
    let row = row.ok_or_else(|| Error::Other(format!("lane {lane:?} has no rate row").into()))?;
    let (old, new): (i64, i64) = (row.get(0), row.get(1));
    let g: Grant = gcra_take(old, now_ms, want, per_minute);
    if g.tat_ms != new {
        return Err(Error::Other(
            format!(
                "lane {lane:?}: the database's schedule ({new}) disagrees with GCRA ({})",
                g.tat_ms
            )
            .into(),
        ));
    }
    Ok(LaneStarts {
        granted: g.granted,
        next_ms: g.next_ms,
    })
}

/// [`TaskQueue::return_lane_starts`](crate::store::TaskQueue::return_lane_starts).
pub(crate) async fn return_starts(
    store: &PgStore,
    lane: &str,
    n: u32,
    per_minute: u32,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let back = i64::from(n) * interval_ms(per_minute);
    let client = store.client().await?;
    client
        .execute(
            &client.prepare_cached(RETURN_STARTS).await.map_err(pg_err)?,
            &[&lane, &back],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}
