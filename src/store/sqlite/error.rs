//! How the embedded store's driver errors map onto the store's error kinds.
//!
//! [`crate::store::Error`] is engine-neutral; each backend maps its own driver's errors into
//! it. Here: a busy or locked database means "cannot serve now" ([`Error::Unavailable`]), a
//! query that found no row is [`Error::NotFound`], anything else is [`Error::Other`] with the
//! driver's message kept as the cause. The two helpers are for the writer, which works in
//! `rusqlite::Result` inside its transaction.

use crate::store::Error;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Error::Unavailable(e.to_string())
            }
            rusqlite::Error::QueryReturnedNoRows => Error::NotFound,
            other => Error::Other(other.to_string()),
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
