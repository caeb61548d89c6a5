//! Wake-ups across the cluster: `LISTEN cloro_work` on a dedicated connection.
//!
//! A submission (and a reaper that requeued a dead node's tasks) commits a `NOTIFY cloro_work`
//! ([`NOTIFY_WORK`](super::cluster::NOTIFY_WORK)); every node listens and wakes its
//! dispatcher, so a new task starts within milliseconds on an idle node. Notifications are a
//! hint, not a guarantee (they are lost while the connection is down), so the dispatcher also
//! polls every `poll_ms` ([`next_due`](super::next_due)).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Subscribes this connection to the work channel.
const LISTEN_WORK: &str = "LISTEN cloro_work";

/// `LISTEN cloro_work` on a dedicated connection (with the keepalives of
/// [`connect_config`](super::schema::connect_config), so a dead one is noticed); reconnects
/// with backoff.
pub(crate) async fn run_listener(
    shared: Arc<Shared>,
    connect: (tokio_postgres::Config, super::tls::Tls),
    cancel: CancellationToken,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        let attempt = async {
            let (client, mut connection) = connect.0.connect(connect.1.clone()).await?;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let pump = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(AsyncMessage::Notification(_)) => {
                            if tx.send(()).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            client.batch_execute(LISTEN_WORK).await?;
            // Wake once after (re)connecting: notifications sent while disconnected are lost.
            shared.notify.notify_one();
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(()) => shared.notify.notify_one(),
                        None => break,
                    },
                    _ = cancel.cancelled() => break,
                }
            }
            pump.abort();
            Ok::<(), tokio_postgres::Error>(())
        };
        match attempt.await {
            Ok(()) if cancel.is_cancelled() => return,
            Ok(()) => tracing::warn!("The notification connection closed; reconnecting"),
            Err(error) => tracing::warn!(%error, "Cannot listen for notifications; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
