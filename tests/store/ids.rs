//! Task ids (issue 12, item 16) on both stores: a database created before keyed ids (it has
//! `meta.id_mask` and no `meta.id_key`; its ids are `seq ^ mask` in the low 62 bits) keeps
//! resolving the ids it handed out once the new binary runs on it, for their organization
//! only, while every new id is keyed (neither the mask's form nor a neighbour of the old one).

use super::*;

store_tests!(ids_minted_before_keyed_ids_still_resolve);

const LOW62: u64 = (1 << 62) - 1;

/// What a database created before keyed ids holds: task `seq` got the id with `hi` and
/// `seq ^ mask` in the low bits.
fn legacy_id(hi: u64, seq: i64, mask: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(hi, (0b10 << 62) | ((seq as u64 ^ mask) & LOW62))
}

/// Turns the test database into one made before keyed ids: the task `id` gets its legacy id
/// under `mask`, and the database has that mask and no id key. Returns the legacy id.
async fn make_legacy(db: &Database, id: uuid::Uuid, mask: u64) -> uuid::Uuid {
    let hi = id.as_u64_pair().0;
    match db {
        Database::Sqlite(path) => {
            let c = rusqlite::Connection::open(path).expect("open");
            c.busy_timeout(std::time::Duration::from_secs(5))
                .expect("timeout");
            let seq: i64 = c
                .query_row(
                    "SELECT seq FROM tasks WHERE id = ?1",
                    [&id.as_bytes()[..]],
                    |r| r.get(0),
                )
                .expect("the task");
            let old = legacy_id(hi, seq, mask);
            c.execute(
                "UPDATE tasks SET id = ?1 WHERE seq = ?2",
                rusqlite::params![&old.as_bytes()[..], seq],
            )
            .expect("old id");
            c.execute("DELETE FROM meta WHERE key = 'id_key'", [])
                .expect("no key");
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('id_mask', ?1)",
                [mask.to_string()],
            )
            .expect("mask");
            old
        }
        Database::Postgres(url) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let conn = tokio::spawn(conn);
            let seq: i64 = c
                .query_one("SELECT seq FROM tasks WHERE id = $1", &[&id])
                .await
                .expect("the task")
                .get(0);
            let old = legacy_id(hi, seq, mask);
            c.execute("UPDATE tasks SET id = $1 WHERE seq = $2", &[&old, &seq])
                .await
                .expect("old id");
            c.batch_execute("DELETE FROM meta WHERE key = 'id_key'")
                .await
                .expect("no key");
            c.execute(
                "INSERT INTO meta(key, value) VALUES ('id_mask', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&mask.to_string()],
            )
            .await
            .expect("mask");
            drop(c);
            let _ = conn.await;
            old
        }
    }
}

async fn ids_minted_before_keyed_ids_still_resolve(b: Backend) {
    let f = Fixture::new(&b, &[(5, 1_000, 100), (5, 1_000, 100)]).await;
    let (org, other) = (f.orgs[0], f.orgs[1]);
    let ids = submit(&*f.store, org, vec![task(1, None)]).await;
    let mask = 0x2345_6789_abcd_ef01 & LOW62;
    let old = make_legacy(&f.db.database, ids[0], mask).await;
    // The new binary starts on the old database.
    let f = f.crash_and_restart().await;
    let s = &*f.store;
    let t = s.get_task(org, old).await.expect("get").expect("resolves");
    assert_eq!(t.id, old);
    assert!(s.get_task(other, old).await.expect("get").is_none());
    // Ids minted from now on are keyed: not `seq ^ mask`, and not the old id's neighbours.
    let new = submit(s, org, vec![task(1, None), task(1, None)]).await;
    for id in &new {
        assert_eq!(
            s.get_task(org, *id).await.expect("get").map(|t| t.id),
            Some(*id)
        );
        assert!(s.get_task(other, *id).await.expect("get").is_none());
        let low = id.as_u64_pair().1 & LOW62;
        let distance = (low ^ mask).abs_diff(old.as_u64_pair().1 & LOW62 ^ mask);
        assert!(distance > 1_000_000, "{id} is a neighbour of {old}");
    }
    assert!(
        s.get_task(org, uuid::Uuid::new_v4())
            .await
            .expect("get")
            .is_none()
    );
    // The old task still runs and finishes under its old id.
    let claimed = s.claim(5).await.expect("claim");
    assert_eq!(claimed.first().map(|t| t.id), Some(old));
    finish(s, &claimed[0], completed()).await;
    let t = s.get_task(org, old).await.expect("get").expect("resolves");
    assert_eq!(t.status, cloro::domain::task::TaskStatus::Completed);
}
