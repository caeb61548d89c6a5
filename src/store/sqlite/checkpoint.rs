//! The checkpointer: copies the write-ahead log back into the database file on a thread of
//! its own, beside the writer instead of inside its commits.
//!
//! SQLite's automatic checkpoint runs in the committing connection: with it, every ~1,000
//! pages of WAL one of the writer's commits also copied those pages into the database file and
//! synced it, about a fifth of the writer thread's time when thousands of outcomes were
//! written at once (docs/PERFORMANCE.md, "Many in flight"). So the writer's connection has
//! `wal_autocheckpoint` off and nudges this thread after each commit; the thread runs a
//! `PASSIVE` checkpoint (it never waits for the writer or for readers) at most every
//! [`MIN_INTERVAL`], on its own connection, so the copy runs on the other core while the writer
//! goes on. Durability does not change: a commit is durable once its WAL frames are synced,
//! before any checkpoint.
//!
//! A passive checkpoint cannot finish while commits keep arriving, and SQLite only starts the
//! WAL over once one has. So when the WAL has grown past [`RESTART_FRAMES`] the thread runs a
//! `RESTART` checkpoint instead, which waits for the writer's current transaction and for readers
//! (at most [`RESTART_WAIT`]; the writer's busy timeout covers the short wait it gets in return)
//! and lets the next commit write the WAL from its start again: the WAL stays bounded under any
//! load.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::Result;

/// Shortest time between two checkpoints: under a steady stream of small commits, one
/// checkpoint covers many of them.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// WAL size (frames of one page) past which the checkpoint waits for the writer so that the
/// WAL starts over: 16,384 pages of 4 KiB, 64 MiB.
pub(crate) const RESTART_FRAMES: i64 = 16_384;

/// Longest a checkpoint waits for the writer's transaction or for readers.
pub(crate) const RESTART_WAIT: Duration = Duration::from_millis(200);

/// The handle the writer keeps: nudges the thread; dropping it stops the thread (after one
/// last checkpoint).
pub(crate) struct Checkpointer {
    nudge: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns the automatic checkpoint off on `writer` (the connection that commits) and
    /// starts the checkpoint thread on a connection of its own to `path`.
    pub(crate) fn start(path: &Path, writer: &Connection) -> Result<Checkpointer> {
        let conn = super::schema::open(path, false)?;
        // A restarting checkpoint holds the writer off while it waits for readers: it gives up
        // after this long rather than stall the writer (and tries again past the next commit).
        conn.busy_timeout(RESTART_WAIT)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (nudge, nudged) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("cloro-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &nudged))
            .map_err(|e| {
                crate::store::Error::Other(crate::store::Cause::new(
                    format!("cannot start the checkpoint thread: {e}"),
                    e,
                ))
            })?;
        Ok(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// Says that a commit added to the WAL (never blocks: one nudge waiting is enough).
    pub(crate) fn committed(&self) {
        if let Some(nudge) = &self.nudge {
            let _ = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checkpoints after each nudge, at most every [`MIN_INTERVAL`], until the writer is gone.
fn run(conn: &Connection, nudged: &mpsc::Receiver<()>) {
    let mut last: Option<Instant> = None;
    while nudged.recv().is_ok() {
        if let Some(wait) = last.and_then(|l| MIN_INTERVAL.checked_sub(l.elapsed())) {
            std::thread::sleep(wait);
        }
        // The nudges that arrived meanwhile are covered by this checkpoint.
        while nudged.try_recv().is_ok() {}
        last = Some(Instant::now());
        checkpoint(conn);
    }
    checkpoint(conn);
}

/// One passive checkpoint; a restarting one when the WAL has grown past [`RESTART_FRAMES`].
fn checkpoint(conn: &Connection) {
    match wal_checkpoint(conn, "PASSIVE") {
        Ok((_, frames, _)) if frames > RESTART_FRAMES => {
            if let Err(error) = wal_checkpoint(conn, "RESTART") {
                tracing::warn!(%error, frames, "Cannot restart the store's write-ahead log");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "Cannot checkpoint the store's write-ahead log"),
    }
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames checkpointed).
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames in the WAL of `conn`'s database (a passive checkpoint that copies what it can).
    fn wal_frames(conn: &Connection) -> i64 {
        wal_checkpoint(conn, "PASSIVE").expect("checkpoint").1
    }

    #[test]
    fn commits_leave_the_checkpoint_to_the_thread_which_keeps_the_wal_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let writer = super::super::schema::open(&path, false).expect("open");
        writer
            .execute_batch("CREATE TABLE t (x BLOB)")
            .expect("create");
        let ckpt = Checkpointer::start(&path, &writer).expect("start");
        let auto: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .expect("read");
        assert_eq!(auto, 0, "the writer's commits no longer checkpoint");
        // About 1.6 × RESTART_FRAMES pages in 40 commits, the thread nudged after each.
        let blob = vec![7u8; 64 * 1024];
        for _ in 0..40 {
            let tx = writer.unchecked_transaction().expect("begin");
            for _ in 0..40 {
                tx.execute("INSERT INTO t VALUES (?1)", [&blob])
                    .expect("insert");
            }
            tx.commit().expect("commit");
            ckpt.committed();
        }
        drop(ckpt);
        // The thread's last checkpoint ran on the way out, so the next commit writes the WAL
        // from its start again (with no checkpoint, it would hold every page written).
        writer
            .execute("INSERT INTO t VALUES (x'00')", [])
            .expect("insert");
        let frames = wal_frames(&writer);
        assert!(frames <= RESTART_FRAMES, "the WAL holds {frames} frames");
        let n: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1_601);
    }
}
