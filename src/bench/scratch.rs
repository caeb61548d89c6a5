//! The benchmark's scratch database: a new SQLite file in a new directory under the system
//! temporary directory, or a new database `cloro_bench_<uuid>` on the PostgreSQL server of
//! `--database` (whose own database is used only to create and drop it:
//! `store::postgres::scratch`). Removed on drop.
//!
//! The test suites have their own handle (`cloro::testing`, behind the `testing` feature); the
//! benchmark is a tool of the binary and does not pull test support into it.

use std::path::PathBuf;

use anyhow::Context;
use cloro::store::Database;

pub(super) struct ScratchDb {
    pub(super) database: Database,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Pg { server: String, name: String },
}

impl ScratchDb {
    pub(super) fn sqlite() -> anyhow::Result<ScratchDb> {
        let dir = std::env::temp_dir().join(format!(
            "cloro-bench-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDb {
            database: Database::Sqlite(dir.join("cloro.db")),
            cleanup: Cleanup::Dir(dir),
        })
    }

    pub(super) async fn postgres(server: &str) -> anyhow::Result<ScratchDb> {
        let (url, name) = cloro::store::postgres::scratch::create_database(server, "cloro_bench")
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(ScratchDb {
            database: Database::Postgres(url),
            cleanup: Cleanup::Pg {
                server: server.to_owned(),
                name,
            },
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Pg { server, name } => {
                cloro::store::postgres::scratch::drop_database(server, name);
            }
        }
    }
}
