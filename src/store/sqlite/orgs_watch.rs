//! The organizations' watch: how a running server applies `cloro org set` at once.
//!
//! The CLI writes the database file directly (`admin::update_org`) and bumps a change counter
//! (`meta.orgs_version`) in the same transaction. This thread reads the counter every
//! [`POLL`] on a read-only connection of its own (one indexed point read); when it moved, it
//! asks the writer to read every organization again ([`Cmd::ReloadOrgs`]): the ready index
//! takes the new concurrency, queue limit and balance of each organization it knows, and the
//! store's organization cache their plan and settings. Rate limits are read with each API key
//! (`find_key`), so they follow through the API's key cache (at most its lifetime, 10 s).

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::writer::Cmd;
use super::{admin, lock, schema};
use crate::store::{Error, Org, OrgKey, Result};

/// How often the change counter is read.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// The running watch: dropping `stop` ends it.
pub(crate) struct Watch {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Stops the thread and waits for it (before the writer stops: it holds a sender).
    pub(crate) fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching the database at `path`, whose organizations were loaded at counter `seen`
/// or later; reloads go to the writer through `tx`.
pub(crate) fn spawn(
    path: &Path,
    mut seen: i64,
    tx: mpsc::Sender<Cmd>,
    orgs: Arc<Mutex<HashMap<OrgKey, Org>>>,
) -> Result<Watch> {
    let conn = schema::open(path, true)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cloro-sqlite-orgs".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                let version = match admin::orgs_version(&conn) {
                    Ok(v) => v,
                    Err(error) => {
                        tracing::warn!(%error, "Cannot read the organizations' change counter");
                        continue;
                    }
                };
                if version == seen {
                    continue;
                }
                let (reply, rx) = oneshot::channel();
                if tx.send(Cmd::ReloadOrgs { reply }).is_err() {
                    return;
                }
                match rx.blocking_recv() {
                    Ok(Ok(rows)) => {
                        let mut cache = lock(&orgs);
                        for o in rows {
                            if let Some(c) = cache.get_mut(&o.key) {
                                *c = o;
                            }
                        }
                        seen = version;
                        tracing::info!("Reloaded the organizations' settings");
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "Cannot reload the organizations' settings");
                    }
                    Err(_) => return,
                }
            }
        })
        .map_err(|e| {
            Error::Other(crate::store::Cause::new(
                format!("cannot start the organizations' watch: {e}"),
                e,
            ))
        })?;
    Ok(Watch {
        stop: Some(stop),
        thread: Some(thread),
    })
}
