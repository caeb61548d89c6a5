//! Readers: point reads beside the writer, on a small pool of read-only connections.
//!
//! Reads that must see committed rows (a task with its response, an API key, an
//! organization, a webhook's target and secret) do not go through the writer thread: WAL lets
//! read-only connections run beside it. They run on Tokio's blocking pool, since SQLite calls
//! block; the pool keeps [`READERS`] connections and opens another when all are busy.
//!
//! Each statement reads by a key with an index (the primary key, `api_keys.hash`), never a
//! scan; a task's response is read from the result log at the location its row holds. A
//! response that is not there any more (a segment missing or cut short) is reported once and
//! answered as [`result_log::lost_result`], not as an error: the row is fine, and failing the
//! read would fail every poll of the task and every attempt of its webhook, forever.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::lock;
use super::result_log::{self, Location};
use super::schema;
use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
use crate::store::{Error, KeyRecord, OrgKey, Result, TaskRecord};

/// Read-only connections kept open.
const READERS: usize = 4;

/// An API key by its digest (`api_keys.hash` is unique, so indexed), with its organization's
/// rate limit in the same read (the key's organization always exists; `LEFT JOIN` all the
/// same, so a key is never hidden by a join).
const FIND_KEY: &str = "SELECT k.key_id, k.org, k.hash, k.revoked_ms, o.rate_limit
                 FROM api_keys k LEFT JOIN orgs o ON o.id = k.org WHERE k.hash = ?1";

/// A task by its sequence number (the primary key; the public id encodes it, see
/// [`crate::domain::task::IdKey`]), in the column order [`decode_record`] reads; the URL may
/// be interned (`webhook_url_of_task!`).
const READ_TASK: &str = concat!(
    "SELECT id, org, task_type, status, priority, created_ms, started_ms, finished_ms, attempts,
                            idem_key, ",
    webhook_url_of_task!(),
    ", res_seg, credits_to_charge, credits_charged, res_off, res_len, wh_delivered_ms, usage
                     FROM tasks WHERE seq = ?1"
);

/// A webhook delivery's target: the task's id and its URL (in the row or interned), by
/// primary key; read when the delivery is claimed, so the in-memory index keeps neither.
const WEBHOOK_TARGET: &str = concat!(
    "SELECT id, ",
    webhook_url_of_task!(),
    " FROM tasks WHERE seq = ?1"
);

/// An organization's webhook signing secret, read at delivery time (the CLI may change it
/// while the server runs).
const WEBHOOK_SECRET: &str = "SELECT webhook_secret FROM orgs WHERE id = ?1";

/// Whether a reader can reach the database.
const PING: &str = "SELECT 1";

/// Every organization's key, public id and concurrency limit (the metrics' list of
/// organizations, idle ones included).
const ORG_KEYS: &str = "SELECT id, public_id, concurrency FROM orgs ORDER BY id";

/// The pool of read-only connections.
pub(crate) struct Readers {
    pool: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl Readers {
    /// Opens the pool's connections to the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Readers> {
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(schema::open(path, true)?);
        }
        Ok(Readers {
            pool: Arc::new(Mutex::new(readers)),
            path: path.to_owned(),
        })
    }

    /// Runs `f` on a reader connection, on the blocking thread pool.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.pool.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = lock(&readers).pop();
            let conn = match conn {
                Some(c) => c,
                None => schema::open(&path, true)?,
            };
            let out = f(&conn);
            let mut pool = lock(&readers);
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| {
            Error::Other(crate::store::Cause::new(
                format!("reader task failed: {e}"),
                e,
            ))
        })?
    }
}

/// Resolves an API key digest.
pub(crate) fn find_key(c: &Connection, digest: &[u8; 32]) -> Result<Option<KeyRecord>> {
    c.query_row(FIND_KEY, [&digest[..]], |r| {
        Ok(KeyRecord {
            key_id: r.get(0)?,
            org: r.get(1)?,
            digest: r.get(2)?,
            revoked: r.get::<_, Option<i64>>(3)?.is_some(),
            rate_limit: r.get(4)?,
        })
    })
    .optional()
    .map_err(Error::from)
}

/// A task row: its stored id, its organization, the record, and where its response is.
type TaskRow = (Vec<u8>, OrgKey, TaskRecord, Option<Location>);

/// Decodes a row of [`READ_TASK`].
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
            usage: crate::store::Usage::from_json(r.get::<_, Option<String>>(17)?.as_deref()),
        },
        at,
    ))
}

