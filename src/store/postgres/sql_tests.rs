//! The statements that used to be built with `format!` at every call, checked against the text
//! the old builders produced: writing them as constants changed no statement (and so no plan).

const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
const BALANCE: &str =
    "o.credits - (SELECT COALESCE(sum(charged), 0)::bigint FROM org_nodes WHERE org = o.id)";

fn q_sum() -> &'static str {
    "(q1 + q2 + q3 + q4 + q5 + q6 + q7 + q8 + q9 + q10)"
}

fn q_deltas(first: usize) -> String {
    (1..=10)
        .map(|p| format!("q{p} = q{p} + ${}", first + p - 1))
        .collect::<Vec<_>>()
        .join(", ")
}

fn requeue_sql() -> String {
    let lows = (1..=10)
        .map(|p| format!("c{p} = LEAST(c{p}, ${})", 11 + p))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE orgs SET {}, {lows} WHERE id = $1", q_deltas(2))
}

#[test]
fn the_shared_fragments_are_the_old_ones() {
    assert_eq!(db_now!(), DB_NOW);
    assert_eq!(balance!(), BALANCE);
    assert_eq!(q_sum!(), q_sum());
    assert_eq!(q_deltas_from_2!(), q_deltas(2));
}

#[test]
fn counter_statements_are_unchanged() {
    assert_eq!(super::counters::REQUEUE, requeue_sql());
    assert_eq!(
        super::counters::ADD_QUEUED,
        format!("UPDATE orgs SET {} WHERE id = $1", q_deltas(2))
    );
    // Since issue 14 the room is taken after the insert, so it also lowers the cursors (like
    // `REQUEUE`), and the balance is read with the queue's size and limit.
    let lows = (1..=10)
        .map(|p| format!("c{p} = LEAST(c{p}, ${})", 12 + p))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        super::submit::TAKE_ROOM,
        format!(
            "UPDATE orgs SET {}, {lows} WHERE id = $1 AND {} + $2 <= queue_limit RETURNING id",
            q_deltas(3),
            q_sum()
        )
    );
    assert_eq!(
        super::submit::SUBMIT_CHECK,
        format!(
            "SELECT {BALANCE}, {}, queue_limit FROM orgs o WHERE id = $1",
            q_sum()
        )
    );
}

#[test]
fn claim_statements_are_unchanged() {
    // Since then step 1 also leaves out organizations at their cap (issue 14: store test
    // `a_small_claim_reaches_a_free_slot_behind_organizations_at_their_cap`).
    assert_eq!(
        super::claim::LOCK_ORGS,
        format!(
            "SELECT id, concurrency, credits, {}, {} FROM orgs
                      WHERE {} > 0
                        AND concurrency > (SELECT coalesce(sum(n.processing), 0) FROM org_nodes n
                                            WHERE n.org = orgs.id)
                      ORDER BY served_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            (1..=10)
                .map(|p| format!("q{p}"))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=10)
                .map(|p| format!("c{p}"))
                .collect::<Vec<_>>()
                .join(", "),
            q_sum()
        )
    );
    // `claim::SERVED` became one statement per claim (issue 14), no longer the old text.
}

#[test]
fn clock_and_balance_statements_are_unchanged() {
    assert_eq!(
        super::cluster::JOIN,
        format!(
            "INSERT INTO nodes(id, started_ms, alive_until_ms) VALUES ($1, {DB_NOW}, {DB_NOW} + $2)"
        )
    );
    assert_eq!(
        super::cluster::HEARTBEAT,
        format!("UPDATE nodes SET alive_until_ms = {DB_NOW} + $2 WHERE id = $1")
    );
    assert_eq!(
        super::cluster::DEAD_NODES,
        format!("SELECT id FROM nodes WHERE alive_until_ms < {DB_NOW} FOR UPDATE SKIP LOCKED")
    );
    assert_eq!(
        super::reads::ORG,
        format!(
            "SELECT id, public_id, name, plan, concurrency, {BALANCE}, per_cycle, cycle_resets_ms, queue_limit
                     FROM orgs o WHERE id = $1"
        )
    );
    assert_eq!(
        super::reads::TOTALS,
        format!(
            "SELECT (SELECT COALESCE(sum({}), 0)::bigint FROM orgs),
                            (SELECT COALESCE(sum(processing), 0)::bigint FROM org_nodes WHERE side < 2)",
            q_sum()
        )
    );
}

#[test]
fn outbox_statements_are_unchanged() {
    use super::outbox::*;
    assert_eq!(
        CLAIM_DELIVERIES,
        format!(
            "UPDATE webhook_deliveries AS d
                        SET attempts = d.attempts + 1, owner = $1, next_at = {DB_NOW} + $3
                       FROM (SELECT seq FROM webhook_deliveries
                              WHERE state = 0 AND next_at <= {DB_NOW}
                              ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS c
                      WHERE d.seq = c.seq
                     RETURNING d.seq, d.org, d.id, d.url, d.attempts"
        )
    );
    let guard = "WHERE seq = $1 AND attempts = $2 AND owner = $3 AND state = 0";
    assert_eq!(
        RECORD_DELIVERED,
        format!(
            "UPDATE webhook_deliveries SET state = 1, delivered_ms = {DB_NOW}, owner = NULL {guard}"
        )
    );
    assert_eq!(
        RECORD_RETRY,
        format!("UPDATE webhook_deliveries SET next_at = {DB_NOW} + $4, owner = NULL {guard}")
    );
    assert_eq!(
        RECORD_DEFERRED,
        format!(
            "UPDATE webhook_deliveries SET attempts = attempts - 1, next_at = {DB_NOW} + $4, owner = NULL {guard}"
        )
    );
    assert_eq!(
        RECORD_GAVE_UP,
        format!("UPDATE webhook_deliveries SET state = 2, owner = NULL {guard}")
    );
}

/// Every reader counts the running tasks as the sum over the sides below 2 (side 0: claims;
/// side 2: sync calls): each finish group's side must be one of them, and no two groups in
/// flight may share one (they would wait for each other's commit on the counter rows).
#[test]
fn finish_sides_are_task_sides_of_their_own() {
    let sides = super::finisher::FINISH_SIDES;
    let mut seen = std::collections::HashSet::new();
    for side in sides {
        assert!(side < 2, "side {side} is not counted as running tasks");
        assert_ne!(side, 0, "side 0 is the claims'");
        assert!(seen.insert(side), "side {side} is used twice");
    }
}
