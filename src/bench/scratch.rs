//! The benchmark's scratch database: a new SQLite file in a new directory under the system
//! temporary directory, or a new database `cloro_bench_<uuid>` on the PostgreSQL server of
//! `--database` (whose own database is used only to create and drop it). Removed on drop.
//!
//! The test suites have their own (`cloro::testing`, behind the `testing` feature); the
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
        let name = format!("cloro_bench_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {server}"))?;
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        drop(client);
        let _ = driver.await;
        let mut url = url::Url::parse(server).context("parsing --database")?;
        url.set_path(&format!("/{name}"));
        Ok(ScratchDb {
            database: Database::Postgres(url.to_string()),
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
                let (server, name) = (server.clone(), name.clone());
                // Drop may run inside the runtime: drop the database from a thread with its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        let (client, conn) =
                            tokio_postgres::connect(&server, tokio_postgres::NoTls)
                                .await
                                .ok()?;
                        tokio::spawn(conn);
                        client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await
                            .ok()
                    })
                })
                .join();
            }
        }
    }
}
