//! Directory writes (issue 12, item 7): making an organization is all or nothing. Its row, its
//! rate limit and its first key are written in one transaction, so a failure in the middle
//! (injected here with a trigger that refuses every new API key) leaves no organization
//! behind: none without a key that nobody can use, none that stops `serve` from making the
//! `default` organization of an empty database.

use super::*;

store_tests!(a_failed_organization_leaves_nothing_behind);

/// Makes every `INSERT INTO api_keys` on `db` fail, from a connection of its own.
async fn refuse_new_keys(db: &Database) {
    match db {
        Database::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).expect("opens");
            conn.execute_batch(
                "CREATE TRIGGER refuse_keys BEFORE INSERT ON api_keys
                 BEGIN SELECT RAISE(ABORT, 'injected: no new keys'); END;",
            )
            .expect("trigger");
        }
        Database::Postgres(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connects");
            let conn = tokio::spawn(conn);
            client
                .batch_execute(
                    "CREATE FUNCTION refuse_keys() RETURNS trigger LANGUAGE plpgsql AS
                       $$ BEGIN RAISE EXCEPTION 'injected: no new keys'; END $$;
                     CREATE TRIGGER refuse_keys BEFORE INSERT ON api_keys
                       FOR EACH ROW EXECUTE FUNCTION refuse_keys();",
                )
                .await
                .expect("trigger");
            drop(client);
            let _ = conn.await;
        }
    }
}

async fn a_failed_organization_leaves_nothing_behind(b: Backend) {
    let f = Fixture::new(&b, &[]).await;
    refuse_new_keys(&f.db.database).await;
    let spec = OrgSpec {
        name: "half".into(),
        plan: "business".into(),
        concurrency: Some(2),
        credits: Some(100),
        queue_limit: Some(10),
        rate_limit: Some(5),
    };
    // Through the CLI's directory and through a running store alike.
    let admin = admin::open(&f.db.database).await.expect("admin");
    assert!(
        admin.create_org(&spec).await.is_err(),
        "the key insert fails"
    );
    assert_eq!(admin.count_orgs().await.expect("count"), 0);
    assert!(
        f.store.create_org(&spec).await.is_err(),
        "the key insert fails"
    );
    assert_eq!(f.store.count_orgs().await.expect("count"), 0);
    f.store.close();
}
