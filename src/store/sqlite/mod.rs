//! The embedded store: one SQLite file, one writer thread, in-memory indexes.
//!
//! The design, and where each part lives:
//!
//! * **Ready index** ([`ready`]). [`ReadySet`] holds what the scheduler needs (queued sequence
//!   numbers by organization and priority, running counts, balances), so a claim never scans
//!   the table and the status endpoint costs the same at any queue depth. The webhook due
//!   index ([`hook_index`]) does the same for pending deliveries. Both are rebuilt from the
//!   table at start-up ([`startup`]); PROCESSING rows found then (a crash) go back to QUEUED
//!   and run again.
//! * **Writer** ([`writer`]). Every mutation is a command sent to one dedicated thread that
//!   owns the write connection. It takes every command waiting, applies them in ONE
//!   transaction (`BEGIN IMMEDIATE` … `COMMIT`, WAL, `synchronous=FULL`) and only then answers
//!   them and updates the in-memory indexes: group commit, so many small requests share one
//!   fsync and a reply always means "durable". One file per command, with its SQL beside it.
//! * **Result log** ([`result_log`]). Finished tasks' responses are appended to hourly segment
//!   files beside the database, synced before the commit that points at them, and deleted a
//!   whole segment at a time by the purge.
//! * **Readers** ([`reader`]). Point reads (a task, an API key, an organization) use a small
//!   pool of read-only connections on the blocking thread pool; WAL lets them run beside the
//!   writer.
//! * **Schema and admin** ([`schema`], [`admin`]). Migrations, connection settings and the
//!   lock file; the directory writes of the CLI, on their own connection.
//! * **Time** comes from the store's [`Clock`] (the system clock unless
//!   [`SqliteStore::open_with_clock`] is given another): the group's time in the writer, due
//!   retries at claim time, due webhook deliveries.
//!
//! Only one server process may own a database (an exclusive lock file enforces it); the CLI
//! may add organizations and keys at any time, and the server reads them on first use.
//!
//! The `impl Store for SqliteStore` is in [`store_impl`].

// The map above links to the crate-private modules (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

/// SQL: whether a task row has a webhook (in the row, or interned: migration 0005). A macro,
/// so `concat!` can put it into the statements' constants.
macro_rules! has_webhook {
    () => {
        "(webhook_url IS NOT NULL OR webhook_id IS NOT NULL)"
    };
}
/// SQL: a task row's webhook URL (in the row, or interned; see [`url_cache`]).
macro_rules! webhook_url_of_task {
    () => {
        "COALESCE(webhook_url, (SELECT url FROM webhook_urls u WHERE u.id = webhook_id))"
    };
}

pub(crate) mod admin;
pub(crate) mod checkpoint;
mod error;
pub(crate) mod hook_index;
pub(crate) mod orgs_watch;
pub(crate) mod reader;
pub(crate) mod ready;
pub mod result_log;
pub(crate) mod schema;
pub(crate) mod startup;
mod store_impl;
pub(crate) mod url_cache;
pub(crate) mod writer;

#[cfg(test)]
mod clock_tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};

pub(crate) use self::admin::SqliteDirectory;
use self::hook_index::HookIndex;
use self::reader::Readers;
use self::ready::{OrgLimits, ReadySet};
use self::result_log::ResultLog;
use self::url_cache::UrlCache;
use self::writer::{Cmd, Reply, Writer};
pub use super::CYCLE_MS;
use super::{Error, Org, OrgKey, Result};
use crate::clock::Clock;
use crate::domain::task::IdKey;

/// Locks a mutex, taking over the data if a holder panicked (every critical section leaves
/// its data consistent at each step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the store's handle and the writer thread.
pub(crate) struct Shared {
    pub(crate) ready: Mutex<ReadySet>,
    /// Wakes the dispatcher (new work, a freed slot).
    pub(crate) notify: Notify,
    pub(crate) hooks: Mutex<HookIndex>,
    /// Wakes the webhook sender (a delivery committed, a retry scheduled).
    pub(crate) hook_notify: Notify,
    /// Bumped after every commit, for whoever waits on queue changes (tests, drain).
    pub(crate) changed: tokio::sync::watch::Sender<u64>,
    /// The database's id key (public task ids).
    pub(crate) ids: IdKey,
    /// The next task sequence number. Drawn by the writer for each new row and by
    /// [`TaskQueue::sync_enter`](crate::store::TaskQueue::sync_enter) for the id of a sync
    /// call's kept result (outside the writer: the id is needed before the call's row is
    /// written). A number drawn but not used (a failed group, a duplicate key, a result not
    /// kept) is a gap, which nothing minds: `seq` only orders and keys rows.
    pub(crate) next_seq: std::sync::atomic::AtomicI64,
    /// Where the store reads the time.
    pub(crate) clock: Clock,
    /// Each lane's start-rate state (GCRA theoretical arrival time, ms): one process owns the
    /// file, so it is this process's alone.
    pub(crate) lane_rates: Mutex<HashMap<String, i64>>,
}

