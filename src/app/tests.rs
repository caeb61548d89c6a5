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
        max_body_bytes: 1 << 20,
        default_plan: "free".into(),
        edge: Default::default(),
        webhooks: Default::default(),
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
