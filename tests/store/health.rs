//! Engine health (issue 10) on both stores: one row per engine name, upserted (the latest
//! writer wins), read back by the store, by the CLI's directory and by the read-only reader of
//! `cloro engines list`.

use super::*;
use cloro::store::EngineHealthRow;

store_tests!(engine_health_is_upserted_per_engine_and_read_back);

async fn engine_health_is_upserted_per_engine_and_read_back(b: Backend) {
    let f = Fixture::new(&b, &[]).await;
    let s = &*f.store;
    // Before any server wrote: no rows (also for the reader that neither creates nor migrates).
    assert!(s.engine_health().await.expect("read").is_empty());
    assert!(
        admin::read_engine_health(&f.db.database)
            .await
            .expect("read-only")
            .is_empty()
    );
    s.record_engine_health("openai", "ok", None, 1_000, 1_000)
        .await
        .expect("write");
    s.record_engine_health("serp", "ok", None, 1_000, 1_000)
        .await
        .expect("write");
    s.record_engine_health(
        "openai",
        "failing",
        Some("Incorrect API key provided"),
        2_000,
        2_500,
    )
    .await
    .expect("upsert");
    let rows = s.engine_health().await.expect("read");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let openai = &rows[0];
    assert_eq!(
        (
            openai.name.as_str(),
            openai.health.as_str(),
            openai.message.as_deref(),
            openai.since_ms,
            openai.updated_ms
        ),
        (
            "openai",
            "failing",
            Some("Incorrect API key provided"),
            2_000,
            2_500
        )
    );
    // A cluster node names itself; the embedded store has no node id.
    match &f.pg {
        Some(pg) => assert_eq!(openai.node, Some(pg.node().to_string())),
        None => assert_eq!(openai.node, None),
    }
    assert_eq!(rows[1].name, "serp");
    assert_eq!(rows[1].health, "ok");

    // The CLI's handle and the read-only reader see the same rows; a write through the handle
    // (another writer) wins.
    let dir = admin::open(&f.db.database).await.expect("admin");
    assert_eq!(dir.engine_health().await.expect("read"), rows);
    dir.record_engine_health("openai", "ok", None, 3_000, 3_000)
        .await
        .expect("write");
    let read: Vec<EngineHealthRow> = admin::read_engine_health(&f.db.database)
        .await
        .expect("read-only");
    assert_eq!(read[0].health, "ok");
    assert_eq!(read[0].message, None);
    assert_eq!((read[0].since_ms, read[0].updated_ms), (3_000, 3_000));
    assert_eq!(read[0].node, None);
    assert_eq!(s.engine_health().await.expect("read"), read);
}