/// The embedded SQLite store (see the module docs).
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    readers: Readers,
    path: PathBuf,
    /// The result log's directory (responses of finished tasks).
    log_dir: PathBuf,
    /// Tasks whose lost result was reported already (each is logged once).
    lost_results: Arc<reader::LostResults>,
    /// Organizations read so far (their settings; the live balance is in the ready index).
    orgs: Arc<Mutex<HashMap<OrgKey, Org>>>,
    /// Applies `cloro org set` made by other processes ([`orgs_watch`]).
    watch: Mutex<Option<orgs_watch::Watch>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`, recovers unfinished tasks and
    /// starts the writer thread. Time is the system's.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with_clock(path, Clock::system())
    }

    /// [`SqliteStore::open`], reading the time from `clock` (tests move a manual clock instead
    /// of waiting).
    pub(crate) fn open_with_clock(path: &Path, clock: Clock) -> Result<SqliteStore> {
        let mut conn = schema::open_admin(path)?;
        let lock = schema::take_lock(path)?;
        let ids = schema::id_key(&conn)?;
        // Read before the organizations are loaded: a change committed in between is reloaded.
        let orgs_version = admin::orgs_version(&conn)?;
        let loaded = startup::load(&mut conn, clock.now_ms())?;
        let readers = Readers::open(path)?;
        let shared = Arc::new(Shared {
            ready: Mutex::new(loaded.ready),
            notify: Notify::new(),
            hooks: Mutex::new(loaded.hooks),
            hook_notify: Notify::new(),
            changed: tokio::sync::watch::Sender::new(0),
            ids,
            next_seq: std::sync::atomic::AtomicI64::new(loaded.next_seq),
            clock,
            lane_rates: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        let log_dir = result_log::dir_for(path);
        let log = ResultLog::open(&log_dir).map_err(|e| {
            Error::Unavailable(crate::store::Cause::new(
                format!("cannot open the result log {}: {e}", log_dir.display()),
                e,
            ))
        })?;
        let checkpoint = checkpoint::Checkpointer::start(path, &conn)?;
        let writer = Writer {
            conn,
            checkpoint,
            shared: shared.clone(),
            log,
            urls: UrlCache::default(),
        };
        let handle = std::thread::Builder::new()
            .name("cloro-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                Error::Other(crate::store::Cause::new(
                    format!("cannot start writer thread: {e}"),
                    e,
                ))
            })?;
        let orgs = Arc::new(Mutex::new(HashMap::new()));
        let watch = orgs_watch::spawn(path, orgs_version, tx.clone(), orgs.clone())?;
        Ok(SqliteStore {
            shared,
            tx: Mutex::new(Some(tx)),
            readers,
            path: path.to_owned(),
            log_dir,
            lost_results: Arc::default(),
            orgs,
            watch: Mutex::new(Some(watch)),
            writer: Mutex::new(Some(handle)),
            _lock: Some(lock),
        })
    }

    /// Stops the writer after the commands already sent (used on shutdown and by tests).
    pub(crate) fn close(&self) {
        if let Some(mut w) = lock(&self.watch).take() {
            w.stop();
        }
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }

    /// Sends a command to the writer and waits for its answer (after its group's commit).
    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = lock(&self.tx);
            let tx = guard
                .as_ref()
                .ok_or_else(|| Error::Unavailable("store is shut down".into()))?;
            tx.send(make(reply))
                .map_err(|_| Error::Unavailable("store writer stopped".into()))?;
        }
        rx.await
            .map_err(|_| Error::Unavailable("store writer stopped".into()))?
    }

    /// Makes an organization read on first use known to the ready index.
    fn ensure_loaded(&self, org: &Org) {
        let mut ready = lock(&self.shared.ready);
        if !ready.knows(org.key) {
            ready.set_org(
                org.key,
                OrgLimits {
                    concurrency: org.concurrency,
                    queue_limit: org.queue_limit,
                    credits: org.credits,
                },
            );
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}
