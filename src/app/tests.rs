//! A started server notices a component that dies, names it, and shuts everything down.

use super::*;
use crate::engines::{LatencyRange, SimulatedEngine};
use crate::testing::TestDb;

fn options(db: &TestDb) -> ServeOptions {
    ServeOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        database: db.database.clone(),
        cluster: PgConfig::default(),
        queue: QueueConfig::default(),
        engine: Arc::new(SimulatedEngine {
            latency: LatencyRange {
                min_ms: 0,
                max_ms: 0,
            },
            failure_rate: 0.0,
        }),
        engines: Default::default(),
        max_body_bytes: 1 << 20,
        default_plan: "free".into(),
        edge: Default::default(),
        webhooks: Default::default(),
        pages: Default::default(),
        goto: Default::default(),
        operator: Default::default(),
        clock: crate::clock::Clock::system(),
    }
}

/// Whether the server still accepts connections.
async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test]
async fn a_component_that_returns_shuts_the_server_down_and_is_named() {
    let db = TestDb::sqlite().expect("test database");
    let server = start(options(&db)).await.expect("server starts");
    assert!(server.created_default.is_some());
    assert!(accepts(server.addr).await);
    assert_eq!(server.failure(), None);
    // A component that ends on its own (here one that returns at once).
    server.supervisor.spawn("test component", async {});
    let failure = tokio::time::timeout(Duration::from_secs(10), server.failed())
        .await
        .expect("the failure is reported");
    assert_eq!(failure.component, "test component");
    assert_eq!(failure.ended, Ended::Returned);
    // Everything else stops: the listener, the dispatcher, the purger, the sender.
    let addr = server.addr;
    tokio::time::timeout(Duration::from_secs(10), server.supervisor.wait())
        .await
        .expect("every component stops");
    assert!(!accepts(addr).await, "the listener is closed");
    assert_eq!(server.failure(), Some(failure));
    server.stopped(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_panicking_component_is_reported_with_its_message() {
    let db = TestDb::sqlite().expect("test database");
    let server = start(options(&db)).await.expect("server starts");
    server
        .supervisor
        .spawn("test component", async { panic!("the index is corrupt") });
    let failure = tokio::time::timeout(Duration::from_secs(10), server.failed())
        .await
        .expect("the failure is reported");
    assert_eq!(
        failure.to_string(),
        "the test component panicked: the index is corrupt"
    );
    server.stopped(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_shutdown_is_not_a_failure() {
    let db = TestDb::sqlite().expect("test database");
    let server = start(options(&db)).await.expect("server starts");
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(10), server.supervisor.wait())
        .await
        .expect("every component stops");
    assert_eq!(server.failure(), None);
    server.stopped(Duration::from_secs(10)).await;
}

/// The server's one clock reaches the store: a task submitted through a server started on a
/// manual clock is stamped with that clock's time, and so is its completion.
#[tokio::test]
async fn the_servers_clock_stamps_the_tasks() {
    const T0: i64 = 1_800_000_000_000;
    let db = TestDb::sqlite().expect("test database");
    let clock = crate::clock::Clock::manual(T0);
    let server = start(ServeOptions {
        clock: clock.clone(),
        ..options(&db)
    })
    .await
    .expect("server starts");
    let org = server
        .created_default
        .as_ref()
        .expect("the default organization")
        .org
        .key;
    let task = crate::store::NewTask {
        task_type: crate::domain::types::TaskType::Chatgpt,
        payload: serde_json::json!({"prompt": "p", "country": "US"}),
        priority: 1,
        idempotency_key: None,
        webhook_url: None,
        credits_to_charge: 5,
    };
    let id = server
        .store
        .submit(org, vec![task])
        .await
        .expect("store ok")
        .expect("under the queue limit")
        .remove(0)
        .expect("accepted")
        .id;
    queue::wait_idle(&*server.store).await;
    let record = server
        .store
        .get_task(org, id)
        .await
        .expect("store ok")
        .expect("the task");
    assert_eq!(record.created_ms, T0);
    assert_eq!(record.finished_ms, Some(T0));
    server.shutdown();
    server.stopped(Duration::from_secs(10)).await;
}
