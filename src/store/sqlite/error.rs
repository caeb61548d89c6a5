//! How the embedded store's driver errors map onto the store's error kinds.
//!
//! [`crate::store::Error`] is engine-neutral; each backend maps its own driver's errors into
//! it. Here: "cannot serve now" ([`Error::Unavailable`]: the API answers 503 with
//! `Retry-After`, the dispatcher backs off) is a busy or locked database, and the disk
//! refusing a write or a read: full (`SQLITE_FULL`), read-only (`SQLITE_READONLY`, a file
//! system remounted read-only after an error), an I/O error (`SQLITE_IOERR`), or an I/O
//! error of the result log carried by [`io_err`]. A query that found no row is
//! [`Error::NotFound`], anything else is [`Error::Other`] with the driver's message kept as
//! the cause. The two helpers are for the writer, which works in `rusqlite::Result` inside
//! its transaction.

use crate::store::{Cause, Error};

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::SystemIoFailure
                ) =>
            {
                Error::Unavailable(Cause::new(e.to_string(), e))
            }
            rusqlite::Error::ToSqlConversionFailure(ref inner)
                if inner.downcast_ref::<std::io::Error>().is_some() =>
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

    #[test]
    fn a_full_disk_is_unavailable() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch("PRAGMA max_page_count = 8; CREATE TABLE t (b BLOB)")
            .expect("table");
        let full = (0..100)
            .find_map(|_| {
                conn.execute("INSERT INTO t VALUES (zeroblob(4096))", [])
                    .err()
            })
            .expect("the page limit is reached");
        assert!(
            matches!(&full, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull),
            "{full:?}"
        );
        let e: Error = full.into();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn a_read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ro.db");
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE t (x)")
            .expect("table");
        let ro = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("read-only");
        let e: Error = ro
            .execute("INSERT INTO t VALUES (1)", [])
            .expect_err("read-only")
            .into();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn an_io_error_of_the_result_log_is_unavailable_and_kept_as_the_cause() {
        let e: Error = io_err(std::io::Error::from_raw_os_error(28)).into();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("os error 28"), "{e}");
    }
}
