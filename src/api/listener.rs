//! The accept loop: HTTP/1.1 connections served by hyper with the edge's bounds, instead of
//! `axum::serve`, which does not expose them.
//!
//! * At most `max_connections` connections at once; further clients wait in the kernel's
//!   accept queue (the loop stops accepting while it is full).
//! * At most `max_connections_per_address` of them from one client address (an IPv6 address
//!   by its /64, as authentication counts it): a further connection from that address is
//!   closed as soon as it is accepted, so one client cannot hold every slot with slow requests.
//! * A client has `header_timeout` to send each request head, and a head may be at most
//!   `max_header_bytes` (hyper answers 431 past it), so a slow or idle client cannot hold a
//!   connection forever. Bodies are bounded by the JSON extractor, whole requests by the edge
//!   middleware's timeout.
//! * Shutdown (the token is cancelled): the listener closes at once, idle keep-alive
//!   connections are closed, requests in flight are answered, then the function returns.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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

/// The open connections of each client address (addresses with none are removed).
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One open connection counted under its address; uncounted when dropped.
struct AddressSlot {
    counts: Arc<PerAddress>,
    addr: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `addr`, unless the address already holds `max`.
    fn take(self: &Arc<Self>, addr: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(addr).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            addr,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

/// Serves `app` on `listener` until `cancel`, then drains the open connections.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    edge: EdgeConfig,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(edge.max_connections.max(1)));
    let per_address = Arc::<PerAddress>::default();
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
        let Some(address_slot) = per_address.take(
            crate::auth::address_bucket(peer.ip()),
            edge.max_connections_per_address.max(1),
        ) else {
            tracing::debug!(peer = %peer.ip(), "Connection refused: its address holds its share");
            drop(stream);
            continue;
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
            drop(address_slot);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::auth::address_bucket;

    #[test]
    fn an_address_holds_at_most_its_share_and_a_closed_connection_gives_it_back() {
        let counts = Arc::<PerAddress>::default();
        let v6 = |last| {
            address_bucket(IpAddr::V6(Ipv6Addr::new(
                0x2001, 0xdb8, 1, 2, last, last, last, last,
            )))
        };
        let a = counts.take(v6(1), 2).expect("first");
        let _b = counts.take(v6(2), 2).expect("second, same /64");
        assert!(counts.take(v6(3), 2).is_none(), "a third from the /64");
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let c = counts.take(other, 2).expect("another address");
        drop(a);
        assert!(counts.take(v6(4), 2).is_some(), "after one closed");
        drop(c);
        assert!(!counts.0.lock().expect("lock").contains_key(&other));
    }
}