/// The task with sequence number `seq`, if it belongs to `org` and its stored id is `id` (a
/// guessed id that decodes to an existing sequence number finds nothing), with its response
/// (or, if that is lost, [`result_log::lost_result`]; see [`LostResults`]).
pub(crate) fn task(
    c: &Connection,
    log_dir: &Path,
    lost_results: &LostResults,
    org: OrgKey,
    id: Uuid,
    seq: i64,
) -> Result<Option<TaskRecord>> {
    let row = c
        .prepare_cached(READ_TASK)?
        .query_row([seq], decode_record)
        .optional()?;
    let Some((stored, owner, mut rec, at)) = row else {
        return Ok(None);
    };
    if owner != org || !crate::domain::apikey::constant_time_eq(&stored, id.as_bytes()) {
        return Ok(None);
    }
    if let Some(at) = at {
        let lost = |why: String| {
            if lost_results.first_report(seq) {
                tracing::error!(
                    task = %id,
                    segment = at.segment,
                    offset = at.offset,
                    len = at.len,
                    error = %why,
                    "The stored result of a finished task is lost; it is answered with an error"
                );
            }
            result_log::lost_result()
        };
        rec.response = Some(match result_log::read(log_dir, at) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => lost(format!("corrupt response: {e}")),
            },
            Err(e) if read_may_succeed_later(&e) => {
                return Err(Error::Unavailable(crate::store::Cause::new(
                    format!("cannot read the response of task {id} now: {e}"),
                    e,
                )));
            }
            Err(e) => lost(e.to_string()),
        });
    }
    Ok(Some(rec))
}

/// Whether a failed read of a result may succeed if tried again (the process is short of
/// file descriptors or memory): anything else (the segment is missing, shorter than the row
/// says, or the disk cannot read it) will fail the same way every time.
fn read_may_succeed_later(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::OutOfMemory
    ) || matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

/// Tasks whose lost result was logged already: each is logged once per process (a client
/// polling it, or its webhook, would repeat the line forever), up to [`LOST_REPORTED`]
/// tasks; beyond that, at debug level.
#[derive(Default)]
pub(crate) struct LostResults(Mutex<HashSet<i64>>);

/// Most tasks [`LostResults`] remembers.
const LOST_REPORTED: usize = 10_000;

impl LostResults {
    /// Whether the lost result of task `seq` is reported for the first time.
    fn first_report(&self, seq: i64) -> bool {
        let mut seen = lock(&self.0);
        if seen.len() >= LOST_REPORTED {
            tracing::debug!(seq, "Another lost result");
            return false;
        }
        seen.insert(seq)
    }
}

/// A claimed delivery's target: `(stored task id, URL)`; `None` if the task is gone.
pub(crate) type WebhookTarget = Option<(Vec<u8>, Option<String>)>;

/// The targets of claimed deliveries, in the order of `seqs`.
pub(crate) fn webhook_targets(c: &Connection, seqs: Vec<i64>) -> Result<Vec<WebhookTarget>> {
    let mut stmt = c.prepare_cached(WEBHOOK_TARGET)?;
    let mut rows = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let row: WebhookTarget = stmt
            .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        rows.push(row);
    }
    Ok(rows)
}

/// An organization's webhook signing secret, if it has one.
pub(crate) fn webhook_secret(c: &Connection, org: OrgKey) -> Result<Option<String>> {
    c.prepare_cached(WEBHOOK_SECRET)?
        .query_row([org], |r| r.get(0))
        .optional()
        .map(Option::flatten)
        .map_err(Error::from)
}

/// Every organization: `(key, public id, concurrency)`, by key.
pub(crate) fn org_keys(c: &Connection) -> Result<Vec<(OrgKey, String, u32)>> {
    let mut stmt = c.prepare_cached(ORG_KEYS)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Answers while a reader can reach the database.
pub(crate) fn ping(c: &Connection) -> Result<()> {
    c.query_row(PING, [], |_| Ok(())).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_result_is_reported_once_per_task_and_the_memory_is_bounded() {
        let lost = LostResults::default();
        assert!(lost.first_report(1));
        assert!(!lost.first_report(1), "once");
        assert!(lost.first_report(2));
        for seq in 3..(LOST_REPORTED as i64 + 10) {
            lost.first_report(seq);
        }
        assert_eq!(lock(&lost.0).len(), LOST_REPORTED);
    }

    #[test]
    fn only_a_shortage_of_descriptors_or_memory_makes_a_failed_read_worth_retrying() {
        use std::io::{Error, ErrorKind};
        assert!(read_may_succeed_later(&Error::from_raw_os_error(24)));
        assert!(read_may_succeed_later(&Error::from(ErrorKind::Interrupted)));
        assert!(!read_may_succeed_later(&Error::from(ErrorKind::NotFound)));
        assert!(!read_may_succeed_later(&Error::from(
            ErrorKind::UnexpectedEof
        )));
        assert!(!read_may_succeed_later(&Error::from_raw_os_error(5)), "EIO");
    }
}
