//! Support for tests and the benchmark: a fresh, throw-away database of either kind.
//!
//! * SQLite: a new directory under the system temporary directory, removed on drop.
//! * PostgreSQL: a new database `cloro_t_<uuid>` on the server named by `CLORO_TEST_PG`
//!   (a URL whose database is used only to create and drop the test databases, e.g.
//!   `postgres://postgres@127.0.0.1:5432/test`), dropped (`WITH (FORCE)`) on drop.
//!
//! Without `CLORO_TEST_PG` the PostgreSQL half of the test suites says it was skipped; with
//! `CLORO_REQUIRE_PG=1` (CI) a missing URL is a failure instead, so CI can never skip it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::Database;

/// The PostgreSQL server for tests, if configured (see the module docs).
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("CLORO_TEST_PG") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CLORO_REQUIRE_PG").is_none(),
                "CLORO_REQUIRE_PG is set but CLORO_TEST_PG is not: the PostgreSQL half must run"
            );
            None
        }
    }
}

/// Says, once per process, that the PostgreSQL half was skipped.
pub fn announce_pg_skipped() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "PostgreSQL half SKIPPED: set CLORO_TEST_PG=postgres://postgres@127.0.0.1:5432/test to run it"
        );
    });
}

/// A fresh database, deleted on drop.
pub struct TestDb {
    pub database: Database,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Pg { admin_url: String, name: String },
}

/// A unique new directory under the system temporary directory.
pub(crate) fn scratch_dir(prefix: &str) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl TestDb {
    /// A new SQLite database in its own directory.
    pub fn sqlite() -> std::io::Result<TestDb> {
        let dir = scratch_dir("cloro-test")?;
        Ok(TestDb {
            database: Database::Sqlite(dir.join("cloro.db")),
            cleanup: Cleanup::Dir(dir),
        })
    }

    /// A new SQLite database in `dir`, an existing directory (a test's own file system, such
    /// as a small tmpfs); what is in it is removed on drop.
    pub fn sqlite_in(dir: &std::path::Path) -> TestDb {
        TestDb {
            database: Database::Sqlite(dir.join("cloro.db")),
            cleanup: Cleanup::Dir(dir.to_owned()),
        }
    }

    /// A new PostgreSQL database on the server of `admin_url`.
    pub async fn postgres(admin_url: &str) -> Result<TestDb, String> {
        let (url, name) =
            crate::store::postgres::scratch::create_database(admin_url, "cloro_t").await?;
        Ok(TestDb {
            database: Database::Postgres(url),
            cleanup: Cleanup::Pg {
                admin_url: admin_url.to_owned(),
                name,
            },
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Pg { admin_url, name } => {
                crate::store::postgres::scratch::drop_database(admin_url, name);
            }
        }
    }
}
