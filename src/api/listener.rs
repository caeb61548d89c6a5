//! The accept loop: HTTP/1.1 connections served by hyper with the edge's bounds, instead of
//! `axum::serve`, which does not expose them.
//!
//! * At most `max_connections` connections at once; further clients wait in the kernel's
//!   accept queue (the loop stops accepting while it is full).
//! * A client has `header_timeout` to send each request head, and a head may be at most
//!   `max_header_bytes` (hyper answers 431 past it), so a slow or idle client cannot hold a
//!   connection forever. Bodies are bounded by the JSON extractor, whole requests by the edge
//!   middleware's timeout.
//! * Shutdown (the token is cancelled): the listener closes at once, idle keep-alive
//!   connections are closed, requests in flight are answered, then the function returns.

use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use super::edge::EdgeConfig;

/// Smallest head limit accepted (hyper's smallest read buffer).
const MIN_BUF: usize = 8192;

/// Serves `app` on `listener` until `cancel`, then drains the open connections.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    edge: EdgeConfig,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(edge.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_timeout)
        .max_header_size(edge.max_header_bytes.max(MIN_BUF))
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => (stream, peer),
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "Cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the per-address bounds of authentication (`crate::auth`).
        let app = axum::Extension(axum::extract::ConnectInfo(peer)).layer(app.clone());
        let service = TowerToHyperService::new(app);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "Connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
