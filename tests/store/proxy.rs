//! A TCP proxy for fault tests: forwards connections to a target (the test PostgreSQL) and
//! can make every connection open at that moment go silent — nothing forwarded either way,
//! nothing closed — the way a connection through a dead NAT, a cut cable or a frozen peer
//! behaves. Connections made afterwards work again, so a client that gives up on a silent
//! connection and reconnects recovers.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy; stops (closing every connection, silent ones included) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    /// Bumped by [`Proxy::stall`]: connections accepted before the bump go silent.
    stall: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let stall = watch::Sender::new(0u64);
        let stop = CancellationToken::new();
        let (rx, cancel) = (stall.subscribe(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = cancel.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(forward(client, target, rx.clone(), cancel.clone()));
            }
        });
        Proxy { addr, stall, stop }
    }

    /// `url` (a PostgreSQL URL) with its host and port replaced by the proxy's.
    pub fn pg_url(&self, url: &str) -> String {
        let cfg: tokio_postgres::Config = url.parse().expect("PostgreSQL URL");
        let user = cfg.get_user().unwrap_or("postgres");
        let password = cfg
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let db = cfg.get_dbname().unwrap_or(user);
        format!("postgres://{user}{password}@{}/{db}", self.addr)
    }

    /// Every connection open now stops forwarding in both directions and stays open.
    pub fn stall(&self) {
        self.stall.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The address of a PostgreSQL URL's (first) TCP host.
pub async fn pg_target(url: &str) -> SocketAddr {
    let cfg: tokio_postgres::Config = url.parse().expect("PostgreSQL URL");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("PostgreSQL host resolves")
        .next()
        .expect("an address")
}

/// Copies both ways until either side closes, the connection is stalled (then it holds both
/// sockets, silent, until the proxy stops) or the proxy stops.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut stall: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let born = *stall.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = stall.wait_for(|g| *g > born) => {}
        _ = stop.cancelled() => return,
    }
    // Silent: neither socket is read, written or closed.
    stop.cancelled().await;
    drop((client, server));
}
