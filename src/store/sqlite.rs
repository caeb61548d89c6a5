//! The embedded store: one SQLite file, one writer thread, an in-memory ready index.
//!
//! * **Writer.** Every mutation is a command sent to one dedicated thread that owns the write
//!   connection. It takes every command waiting, applies them in ONE transaction
//!   (`BEGIN IMMEDIATE` … `COMMIT`, WAL, `synchronous=FULL`) and only then answers them and
//!   updates the in-memory index: group commit, so many small requests share one fsync and a
//!   reply always means "durable".
//! * **Readers.** Point reads (a task, an API key, an organization) use a small pool of
//!   read-only connections on the blocking thread pool; WAL lets them run beside the writer.
//! * **Ready index.** [`ReadySet`] holds what the scheduler needs (queued sequence numbers by
//!   organization and priority, running counts, balances), so a claim never scans the table and
//!   the status endpoint costs the same at any queue depth. It is rebuilt from the table at
//!   start-up; PROCESSING rows found then (a crash) go back to QUEUED and run again.
//!
//! Only one server process may own a database (an exclusive lock file enforces it); the CLI
//! may add organizations and keys at any time, and the server reads them on first use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::ready::{OrgLimits, Pick, ReadySet};
use super::result_log::{self, Location, ResultLog};
pub use super::{CYCLE_MS, CreatedOrg, OrgSpec};
use super::{
    ClaimedTask, Error, ItemError, KeyRecord, NewTask, Org, OrgKey, Outcome, QueueStatus, Result,
    Store, SubmitError, TaskRecord, WebhookJob, WebhookResult,
};
use crate::domain::apikey::ApiKey;
use crate::domain::task::{TaskStatus, seq_of, task_id};
use crate::domain::types::TaskType;
use crate::time_fmt::now_ms;

/// The schema's migrations in order; `PRAGMA user_version` is how many have run. Add new
/// ones at the end, never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_rate_limit.sql"),
    include_str!("../../migrations/sqlite/0003_webhooks.sql"),
    include_str!("../../migrations/sqlite/0004_webhook_state_in_tasks.sql"),
    include_str!("../../migrations/sqlite/0005_webhook_urls.sql"),
];
/// SQL: whether a task row has a webhook (in the row, or interned: migration 0005).
macro_rules! has_webhook {
    () => {
        "(webhook_url IS NOT NULL OR webhook_id IS NOT NULL)"
    };
}
/// SQL: a task row's webhook URL (in the row, or interned).
macro_rules! webhook_url_of_task {
    () => {
        "COALESCE(webhook_url, (SELECT url FROM webhook_urls u WHERE u.id = webhook_id))"
    };
}

/// Most commands folded into one transaction.
const MAX_GROUP: usize = 512;
const READERS: usize = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens a connection with the store's settings.
fn open(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -32_768)?;
    Ok(conn)
}

