//! How the embedded store's driver errors map onto the store's error kinds.
//!
//! [`crate::store::Error`] is engine-neutral; each backend maps its own driver's errors into
//! it. Here: a busy or locked database means "cannot serve now" ([`Error::Unavailable`]), a
//! query that found no row is [`Error::NotFound`], anything else is [`Error::Other`] with the
//! driver's message kept as the cause. The two helpers are for the writer, which works in
//! `rusqlite::Result` inside its transaction.

use crate::store::{Cause, Error};

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Error::Unavailable(Cause::new(e.to_string(), e))
            }
            rusqlite::Error::QueryReturnedNoRows => Error::NotFound,
            other => Error::Other(Cause::new(other.to_string(), other)),
        }
    }
}

/// An I/O error of the result log, carried through the writer's `rusqlite::Result` so it
/// fails the group like a statement error would.
pub(crate) fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Whether a statement failed on a unique constraint (a submission's idempotency key).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_error_is_classified_and_kept_as_the_cause() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        let e: Error = conn
            .execute("SELECT * FROM no_such_table", [])
            .expect_err("no such table")
            .into();
        assert!(matches!(e, Error::Other(_)), "{e:?}");
        assert!(e.to_string().contains("no_such_table"), "{e}");
        let source = std::error::Error::source(&e).expect("the driver's error as the source");
        assert!(source.downcast_ref::<rusqlite::Error>().is_some());
    }
}
