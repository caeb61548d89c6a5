//! How this backend's driver errors become [`store::Error`](crate::store::Error) kinds.
//!
//! The store contract classifies failures by kind (not found, conflict, unavailable, other) so
//! the API can answer 409 or 503 without knowing the database. This file is the one place that
//! knows which PostgreSQL failures mean "the database cannot serve right now" (an outage: the
//! API answers 503 with `Retry-After`, the dispatcher backs off) and which mean the statement
//! itself is wrong; the driver's message travels along as the cause.

use crate::store::{Cause, Error};

/// Server errors that say the database cannot serve right now rather than that the statement
/// is wrong: connection exceptions (08), insufficient resources (53, e.g. too many
/// connections), operator intervention (57: the backend was terminated, the server is shutting
/// down or starting; 57014 is also `statement_timeout`), system errors (58), transaction
/// rollbacks (40: serialization failure, deadlock), which a retry resolves, and the bounded
/// waits every connection has ([`connect_config`](super::schema::connect_config)):
/// `lock_not_available` (55P03: a lock held past `lock_timeout`, e.g. an organization's row
/// someone keeps locked) and `idle_in_transaction_session_timeout` (25P03).
pub(crate) fn transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
        || matches!(code, "55P03" | "25P03")
}

/// A driver error as a store error: a unique violation is a conflict, a transient server
/// error or a connection failure is an outage, anything else is [`Error::Other`].
pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        return if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
            Error::Conflict(db.message().to_owned())
        } else if transient_sqlstate(db.code().code()) {
            Error::Unavailable(Cause::new(db.to_string(), e))
        } else {
            Error::Other(Cause::new(db.to_string(), e))
        };
    }
    // Anything without a server error is the connection: closed, refused, timed out.
    Error::Unavailable(Cause::new(e.to_string(), e))
}

/// No connection from the pool (the database is down or every connection is busy for longer
/// than the pool's wait timeout): an outage.
pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(Cause::new(format!("no database connection: {e}"), e))
}

#[cfg(test)]
mod tests {
    use super::transient_sqlstate;

    #[test]
    fn outage_sqlstates_are_transient_and_statement_errors_are_not() {
        // admin_shutdown (a terminated backend), cannot_connect_now, too_many_connections,
        // connection_failure, serialization_failure, deadlock_detected, io_error.
        // lock_not_available, query_canceled (statement_timeout),
        // idle_in_transaction_session_timeout.
        for code in [
            "57P01", "57P03", "53300", "08006", "40001", "40P01", "58030", "55P03", "57014",
            "25P03",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        // unique_violation, syntax_error, undefined_table, check_violation, invalid_catalog_name.
        // object_in_use (55006), another class-55 state.
        for code in [
            "23505", "42601", "42P01", "23514", "3D000", "", "5", "55006",
        ] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}
