//! Throw-away databases on a PostgreSQL server, for the test suites (`cloro::testing`) and the
//! benchmark (`cloro bench --database`): a new database with a unique name next to the one the
//! server URL names (which is used only to create and drop them), dropped `WITH (FORCE)`.
//!
//! It lives here because it is SQL, and SQL stays in `store/`; it is not part of the store
//! contract.

/// Creates a database named `<prefix>_<random hex>` on the server of `server_url`; returns
/// its URL and its name.
pub async fn create_database(server_url: &str, prefix: &str) -> Result<(String, String), String> {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = super::tls::connect(server_url)
        .await
        .map_err(|e| format!("cannot connect to {server_url}: {e}"))?;
    let driver = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("cannot create database {name}: {e}"))?;
    drop(client);
    let _ = driver.await;
    let mut url =
        url::Url::parse(server_url).map_err(|e| format!("invalid server URL {server_url}: {e}"))?;
    url.set_path(&format!("/{name}"));
    Ok((url.to_string(), name))
}

/// Drops database `name` on the server of `server_url`, disconnecting whoever still uses it.
/// Blocks until done (it runs on a thread with its own runtime, so it may be called from a
/// `Drop`, inside or outside a runtime); failures are ignored (the database may be gone).
pub fn drop_database(server_url: &str, name: &str) {
    let (server_url, name) = (server_url.to_owned(), name.to_owned());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let (client, conn) = super::tls::connect(&server_url).await.ok()?;
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok()
        })
    })
    .join();
}
