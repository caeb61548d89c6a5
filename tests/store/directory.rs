//! Directory writes (issue 12, item 7): making an organization is all or nothing. Its row, its
//! rate limit and its first key are written in one transaction, so a failure in the middle
//! (injected here with a trigger that refuses every new API key) leaves no organization
//! behind: none without a key that nobody can use, none that stops `serve` from making the
//! `default` organization of an empty database.

//!
//! The operator's reads and `org set` (issue 13): listing organizations and keys, queue numbers
//! read from the database, and settings changed from another process that a running store
//! applies at once (a lower concurrency only stops new starts; the balance set is the live one).

use std::time::Duration;

use cloro::domain::task::TaskStatus;
use cloro::store::{Directory, Error, OrgUpdate};

use super::*;

store_tests!(
    a_failed_organization_leaves_nothing_behind,
    the_operator_reads_organizations_keys_and_queues,
    org_set_changes_settings_and_plans,
    a_running_store_applies_org_set_at_once,
);

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

/// The public id of the fixture's only organization, read through `dir`.
async fn only_org_id(dir: &dyn Directory) -> String {
    let orgs = dir.list_orgs().await.expect("list");
    assert_eq!(orgs.len(), 1);
    orgs[0].org_id.clone()
}

async fn the_operator_reads_organizations_keys_and_queues(b: Backend) {
    let f = Fixture::new(&b, &[(2, 100, 10)]).await;
    let admin = admin::open(&f.db.database).await.expect("admin");
    let org_id = only_org_id(&*admin).await;
    let info = admin.org_info(&org_id).await.expect("show");
    assert_eq!(
        (info.name.as_str(), info.plan.as_str(), info.concurrency),
        ("org0", "business", 2)
    );
    assert_eq!(
        (info.credits, info.queue_limit, info.rate_limit),
        (100, 10, None)
    );
    assert!(matches!(
        admin.org_info("no-such-org").await,
        Err(Error::NotFound)
    ));
    // The same through the running store.
    assert_eq!(f.store.org_info(&org_id).await.expect("show"), info);
    assert_eq!(f.store.list_orgs().await.expect("list"), vec![info]);

    let (second, _) = admin.create_key(&org_id).await.expect("key");
    admin.revoke_key(&second).await.expect("revoke");
    let keys = admin.list_keys(&org_id).await.expect("keys");
    assert_eq!(keys.len(), 2);
    let revoked: Vec<bool> = keys.iter().map(|k| k.revoked_ms.is_some()).collect();
    assert_eq!(
        keys.iter()
            .find(|k| k.key_id == second)
            .map(|k| k.revoked_ms.is_some()),
        Some(true)
    );
    assert_eq!(revoked.iter().filter(|r| **r).count(), 1);
    assert!(matches!(
        admin.list_keys("no-such-org").await,
        Err(Error::NotFound)
    ));

    let org = f.orgs[0];
    let ids = submit(
        &*f.store,
        org,
        vec![task(5, None), task(5, None), task(9, None)],
    )
    .await;
    let claimed = f.store.claim(1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let queues = admin.queues().await.expect("queues");
    assert_eq!(queues.len(), 1);
    let q = &queues[0];
    assert_eq!(q.org_id, org_id);
    assert_eq!((q.queued, q.processing), (2, 1));
    assert_eq!(q.by_priority, vec![(5, 2)], "the priority 9 task runs");
    assert_eq!((q.concurrency, q.queue_limit), (2, 10));
    finish(&*f.store, &claimed[0], completed()).await;

    // One task, read only, by its organization's public id.
    let done = admin
        .task_of_org(&org_id, ids[2])
        .await
        .expect("read")
        .expect("the task");
    assert_eq!((done.id, done.status), (ids[2], TaskStatus::Completed));
    assert_eq!(done.response, Some(json!({ "text": "ok" })));
    let queued = f.store.task_of_org(&org_id, ids[0]).await.expect("read");
    assert_eq!(queued.map(|t| t.status), Some(TaskStatus::Queued));
    assert_eq!(
        admin
            .task_of_org(&org_id, uuid::Uuid::new_v4())
            .await
            .expect("read"),
        None
    );
    assert!(matches!(
        admin.task_of_org("no-such-org", ids[0]).await,
        Err(Error::NotFound)
    ));
    f.store.close();
}

async fn org_set_changes_settings_and_plans(b: Backend) {
    let f = Fixture::new(&b, &[(2, 100, 10)]).await;
    let admin = admin::open(&f.db.database).await.expect("admin");
    let org_id = only_org_id(&*admin).await;
    let set = OrgUpdate {
        concurrency: Some(7),
        queue_limit: Some(20),
        rate_limit: Some(3),
        ..OrgUpdate::default()
    };
    let after = admin.update_org(&org_id, &set).await.expect("set");
    assert_eq!(
        (after.concurrency, after.queue_limit, after.rate_limit),
        (7, 20, Some(3))
    );
    assert_eq!(
        (after.plan.as_str(), after.credits),
        ("business", 100),
        "kept"
    );
    assert_eq!(admin.org_info(&org_id).await.expect("show"), after);

    // The organization's own rate limit removed: the server's applies again.
    let clear = OrgUpdate {
        clear_rate_limit: true,
        ..OrgUpdate::default()
    };
    let cleared = admin.update_org(&org_id, &clear).await.expect("set");
    assert_eq!(cleared.rate_limit, None);
    assert_eq!(cleared.concurrency, 7, "nothing else changes");
    assert_eq!(admin.org_info(&org_id).await.expect("show"), cleared);

    // A plan brings its credits and concurrency (free: no billing cycle), unless overridden.
    let free = OrgUpdate {
        plan: Some("free".into()),
        ..OrgUpdate::default()
    };
    let after = admin.update_org(&org_id, &free).await.expect("set");
    assert_eq!(
        (after.plan.as_str(), after.concurrency, after.credits),
        ("free", 1, 500)
    );
    assert_eq!((after.per_cycle, after.cycle_resets_ms), (None, None));
    let paid = OrgUpdate {
        plan: Some("starter".into()),
        concurrency: Some(4),
        ..OrgUpdate::default()
    };
    let after = admin.update_org(&org_id, &paid).await.expect("set");
    assert_eq!((after.plan.as_str(), after.concurrency), ("starter", 4));
    assert_eq!(after.per_cycle, Some(after.credits));
    assert!(after.cycle_resets_ms.is_some(), "a paid plan has a cycle");
    assert_eq!(admin.org_info(&org_id).await.expect("show"), after);

    let bogus = OrgUpdate {
        plan: Some("bogus".into()),
        ..OrgUpdate::default()
    };
    assert!(matches!(
        admin.update_org(&org_id, &bogus).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        admin.update_org("no-such-org", &set).await,
        Err(Error::NotFound)
    ));
    f.store.close();
}

/// Waits on the store's change signal until `check` holds (the SQLite store reads the change
/// counter once a second and reloads through its writer, which signals a change).
async fn eventually<F: std::future::Future<Output = bool>>(
    store: &dyn Store,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut changes = store.changes();
    while !check().await {
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting: {what}"))
            .expect("the store runs");
    }
}

async fn a_running_store_applies_org_set_at_once(b: Backend) {
    let f = Fixture::new(&b, &[(2, 1000, 100)]).await;
    let org = f.orgs[0];
    let admin = admin::open(&f.db.database).await.expect("admin");
    let org_id = only_org_id(&*admin).await;
    submit(&*f.store, org, (0..6).map(|_| task(5, None)).collect()).await;
    let running = f.store.claim(10).await.expect("claim");
    assert_eq!(running.len(), 2, "the cap is 2");

    // Lower than what runs, from the CLI's handle: nothing is stopped, nothing new starts.
    let set = OrgUpdate {
        concurrency: Some(1),
        credits: Some(400),
        ..OrgUpdate::default()
    };
    admin.update_org(&org_id, &set).await.expect("set");
    let store = f.store.clone();
    eventually(&*f.store, "the store takes the new settings", || {
        let store = store.clone();
        async move { store.org(org).await.expect("org").credits == 400 }
    })
    .await;
    assert_eq!(f.store.status(org).await.expect("status").processing, 2);
    assert!(
        f.store.claim(10).await.expect("claim").is_empty(),
        "2 run, cap 1"
    );
    for t in &running {
        finish(&*f.store, t, completed()).await;
    }
    // The balance set is the live one: both charges (5 each) come off it.
    assert_eq!(f.store.org(org).await.expect("org").credits, 390);
    assert_eq!(f.store.claim(10).await.expect("claim").len(), 1, "cap 1");

    // Raised: the next claim starts more at once.
    let set = OrgUpdate {
        concurrency: Some(3),
        credits: Some(200),
        ..OrgUpdate::default()
    };
    admin.update_org(&org_id, &set).await.expect("set");
    eventually(&*f.store, "the store takes the new settings", || {
        let store = store.clone();
        async move { store.org(org).await.expect("org").credits == 200 }
    })
    .await;
    assert_eq!(
        f.store.claim(10).await.expect("claim").len(),
        2,
        "cap 3, 1 running"
    );
    f.store.close();
}