/// Opens the database for administration (the CLI), creating and migrating it if needed.
pub fn open_admin(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut conn = open(path, false)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() as i64 {
        return Err(Error::Other(format!(
            "the database's schema (version {version}) is newer than this cloro (version {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    let has_mask: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'id_mask'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if has_mask.is_none() {
        let mask: u64 = rand::random::<u64>() >> 2;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('id_mask', ?1)",
            [mask.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Creates an organization and its first API key.
pub fn create_org(conn: &Connection, spec: &OrgSpec) -> Result<CreatedOrg> {
    let now = now_ms();
    let org = Org::from_spec(spec, now)?;
    conn.execute(
        "INSERT INTO orgs(public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            org.public_id,
            org.name,
            org.plan,
            org.concurrency,
            org.credits,
            org.per_cycle,
            org.cycle_resets_ms,
            org.queue_limit,
            now
        ],
    )?;
    let key = conn.last_insert_rowid();
    conn.execute(
        "UPDATE orgs SET rate_limit = ?1 WHERE id = ?2",
        params![spec.rate_limit, key],
    )?;
    let (key_id, api_key) = insert_key(conn, key)?;
    Ok(CreatedOrg {
        org: Org { key, ..org },
        key_id,
        api_key,
    })
}

fn insert_key(conn: &Connection, org: OrgKey) -> Result<(String, ApiKey)> {
    let api_key = ApiKey::generate();
    let key_id = super::new_key_id();
    conn.execute(
        "INSERT INTO api_keys(key_id, org, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![key_id, org, api_key.digest().to_vec(), now_ms()],
    )?;
    Ok((key_id, api_key))
}

/// Creates another API key for the organization with public id `org_id`.
pub fn create_key(conn: &Connection, org_id: &str) -> Result<(String, ApiKey)> {
    let org: OrgKey = conn
        .query_row("SELECT id FROM orgs WHERE public_id = ?1", [org_id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or(Error::NotFound)?;
    insert_key(conn, org)
}

/// Revokes a key; `NotFound` if there is no such key.
pub fn revoke_key(conn: &Connection, key_id: &str) -> Result<()> {
    let n = conn.execute(
        "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE key_id = ?1",
        params![key_id, now_ms()],
    )?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

/// Number of organizations (the server creates `default` when there are none).
/// Sets (or, with `None`, removes) an organization's webhook signing secret.
pub fn set_webhook_secret(conn: &Connection, org_id: &str, secret: Option<&str>) -> Result<()> {
    let n = conn.execute(
        "UPDATE orgs SET webhook_secret = ?2 WHERE public_id = ?1",
        params![org_id, secret],
    )?;
    if n == 0 { Err(Error::NotFound) } else { Ok(()) }
}

pub fn count_orgs(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM orgs", [], |r| r.get(0))?)
}

fn read_org(conn: &Connection, key: OrgKey) -> Result<Org> {
    conn.query_row(
        "SELECT id, public_id, name, plan, concurrency, credits, per_cycle, cycle_resets_ms, queue_limit
         FROM orgs WHERE id = ?1",
        [key],
        |r| {
            Ok(Org {
                key: r.get(0)?,
                public_id: r.get(1)?,
                name: r.get(2)?,
                plan: r.get(3)?,
                concurrency: r.get(4)?,
                credits: r.get(5)?,
                per_cycle: r.get(6)?,
                cycle_resets_ms: r.get(7)?,
                queue_limit: r.get(8)?,
            })
        },
    )
    .map_err(Error::from)
}

// ----------------------------------------------------------------------------------------------
// The writer thread.

struct InsertItem {
    index: usize,
    task: NewTask,
    payload: String,
}

type Reply<T> = oneshot::Sender<Result<T>>;
/// A queued task as the ready index knows it: `(seq, priority, cost)`.
type Queued = (i64, u8, i64);
/// Queued tasks taken out of an organization's index, to put back if the delete fails.
type Taken = Option<(OrgKey, Vec<Queued>)>;

/// In-memory effect of one finished attempt.
struct FinishEffect {
    org: OrgKey,
    /// Credits reserved at pickup, released now.
    cost: i64,
    charged: i64,
    /// `(seq, priority, due)` when the task waits for a retry.
    retry: Option<(i64, u8, i64)>,
}

/// A pending webhook delivery as the in-memory due index knows it: small and free of heap
/// data, since the writer thread makes one per finished task with a webhook (the task id and
/// the URL are read from the task row when the delivery is claimed).
#[derive(Debug, Clone)]
struct PendingHook {
    org: OrgKey,
    /// Finished attempts.
    attempts: u32,
    /// Handed to a sender and not recorded yet.
    in_flight: bool,
    /// The task's finish time (purge removes the delivery with the task).
    created_ms: i64,
}

impl PendingHook {
    /// The delivery of a task that just finished (`now`): never attempted, due at once.
    fn fresh(org: OrgKey, now: i64) -> PendingHook {
        PendingHook {
            org,
            attempts: 0,
            in_flight: false,
            created_ms: now,
        }
    }
}

/// The pending deliveries (`tasks.wh_state = 0`) and when each is due. Rebuilt from the
/// task rows at start-up; a delivery that was in flight when the process died is due again.
///
/// The writer thread adds one entry per finished task with a webhook, while it holds the ready
/// index's lock: that is a push onto `fresh` (due at once, in finish order). The ordered set and
/// the map, dearer, are the claim's business (the sender's task) and hold retries, deliveries
/// in flight and what start-up found.
#[derive(Debug, Default)]
struct HookIndex {
    /// Never attempted, due at their finish time (`created_ms`), oldest first.
    fresh: std::collections::VecDeque<(i64, PendingHook)>,
    /// `(due, seq)` of the pending deliveries in `pending` that are not in flight.
    due: std::collections::BTreeSet<(i64, i64)>,
    pending: HashMap<i64, PendingHook>,
}

impl HookIndex {
    fn add(&mut self, seq: i64, due: i64, hook: PendingHook) {
        self.due.insert((due, seq));
        self.pending.insert(seq, hook);
    }

    /// Takes up to `max` deliveries due at `now`, earliest first, and marks them in flight:
    /// `(seq, org, attempt number)`.
    fn take_due(&mut self, now: i64, max: usize) -> Vec<(i64, OrgKey, u32)> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let fresh = self.fresh.front().map(|(_, h)| h.created_ms);
            let queued = self.due.first().map(|&(due, _)| due);
            match (fresh, queued) {
                (Some(f), q) if f <= now && q.is_none_or(|q| f <= q) => {
                    let Some((seq, mut h)) = self.fresh.pop_front() else {
                        break;
                    };
                    h.in_flight = true;
                    taken.push((seq, h.org, h.attempts + 1));
                    self.pending.insert(seq, h);
                }
                (_, Some(q)) if q <= now => {
                    let Some((due, seq)) = self.due.pop_first() else {
                        break;
                    };
                    debug_assert_eq!(due, q);
                    if let Some(h) = self.pending.get_mut(&seq)
                        && !h.in_flight
                    {
                        h.in_flight = true;
                        taken.push((seq, h.org, h.attempts + 1));
                    }
                }
                _ => break,
            }
        }
        taken
    }

    /// The earliest due time of a delivery not in flight.
    fn next_due(&self) -> Option<i64> {
        let fresh = self.fresh.front().map(|(_, h)| h.created_ms);
        let queued = self.due.first().map(|&(due, _)| due);
        match (fresh, queued) {
            (Some(f), Some(q)) => Some(f.min(q)),
            (f, q) => f.or(q),
        }
    }

    /// Forgets the deliveries of tasks that finished before `cutoff_ms` (purged with them),
    /// except those in flight (their record will find no row to change).
    fn purge(&mut self, cutoff_ms: i64) {
        self.fresh.retain(|(_, h)| h.created_ms >= cutoff_ms);
        self.pending
            .retain(|_, h| h.created_ms >= cutoff_ms || h.in_flight);
        let pending = &self.pending;
        self.due.retain(|(_, seq)| pending.contains_key(seq));
    }
}

enum Cmd {
    Submit {
        org: OrgKey,
        items: Vec<InsertItem>,
        reserved: u64,
        reply: Reply<Vec<(usize, std::result::Result<TaskRecord, ItemError>)>>,
    },
    Claim {
        picks: Vec<Pick>,
        reply: Reply<Vec<RawClaim>>,
    },
    Finish {
        outcomes: Vec<(Attempt, FinishRow)>,
        reply: Reply<()>,
    },
    Delete {
        org: OrgKey,
        taken: Vec<Queued>,
        reply: Reply<u64>,
    },
    Purge {
        cutoff: i64,
        reply: Reply<u64>,
    },
    Renew {
        now: i64,
        reply: Reply<Vec<Renewed>>,
    },
    Webhook {
        seq: i64,
        /// The attempt number the claim handed out.
        claimed: u32,
        /// Attempts counted once this is recorded.
        attempt: u32,
        result: WebhookResult,
        reply: Reply<()>,
    },
}

/// An organization whose billing cycle restarted: `(org, new balance, next reset)`.
type Renewed = (OrgKey, i64, i64);

/// The attempt a finish ends: the claim it holds and the credits it reserved.
struct Attempt {
    seq: i64,
    org: OrgKey,
    attempt: u32,
    cost: i64,
}

struct RawClaim {
    pick: Pick,
    id: Vec<u8>,
    task_type: i64,
    payload: String,
    attempts: i64,
}

enum FinishRow {
    Completed { response: String, credits: i64 },
    Retry { run_after_ms: i64 },
    Failed { response: String },
}

/// What to do once a group committed (or failed to).
enum After {
    Submit {
        org: OrgKey,
        reserved: u64,
        pushed: Vec<Queued>,
        reply: Reply<Vec<(usize, std::result::Result<TaskRecord, ItemError>)>>,
        results: Vec<(usize, std::result::Result<TaskRecord, ItemError>)>,
    },
    Claim {
        picks: Vec<Pick>,
        reply: Reply<Vec<RawClaim>>,
        claims: Vec<RawClaim>,
        /// Deliveries of tasks failed at pickup (credits).
        hooks: Vec<(i64, PendingHook)>,
    },
    Finish {
        effects: Vec<FinishEffect>,
        /// Deliveries written with the terminal statuses: `(seq, hook)`.
        hooks: Vec<(i64, PendingHook)>,
        reply: Reply<()>,
    },
    Webhook {
        seq: i64,
        attempt: u32,
        result: WebhookResult,
        now: i64,
        /// The row changed (the record came from the attempt holding the delivery).
        applied: bool,
        reply: Reply<()>,
    },
    Count {
        reply: Reply<u64>,
        n: u64,
        restore: Taken,
    },
    Renew {
        rows: Vec<Renewed>,
        reply: Reply<Vec<Renewed>>,
    },
    Failed {
        reply: FailedReply,
        error: String,
    },
}

enum FailedReply {
    Submit(
        Reply<Vec<(usize, std::result::Result<TaskRecord, ItemError>)>>,
        OrgKey,
        u64,
    ),
    Claim(Reply<Vec<RawClaim>>, Vec<Pick>),
    Finish(Reply<()>),
    Count(Reply<u64>, Taken),
    Renew(Reply<Vec<Renewed>>),
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    next_seq: i64,
    log: ResultLog,
    urls: UrlCache,
}

/// The task's webhook URL, as a submission stores it: recurring URLs are interned in
/// `webhook_urls` (migration 0005) and referenced by id, so a task's row does not carry them.
/// The first sighting of a URL (lately) is stored in the row: a URL unique to one task costs
/// no extra row.
#[derive(Default)]
struct UrlCache {
    /// Interned URLs and their ids (committed, or in the open transaction: cleared when a
    /// transaction fails).
    ids: HashMap<String, i64>,
    /// URLs seen once lately.
    seen: std::collections::HashSet<String>,
    /// When unreferenced URLs were last deleted.
    last_gc_ms: i64,
}

impl UrlCache {
    /// Most URLs remembered in each of `ids` and `seen`.
    const MAX: usize = 4096;
    /// Unreferenced `webhook_urls` rows are deleted by a purge at most this often (it reads
    /// every task row once).
    const GC_EVERY_MS: i64 = 3_600_000;

    /// `(url stored in the row, id stored in the row)` for a submission's URL.
    fn store<'u>(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        url: Option<&'u str>,
    ) -> rusqlite::Result<(Option<&'u str>, Option<i64>)> {
        let Some(url) = url else {
            return Ok((None, None));
        };
        if let Some(&id) = self.ids.get(url) {
            return Ok((None, Some(id)));
        }
        if !self.seen.contains(url) {
            if self.seen.len() >= Self::MAX {
                self.seen.clear();
            }
            self.seen.insert(url.to_owned());
            return Ok((Some(url), None));
        }
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO webhook_urls(url) VALUES (?1)
                 ON CONFLICT(url) DO UPDATE SET url = excluded.url RETURNING id",
            )?
            .query_row([url], |r| r.get(0))?;
        if self.ids.len() >= Self::MAX {
            self.ids.clear();
        }
        self.ids.insert(url.to_owned(), id);
        self.seen.remove(url);
        Ok((None, Some(id)))
    }
}

struct Shared {
    ready: Mutex<ReadySet>,
    notify: Notify,
    hooks: Mutex<HookIndex>,
    /// Wakes the webhook sender (a delivery committed, a retry scheduled).
    hook_notify: Notify,
    /// Bumped after every commit, for whoever waits on queue changes (tests, drain).
    changed: tokio::sync::watch::Sender<u64>,
    mask: u64,
}

fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let (mut groups, mut cmds, mut busy) = (0u64, 0u64, Duration::ZERO);
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            groups += 1;
            cmds += group.len() as u64;
            let started = std::time::Instant::now();
            self.apply_group(group);
            busy += started.elapsed();
        }
        tracing::debug!(
            groups,
            cmds,
            busy_ms = busy.as_millis() as u64,
            "Store writer stopped"
        );
    }

    fn apply_group(&mut self, mut group: Vec<Cmd>) {
        let now = now_ms();
        let seq_before = self.next_seq;
        let mut afters = Vec::with_capacity(group.len());
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = match self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
            {
                Ok(tx) => tx,
                Err(e) => {
                    afters.extend(group.drain(..).map(unapplied));
                    return Err(e);
                }
            };
            let mut cmds = group.drain(..);
            for cmd in cmds.by_ref() {
                let applied = Self::apply(
                    &tx,
                    &self.shared,
                    &mut self.log,
                    &mut self.urls,
                    &mut self.next_seq,
                    now,
                    cmd,
                    &mut afters,
                );
                if let Err(e) = applied {
                    // The whole group fails: every command not applied yet is answered too.
                    afters.extend(cmds.map(unapplied));
                    return Err(e);
                }
            }
            drop(cmds);
            // Responses are durable before the rows that point at them.
            self.log.flush().map_err(io_err)?;
            tx.commit()
        })();
        let mut ready = lock(&self.shared.ready);
        match outcome {
            Ok(()) => {
                let mut hooks_changed = false;
                {
                    let mut hooks = lock(&self.shared.hooks);
                    for a in &mut afters {
                        hooks_changed |= Self::hooks_after_commit(&mut hooks, a);
                    }
                }
                for a in afters {
                    Self::after_commit(&mut ready, a);
                }
                drop(ready);
                if hooks_changed {
                    self.shared.hook_notify.notify_one();
                }
                self.shared.notify.notify_one();
                self.shared.changed.send_modify(|g| *g = g.wrapping_add(1));
            }
            Err(e) => {
                self.log.discard();
                // Ids interned in the rolled-back transaction do not exist.
                self.urls.ids.clear();
                self.next_seq = seq_before;
                let msg = e.to_string();
                tracing::error!(error = %msg, "Store transaction failed");
                for a in afters {
                    Self::after_failure(&mut ready, a, &msg);
                }
            }
        }
    }

    /// Applies one command inside the open transaction. On a statement error the command is
    /// pushed as `After::Failed` and the error ends the group.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        tx: &rusqlite::Transaction<'_>,
        shared: &Shared,
        log: &mut ResultLog,
        urls: &mut UrlCache,
        next_seq: &mut i64,
        now: i64,
        cmd: Cmd,
        afters: &mut Vec<After>,
    ) -> rusqlite::Result<()> {
        match cmd {
            Cmd::Submit {
                org,
                items,
                reserved,
                reply,
            } => {
                let r = (|| -> rusqlite::Result<_> {
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO tasks(seq, id, org, task_type, priority, status, credits_to_charge,
                                           idem_key, webhook_url, payload, created_ms, webhook_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?;
                    let mut results = Vec::with_capacity(items.len());
                    let mut pushed = Vec::with_capacity(items.len());
                    for it in items {
                        let seq = *next_seq;
                        let id = task_id(now, seq, shared.mask, rand::random::<u16>());
                        let t = &it.task;
                        let (url, url_id) = urls.store(tx, t.webhook_url.as_deref())?;
                        let res = stmt.execute(params![
                            seq,
                            &id.as_bytes()[..],
                            org,
                            t.task_type.code(),
                            t.priority,
                            t.credits_to_charge,
                            t.idempotency_key,
                            url,
                            it.payload,
                            now,
                            url_id
                        ]);
                        match res {
                            Ok(_) => {
                                *next_seq += 1;
                                pushed.push((seq, t.priority, t.credits_to_charge));
                                results.push((
                                    it.index,
                                    Ok(TaskRecord {
                                        id,
                                        task_type: t.task_type,
                                        status: TaskStatus::Queued,
                                        priority: t.priority,
                                        created_ms: now,
                                        started_ms: None,
                                        finished_ms: None,
                                        attempts: 0,
                                        idempotency_key: t.idempotency_key.clone(),
                                        webhook_url: t.webhook_url.clone(),
                                        credits_to_charge: t.credits_to_charge,
                                        credits_charged: None,
                                        response: None,
                                        webhook_delivered_ms: None,
                                    }),
                                ));
                            }
                            Err(e) if is_unique_violation(&e) => {
                                let key = t.idempotency_key.clone().unwrap_or_default();
                                results.push((it.index, Err(ItemError::DuplicateKey(key))));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((results, pushed))
                })();
                match r {
                    Ok((results, pushed)) => {
                        afters.push(After::Submit {
                            org,
                            reserved,
                            pushed,
                            reply,
                            results,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Submit(reply, org, reserved),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
            Cmd::Claim { picks, reply } => {
                let r = (|| -> rusqlite::Result<_> {
                    let mut run = tx.prepare_cached(
                        "UPDATE tasks SET status = 1, attempts = attempts + 1,
                                started_ms = COALESCE(started_ms, ?2), run_after_ms = NULL
                         WHERE seq = ?1 AND status = 0
                         RETURNING id, task_type, payload, attempts",
                    )?;
                    let mut reject = tx.prepare_cached(concat!(
                        "UPDATE tasks SET status = 3, finished_ms = ?2, credits_charged = 0, run_after_ms = NULL,
                                res_seg = ?3, res_off = ?4, res_len = ?5,
                                wh_state = CASE WHEN ",
                        has_webhook!(),
                        " THEN 0 END
                         WHERE seq = ?1 AND status = 0
                         RETURNING ",
                        has_webhook!()
                    ))?;
                    let mut hooks = Vec::new();
                    let insufficient = serde_json::json!({"error": {
                        "code": "INSUFFICIENT_CREDITS",
                        "message": "Insufficient credits"
                    }})
                    .to_string();
                    let mut claims = Vec::with_capacity(picks.len());
                    for p in &picks {
                        if p.run {
                            let row = run
                                .query_row(params![p.seq, now], |r| {
                                    Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                                })
                                .optional()?;
                            if let Some((id, task_type, payload, attempts)) = row {
                                claims.push(RawClaim {
                                    pick: *p,
                                    id,
                                    task_type,
                                    payload,
                                    attempts,
                                });
                            }
                        } else {
                            let at = log.stage(now, insufficient.as_bytes()).map_err(io_err)?;
                            let failed: Option<bool> = reject
                                .query_row(
                                    params![p.seq, now, at.segment, at.offset as i64, at.len],
                                    |r| r.get(0),
                                )
                                .optional()?;
                            match failed {
                                None => log.unstage(at),
                                // FAILED is terminal: its webhook goes out like any other
                                // (pending in the same row update).
                                Some(true) => hooks.push((p.seq, PendingHook::fresh(p.org, now))),
                                Some(false) => {}
                            }
                        }
                    }
                    Ok((claims, hooks))
                })();
                match r {
                    Ok((claims, hooks)) => {
                        afters.push(After::Claim {
                            picks,
                            reply,
                            claims,
                            hooks,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Claim(reply, picks),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
            Cmd::Finish { outcomes, reply } => {
                let r = (|| -> rusqlite::Result<_> {
                    // Only the attempt that holds the claim may end it: a second finish of
                    // the same attempt changes nothing and charges nothing.
                    // A task with a webhook becomes due for delivery in the same row update
                    // (the outbox is the row itself).
                    let mut done = tx.prepare_cached(concat!(
                        "UPDATE tasks SET status = ?3, credits_charged = ?4, finished_ms = ?5,
                                res_seg = ?6, res_off = ?7, res_len = ?8,
                                wh_state = CASE WHEN ",
                        has_webhook!(),
                        " THEN 0 END
                         WHERE seq = ?1 AND status = 1 AND attempts = ?2
                         RETURNING ",
                        has_webhook!()
                    ))?;
                    let mut hooks = Vec::new();
                    let mut retry = tx.prepare_cached(
                        "UPDATE tasks SET status = 0, run_after_ms = ?3
                         WHERE seq = ?1 AND status = 1 AND attempts = ?2
                         RETURNING priority",
                    )?;
                    let mut charges: HashMap<OrgKey, i64> = HashMap::new();
                    let mut effects = Vec::with_capacity(outcomes.len());
                    for (t, row) in &outcomes {
                        let effect = |charged, retry| FinishEffect {
                            org: t.org,
                            cost: t.cost,
                            charged,
                            retry,
                        };
                        let (status, response, charged) = match row {
                            FinishRow::Completed { response, credits } => (2, response, *credits),
                            FinishRow::Failed { response } => (3, response, 0),
                            FinishRow::Retry { run_after_ms } => {
                                let prio: Option<u8> = retry
                                    .query_row(params![t.seq, t.attempt, run_after_ms], |r| {
                                        r.get(0)
                                    })
                                    .optional()?;
                                if let Some(prio) = prio {
                                    effects.push(effect(0, Some((t.seq, prio, *run_after_ms))));
                                }
                                continue;
                            }
                        };
                        let at = log.stage(now, response.as_bytes()).map_err(io_err)?;
                        let params = params![
                            t.seq,
                            t.attempt,
                            status,
                            charged,
                            now,
                            at.segment,
                            at.offset as i64,
                            at.len
                        ];
                        let updated: Option<bool> =
                            done.query_row(params, |r| r.get(0)).optional()?;
                        if let Some(hooked) = updated {
                            if hooked {
                                hooks.push((t.seq, PendingHook::fresh(t.org, now)));
                            }
                            if charged != 0 {
                                *charges.entry(t.org).or_default() += charged;
                            }
                            effects.push(effect(charged, None));
                        } else {
                            log.unstage(at);
                        }
                    }
                    let mut charge =
                        tx.prepare_cached("UPDATE orgs SET credits = credits - ?2 WHERE id = ?1")?;
                    for (org, amount) in charges {
                        if amount != 0 {
                            charge.execute(params![org, amount])?;
                        }
                    }
                    Ok((effects, hooks))
                })();
                match r {
                    Ok((effects, hooks)) => {
                        afters.push(After::Finish {
                            effects,
                            hooks,
                            reply,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Finish(reply),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
            Cmd::Delete { org, taken, reply } => {
                let r = (|| -> rusqlite::Result<u64> {
                    let mut del =
                        tx.prepare_cached("DELETE FROM tasks WHERE seq = ?1 AND status = 0")?;
                    let mut n = 0;
                    for (seq, _, _) in &taken {
                        n += del.execute([seq])? as u64;
                    }
                    Ok(n)
                })();
                match r {
                    Ok(n) => {
                        afters.push(After::Count {
                            reply,
                            n,
                            restore: None,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Count(reply, Some((org, taken))),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
            Cmd::Renew { now, reply } => {
                // Credits do not roll over: at the end of a cycle the balance is the plan's
                // credits again and the next reset is one cycle later (skipping missed ones).
                let r = (|| -> rusqlite::Result<Vec<Renewed>> {
                    let mut stmt = tx.prepare_cached(
                        "UPDATE orgs SET credits = per_cycle,
                                cycle_resets_ms = cycle_resets_ms + ((?1 - cycle_resets_ms) / ?2 + 1) * ?2
                         WHERE per_cycle IS NOT NULL AND cycle_resets_ms IS NOT NULL AND cycle_resets_ms <= ?1
                         RETURNING id, credits, cycle_resets_ms",
                    )?;
                    let rows = stmt.query_map(params![now, CYCLE_MS], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
                    rows.collect()
                })();
                match r {
                    Ok(rows) => {
                        afters.push(After::Renew { rows, reply });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Renew(reply),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
            Cmd::Webhook {
                seq,
                claimed,
                attempt,
                result,
                reply,
            } => {
                // Only the attempt that holds the delivery may record it: the stored count is
                // still the one before that attempt.
                let before = claimed.saturating_sub(1);
                let r = match result {
                    WebhookResult::Delivered => tx
                        .prepare_cached(
                            "UPDATE tasks SET wh_attempts = ?2, wh_state = 1, wh_delivered_ms = ?3
                             WHERE seq = ?1 AND wh_state = 0 AND COALESCE(wh_attempts, 0) = ?4",
                        )
                        .and_then(|mut s| s.execute(params![seq, attempt, now, before])),
                    WebhookResult::Retry { delay_ms } | WebhookResult::Deferred { delay_ms } => tx
                        .prepare_cached(
                            "UPDATE tasks SET wh_attempts = ?2, wh_next_at = ?3
                             WHERE seq = ?1 AND wh_state = 0 AND COALESCE(wh_attempts, 0) = ?4",
                        )
                        .and_then(|mut s| s.execute(params![seq, attempt, now + delay_ms, before])),
                    WebhookResult::GaveUp => tx
                        .prepare_cached(
                            "UPDATE tasks SET wh_attempts = ?2, wh_state = 2
                             WHERE seq = ?1 AND wh_state = 0 AND COALESCE(wh_attempts, 0) = ?3",
                        )
                        .and_then(|mut s| s.execute(params![seq, attempt, before])),
                };
                match r {
                    Ok(n) => {
                        afters.push(After::Webhook {
                            seq,
                            attempt,
                            result,
                            now,
                            applied: n == 1,
                            reply,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Finish(reply),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
            Cmd::Purge { cutoff, reply } => {
                // A delivery's state is in its task's row: they go together.
                let r = tx
                    .execute(
                        "DELETE FROM tasks WHERE seq IN (
                        SELECT seq FROM tasks WHERE finished_ms IS NOT NULL AND finished_ms < ?1 LIMIT 20000)",
                        [cutoff],
                    )
                    .and_then(|n| {
                        // Interned URLs no task uses any more (one read of every task row, so
                        // at most hourly). The cache forgets every id: some may be gone.
                        if now - urls.last_gc_ms >= UrlCache::GC_EVERY_MS {
                            tx.execute(
                                "DELETE FROM webhook_urls WHERE id NOT IN
                                    (SELECT webhook_id FROM tasks WHERE webhook_id IS NOT NULL)",
                                [],
                            )?;
                            urls.ids.clear();
                            urls.last_gc_ms = now;
                        }
                        Ok(n)
                    });
                match r {
                    Ok(n) => {
                        afters.push(After::Count {
                            reply,
                            n: n as u64,
                            restore: None,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        afters.push(After::Failed {
                            reply: FailedReply::Count(reply, None),
                            error: e.to_string(),
                        });
                        Err(e)
                    }
                }
            }
        }
    }

    /// Updates the webhook due index for a committed command; true if it changed.
    fn hooks_after_commit(hooks: &mut HookIndex, a: &mut After) -> bool {
        match a {
            After::Finish { hooks: new, .. } | After::Claim { hooks: new, .. }
                if !new.is_empty() =>
            {
                // Due at once: at their finish time.
                hooks.fresh.extend(new.drain(..));
                true
            }
            After::Webhook {
                seq,
                attempt,
                result,
                now,
                applied: true,
                ..
            } => {
                match result {
                    WebhookResult::Retry { delay_ms } | WebhookResult::Deferred { delay_ms } => {
                        if let Some(h) = hooks.pending.get_mut(seq) {
                            h.attempts = *attempt;
                            h.in_flight = false;
                            hooks.due.insert((*now + *delay_ms, *seq));
                        }
                    }
                    WebhookResult::Delivered | WebhookResult::GaveUp => {
                        hooks.pending.remove(seq);
                    }
                }
                true
            }
            _ => false,
        }
    }

    fn after_commit(ready: &mut ReadySet, a: After) {
        match a {
            After::Submit {
                org,
                reserved,
                pushed,
                reply,
                results,
            } => {
                ready.release_submission(org, reserved);
                for (seq, prio, cost) in pushed {
                    ready.push(org, seq, prio, cost);
                }
                let _ = reply.send(Ok(results));
            }
            After::Claim {
                picks,
                reply,
                claims,
                ..
            } => {
                ready.settle(&picks);
                // A running pick whose row was not QUEUED any more frees its slot again.
                for p in picks.iter().filter(|p| p.run) {
                    if !claims.iter().any(|c| c.pick.seq == p.seq) {
                        ready.finish(p.org, p.cost, 0);
                    }
                }
                let _ = reply.send(Ok(claims));
            }
            After::Webhook { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            After::Finish { effects, reply, .. } => {
                for FinishEffect {
                    org,
                    cost,
                    charged,
                    retry,
                } in effects
                {
                    ready.finish(org, cost, charged);
                    if let Some((seq, prio, due)) = retry {
                        ready.push_delayed(org, seq, prio, cost, due);
                    }
                }
                let _ = reply.send(Ok(()));
            }
            After::Renew { rows, reply } => {
                for &(org, credits, _) in &rows {
                    ready.set_credits(org, credits);
                }
                let _ = reply.send(Ok(rows));
            }
            After::Count { reply, n, .. } => {
                let _ = reply.send(Ok(n));
            }
            After::Failed { reply, error } => {
                Self::after_failure(ready, After::Failed { reply, error }, "")
            }
        }
    }

    fn after_failure(ready: &mut ReadySet, a: After, msg: &str) {
        let err = || Error::Unavailable(msg.to_owned());
        match a {
            After::Submit {
                org,
                reserved,
                reply,
                ..
            } => {
                ready.release_submission(org, reserved);
                let _ = reply.send(Err(err()));
            }
            After::Claim { picks, reply, .. } => {
                restore_picks(ready, &picks);
                let _ = reply.send(Err(err()));
            }
            After::Finish { reply, .. } | After::Webhook { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            After::Renew { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            After::Count { reply, restore, .. } => {
                restore_taken(ready, restore);
                let _ = reply.send(Err(err()));
            }
            After::Failed { reply, error } => {
                let e = Error::Unavailable(if msg.is_empty() {
                    error
                } else {
                    msg.to_owned()
                });
                match reply {
                    FailedReply::Submit(r, org, reserved) => {
                        ready.release_submission(org, reserved);
                        let _ = r.send(Err(e));
                    }
                    FailedReply::Claim(r, picks) => {
                        restore_picks(ready, &picks);
                        let _ = r.send(Err(e));
                    }
                    FailedReply::Renew(r) => {
                        let _ = r.send(Err(e));
                    }
                    FailedReply::Finish(r) => {
                        let _ = r.send(Err(e));
                    }
                    FailedReply::Count(r, restore) => {
                        restore_taken(ready, restore);
                        let _ = r.send(Err(e));
                    }
                }
            }
        }
    }
}

/// A command that was never applied, answered as failed when its group fails.
fn unapplied(cmd: Cmd) -> After {
    let error = "transaction aborted".to_owned();
    let reply = match cmd {
        Cmd::Submit {
            org,
            reserved,
            reply,
            ..
        } => FailedReply::Submit(reply, org, reserved),
        Cmd::Claim { picks, reply } => FailedReply::Claim(reply, picks),
        Cmd::Finish { reply, .. } => FailedReply::Finish(reply),
        Cmd::Delete { org, taken, reply } => FailedReply::Count(reply, Some((org, taken))),
        Cmd::Purge { reply, .. } => FailedReply::Count(reply, None),
        Cmd::Renew { reply, .. } => FailedReply::Renew(reply),
        Cmd::Webhook { reply, .. } => FailedReply::Finish(reply),
    };
    After::Failed { reply, error }
}

fn restore_picks(ready: &mut ReadySet, picks: &[Pick]) {
    ready.settle(picks);
    for p in picks {
        if p.run {
            ready.finish(p.org, p.cost, 0);
        }
        ready.push(p.org, p.seq, p.priority, p.cost);
    }
}

fn restore_taken(ready: &mut ReadySet, restore: Taken) {
    if let Some((org, taken)) = restore {
        for (seq, prio, cost) in taken {
            ready.push(org, seq, prio, cost);
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The store.

/// The embedded SQLite store (see the module docs).
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// The result log's directory (responses of finished tasks).
    log_dir: PathBuf,
    orgs: Mutex<HashMap<OrgKey, Org>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`, recovers unfinished tasks and
    /// starts the writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = open_admin(path)?;
        let lock = take_lock(path)?;
        let mask: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'id_mask'", [], |r| {
                r.get::<_, String>(0)
            })?
            .parse()
            .map_err(|_| Error::Other("corrupt id mask".into()))?;
        let mut ready = ReadySet::new();
        let mut hooks = HookIndex::default();
        let now = now_ms();
        let next_seq;
        {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Tasks that were running when the last process died run again.
            tx.execute("UPDATE tasks SET status = 0 WHERE status = 1", [])?;
            next_seq = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks", [], |r| {
                r.get(0)
            })?;
            {
                let mut stmt =
                    tx.prepare("SELECT id, concurrency, queue_limit, credits FROM orgs")?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?;
                for row in rows {
                    let (org, concurrency, queue_limit, credits) = row?;
                    ready.set_org(
                        org,
                        OrgLimits {
                            concurrency,
                            queue_limit,
                            credits,
                        },
                    );
                }
                // One scan for both in-memory indexes: the queued tasks and the pending
                // webhook deliveries (a delivery in flight when the process died is due again).
                let mut stmt = tx.prepare(
                    "SELECT seq, org, priority, credits_to_charge, run_after_ms, status, wh_state,
                            COALESCE(wh_attempts, 0), COALESCE(wh_next_at, finished_ms), finished_ms
                     FROM tasks WHERE status = 0 OR wh_state = 0",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let (seq, org): (i64, i64) = (r.get(0)?, r.get(1)?);
                    if r.get::<_, i64>(5)? == 0 {
                        let (prio, cost, run_after): (u8, i64, Option<i64>) =
                            (r.get(2)?, r.get(3)?, r.get(4)?);
                        match run_after {
                            Some(due) if due > now => ready.push_delayed(org, seq, prio, cost, due),
                            _ => ready.push(org, seq, prio, cost),
                        }
                    }
                    if r.get::<_, Option<i64>>(6)? == Some(0) {
                        let hook = PendingHook {
                            org,
                            attempts: r.get(7)?,
                            in_flight: false,
                            created_ms: r.get::<_, Option<i64>>(9)?.unwrap_or(now),
                        };
                        hooks.add(seq, r.get::<_, Option<i64>>(8)?.unwrap_or(now), hook);
                    }
                }
            }
            tx.commit()?;
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open(path, true)?);
        }
        let shared = Arc::new(Shared {
            ready: Mutex::new(ready),
            notify: Notify::new(),
            hooks: Mutex::new(hooks),
            hook_notify: Notify::new(),
            changed: tokio::sync::watch::Sender::new(0),
            mask,
        });
        let (tx, rx) = mpsc::channel();
        let log_dir = result_log::dir_for(path);
        let log = ResultLog::open(&log_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot open the result log {}: {e}",
                log_dir.display()
            ))
        })?;
        let writer = Writer {
            conn,
            shared: shared.clone(),
            next_seq,
            log,
            urls: UrlCache::default(),
        };
        let handle = std::thread::Builder::new()
            .name("cloro-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Other(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            shared,
            tx: Mutex::new(Some(tx)),
            readers: Arc::new(Mutex::new(readers)),
            path: path.to_owned(),
            log_dir,
            orgs: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(handle)),
            _lock: Some(lock),
        })
    }

    /// Stops the writer after the commands already sent (used on shutdown and by tests).
    pub fn close(&self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

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

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = lock(&readers).pop();
            let conn = match conn {
                Some(c) => c,
                None => open(&path, true)?,
            };
            let out = f(&conn);
            let mut pool = lock(&readers);
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Other(format!("reader task failed: {e}")))?
    }

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

/// Only one server may own a database: an exclusive lock on `<db>.lock`.
fn take_lock(path: &Path) -> Result<std::fs::File> {
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", lock_path.display())))?;
    file.try_lock().map_err(|_| {
        Error::Conflict(format!(
            "another cloro server is using {} (lock file {})",
            path.display(),
            lock_path.display()
        ))
    })?;
    Ok(file)
}

/// A task row: its stored id, its organization, the record, and where its response is.
type TaskRow = (Vec<u8>, OrgKey, TaskRecord, Option<Location>);

fn decode_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    let id: Vec<u8> = r.get(0)?;
    let org: OrgKey = r.get(1)?;
    let task_type: i64 = r.get(2)?;
    let at = match (
        r.get::<_, Option<i64>>(11)?,
        r.get::<_, Option<i64>>(14)?,
        r.get::<_, Option<u32>>(15)?,
    ) {
        (Some(segment), Some(offset), Some(len)) => Some(Location {
            segment,
            offset: offset as u64,
            len,
        }),
        _ => None,
    };
    let uuid = Uuid::from_slice(&id).unwrap_or_default();
    Ok((
        id,
        org,
        TaskRecord {
            id: uuid,
            task_type: TaskType::from_code(task_type).unwrap_or(TaskType::Chatgpt),
            status: TaskStatus::from_code(r.get(3)?),
            priority: r.get(4)?,
            created_ms: r.get(5)?,
            started_ms: r.get(6)?,
            finished_ms: r.get(7)?,
            attempts: r.get(8)?,
            idempotency_key: r.get(9)?,
            webhook_url: r.get(10)?,
            credits_to_charge: r.get(12)?,
            credits_charged: r.get(13)?,
            response: None,
            webhook_delivered_ms: r.get(16)?,
        },
        at,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.read(move |c| {
            c.query_row(
                "SELECT k.key_id, k.org, k.hash, k.revoked_ms, o.rate_limit
                 FROM api_keys k LEFT JOIN orgs o ON o.id = k.org WHERE k.hash = ?1",
                [&digest[..]],
                |r| {
                    Ok(KeyRecord {
                        key_id: r.get(0)?,
                        org: r.get(1)?,
                        digest: r.get(2)?,
                        revoked: r.get::<_, Option<i64>>(3)?.is_some(),
                        rate_limit: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(Error::from)
        })
        .await
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        let cached = lock(&self.orgs).get(&key).cloned();
        let mut org = match cached {
            Some(o) => o,
            None => {
                let o = self.read(move |c| read_org(c, key)).await?;
                self.ensure_loaded(&o);
                lock(&self.orgs).insert(key, o.clone());
                o
            }
        };
        org.credits = lock(&self.shared.ready).credits(key);
        Ok(org)
    }

    async fn submit(
        &self,
        org: OrgKey,
        tasks: Vec<NewTask>,
    ) -> Result<std::result::Result<Vec<std::result::Result<TaskRecord, ItemError>>, SubmitError>>
    {
        let o = self.org(org).await?;
        let n = tasks.len();
        let mut out: Vec<Option<std::result::Result<TaskRecord, ItemError>>> = vec![None; n];
        let items;
        let reserved;
        {
            let mut ready = lock(&self.shared.ready);
            let balance = ready.credits(o.key);
            items = super::screen_submission(tasks, balance, &mut out)
                .into_iter()
                .map(|(index, task)| {
                    let payload = task.payload.to_string();
                    InsertItem {
                        index,
                        task,
                        payload,
                    }
                })
                .collect::<Vec<_>>();
            reserved = items.len() as u64;
            if let Err(limit) = ready.reserve_submission(o.key, reserved) {
                return Ok(Err(SubmitError::QueueLimit(limit)));
            }
        }
        if !items.is_empty() {
            let results = self
                .send(|reply| Cmd::Submit {
                    org: o.key,
                    items,
                    reserved,
                    reply,
                })
                .await?;
            for (index, r) in results {
                out[index] = Some(r);
            }
        }
        Ok(Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Err(ItemError::InsufficientCredits)))
            .collect()))
    }

    async fn get_task(&self, org: OrgKey, id: Uuid) -> Result<Option<TaskRecord>> {
        let seq = seq_of(&id, self.shared.mask);
        let log_dir = self.log_dir.clone();
        self.read(move |c| {
            let row = c
                .prepare_cached(concat!(
                    "SELECT id, org, task_type, status, priority, created_ms, started_ms, finished_ms, attempts,
                            idem_key, ",
                    webhook_url_of_task!(),
                    ", res_seg, credits_to_charge, credits_charged, res_off, res_len, wh_delivered_ms
                     FROM tasks WHERE seq = ?1"
                ))?
                .query_row([seq], decode_record)
                .optional()?;
            let Some((stored, owner, mut rec, at)) = row else { return Ok(None) };
            if owner != org || !crate::domain::apikey::constant_time_eq(&stored, id.as_bytes()) {
                return Ok(None);
            }
            if let Some(at) = at {
                let bytes = result_log::read(&log_dir, at)
                    .map_err(|e| Error::Other(format!("cannot read the response of task {id}: {e}")))?;
                rec.response = Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Other(format!("corrupt response of task {id}: {e}")))?,
                );
            }
            Ok(Some(rec))
        })
        .await
    }

    async fn status(&self, org: OrgKey) -> Result<QueueStatus> {
        let c = lock(&self.shared.ready).counts(org);
        Ok(QueueStatus {
            queued: c.queued,
            processing: c.processing,
            by_priority: c.by_priority,
            concurrency_used: c.processing,
            concurrency_max: u64::from(c.concurrency),
        })
    }

    async fn clear_queue(&self, org: OrgKey) -> Result<u64> {
        let taken = lock(&self.shared.ready).take_queued(org);
        if taken.is_empty() {
            return Ok(0);
        }
        self.send(|reply| Cmd::Delete { org, taken, reply }).await
    }

    async fn claim(&self, max: usize) -> Result<Vec<ClaimedTask>> {
        let picks = {
            let mut ready = lock(&self.shared.ready);
            ready.promote_due(now_ms());
            ready.claim(max)
        };
        if picks.is_empty() {
            return Ok(Vec::new());
        }
        let raw = self.send(|reply| Cmd::Claim { picks, reply }).await?;
        Ok(raw
            .into_iter()
            .map(|c| ClaimedTask {
                seq: c.pick.seq,
                id: Uuid::from_slice(&c.id).unwrap_or_default(),
                org: c.pick.org,
                task_type: TaskType::from_code(c.task_type).unwrap_or(TaskType::Chatgpt),
                payload: serde_json::from_str(&c.payload).unwrap_or(Value::Null),
                attempt: c.attempts.max(1) as u32,
                credits_to_charge: c.pick.cost,
            })
            .collect())
    }

    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> Result<()> {
        let rows = outcomes
            .iter()
            .map(|(t, o)| {
                let row = match o {
                    Outcome::Completed { result, credits } => FinishRow::Completed {
                        response: result.to_string(),
                        credits: *credits,
                    },
                    Outcome::Retry { run_after_ms } => FinishRow::Retry {
                        run_after_ms: *run_after_ms,
                    },
                    Outcome::Failed { error } => FinishRow::Failed {
                        response: error.to_string(),
                    },
                };
                let key = Attempt {
                    seq: t.seq,
                    org: t.org,
                    attempt: t.attempt,
                    cost: t.credits_to_charge,
                };
                (key, row)
            })
            .collect();
        self.send(|reply| Cmd::Finish {
            outcomes: rows,
            reply,
        })
        .await
    }

    async fn purge(&self, cutoff_ms: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self
                .send(|reply| Cmd::Purge {
                    cutoff: cutoff_ms,
                    reply,
                })
                .await?;
            total += n;
            if n < 20_000 {
                break;
            }
        }
        {
            // Their deliveries went with them (one transaction per batch, above).
            lock(&self.shared.hooks).purge(cutoff_ms);
        }
        // Every task that finished before the cutoff is gone: so are whole segments before it.
        let dir = self.log_dir.clone();
        let removed =
            tokio::task::spawn_blocking(move || result_log::remove_before(&dir, cutoff_ms))
                .await
                .map_err(|e| Error::Other(e.to_string()))?
                .map_err(|e| Error::Other(format!("cannot remove old result segments: {e}")))?;
        if removed > 0 {
            tracing::info!(segments = removed, "Removed expired result segments");
        }
        Ok(total)
    }

    async fn renew_cycles(&self, now_ms: i64) -> Result<u64> {
        let rows = self.send(|reply| Cmd::Renew { now: now_ms, reply }).await?;
        let mut orgs = lock(&self.orgs);
        for (org, _, resets) in &rows {
            if let Some(o) = orgs.get_mut(org) {
                o.cycle_resets_ms = Some(*resets);
            }
        }
        Ok(rows.len() as u64)
    }

    fn next_retry_ms(&self) -> Option<i64> {
        lock(&self.shared.ready).earliest_timer()
    }

    fn work_notify(&self) -> &Notify {
        &self.shared.notify
    }

    async fn totals(&self) -> Result<(u64, u64)> {
        Ok(lock(&self.shared.ready).totals())
    }

    fn close(&self) {
        SqliteStore::close(self);
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn claim_webhooks(&self, max: usize, _lease_ms: i64) -> Result<Vec<WebhookJob>> {
        // One process owns the file: in-flight state lives in memory; a crash makes it due again.
        let now = now_ms();
        let taken = lock(&self.shared.hooks).take_due(now, max);
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        // The task id and the URL come from the task rows (a reader, not the writer).
        let seqs: Vec<i64> = taken.iter().map(|t| t.0).collect();
        let rows = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(concat!(
                    "SELECT id, ",
                    webhook_url_of_task!(),
                    " FROM tasks WHERE seq = ?1"
                ))?;
                let mut rows = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    let row: Option<(Vec<u8>, Option<String>)> = stmt
                        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    rows.push(row);
                }
                Ok(rows)
            })
            .await;
        let mut hooks = lock(&self.shared.hooks);
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // Not claimed after all: due again at once.
                for (seq, _, _) in &taken {
                    if let Some(h) = hooks.pending.get_mut(seq) {
                        h.in_flight = false;
                        hooks.due.insert((now, *seq));
                    }
                }
                return Err(e);
            }
        };
        let mut jobs = Vec::with_capacity(taken.len());
        for ((seq, org, attempt), row) in taken.into_iter().zip(rows) {
            match row {
                Some((id, Some(url))) => jobs.push(WebhookJob {
                    seq,
                    org,
                    task_id: Uuid::from_slice(&id).unwrap_or_default(),
                    url,
                    attempt,
                }),
                // The task was purged meanwhile: its delivery went with it.
                _ => {
                    hooks.pending.remove(&seq);
                }
            }
        }
        Ok(jobs)
    }

    async fn record_webhook(&self, job: &WebhookJob, result: WebhookResult) -> Result<()> {
        let (attempt, result) = match result {
            WebhookResult::Deferred { delay_ms } => {
                (job.attempt - 1, WebhookResult::Retry { delay_ms })
            }
            other => (job.attempt, other),
        };
        self.send(|reply| Cmd::Webhook {
            seq: job.seq,
            claimed: job.attempt,
            attempt,
            result,
            reply,
        })
        .await
    }

    fn webhook_notify(&self) -> &Notify {
        &self.shared.hook_notify
    }

    fn next_webhook_ms(&self) -> Option<i64> {
        lock(&self.shared.hooks).next_due()
    }

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        self.read(move |c| {
            c.prepare_cached("SELECT webhook_secret FROM orgs WHERE id = ?1")?
                .query_row([org], |r| r.get(0))
                .optional()
                .map(Option::flatten)
                .map_err(Error::from)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        if lock(&self.tx).is_none() {
            return Err(Error::Unavailable("store is shut down".into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(Error::from))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(created_ms: i64) -> PendingHook {
        PendingHook {
            org: 1,
            attempts: 0,
            in_flight: false,
            created_ms,
        }
    }

    #[test]
    fn the_hook_index_hands_out_fresh_and_retried_deliveries_earliest_first_and_once() {
        let mut idx = HookIndex::default();
        idx.fresh.push_back((1, hook(100)));
        idx.fresh.push_back((2, hook(300)));
        // Seq 3 failed once and is due again at 200.
        idx.add(
            3,
            200,
            PendingHook {
                attempts: 1,
                ..hook(50)
            },
        );
        assert_eq!(idx.next_due(), Some(100));
        assert_eq!(idx.take_due(99, 10), vec![], "nothing due yet");
        assert_eq!(
            idx.take_due(1_000, 10),
            vec![(1, 1, 1), (3, 1, 2), (2, 1, 1)],
            "earliest due first, attempt numbers counted"
        );
        assert_eq!(
            idx.take_due(1_000, 10),
            vec![],
            "in flight: not handed out twice"
        );
        assert_eq!(idx.next_due(), None);
        assert!(idx.pending.values().all(|h| h.in_flight));
        // Purge forgets what finished before the cutoff, except what is in flight.
        idx.fresh.push_back((4, hook(150)));
        idx.fresh.push_back((5, hook(400)));
        idx.purge(200);
        assert_eq!(
            idx.fresh.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(idx.pending.len(), 3, "in-flight deliveries stay");
        assert_eq!(idx.take_due(1_000, 1), vec![(5, 1, 1)], "at most max");
    }
}
