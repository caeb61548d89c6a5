//! The result log: finished tasks' responses, appended to time-segmented files beside the
//! database instead of into it.
//!
//! Responses are the bulk of what the queue writes (kilobytes per task, against a few hundred
//! bytes of task row). In SQLite they would be written twice (WAL, then checkpoint) and split
//! B-tree pages on every insert; here they are appended once, sequentially, with one
//! `write` and one `fdatasync` per group commit. The task row keeps `(segment, offset, length)`.
//!
//! * **Segments** are named by the hour their tasks finished (`<hour>.log`, hours since the
//!   epoch). Retention purges tasks by finish time, so once every task of an hour is purged
//!   the whole file is deleted: no compaction.
//! * **Durability.** The writer appends a group's responses and syncs the file *before* it
//!   commits the transaction that points at them, so a committed row never points at missing
//!   bytes. A crash in between leaves unreferenced bytes at the end of a segment, which are
//!   harmless and go away with the segment. A segment's *name* must be durable too: the first
//!   flush into a new segment file also syncs the results directory, and opening the log syncs
//!   the directory and its parent, so a power loss cannot leave a committed row pointing into
//!   a file whose directory entry never reached the disk.
//! * **A lost result** (a segment missing or cut short all the same: a disk that lied about a
//!   sync, a file removed by hand) is not an error of the store: the reader answers the task
//!   with [`lost_result`] as its response, see `reader.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One segment per hour of finish time.
pub const SEGMENT_SPAN_MS: i64 = 3_600_000;

/// Where a response lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) segment: i64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The appending side, owned by the writer thread.
pub(crate) struct ResultLog {
    dir: PathBuf,
    current: Option<(i64, File, u64)>,
    /// Bytes of the group being built, not yet written.
    pending: Vec<u8>,
    pending_segment: i64,
    pending_start: u64,
    /// A segment file was created since the directory was last synced.
    dir_unsynced: bool,
}

/// The `response` of a finished task whose stored result is missing or unreadable (the
/// shape of a FAILED task's response, `{"error": {code, message}}`; the task keeps its
/// status).
pub(crate) fn lost_result() -> serde_json::Value {
    serde_json::json!({
        "error": {
            "code": LOST_RESULT_CODE,
            "message": "The result of this task was lost: its stored copy on the server is missing or unreadable",
        }
    })
}

/// The error code of [`lost_result`].
pub(crate) const LOST_RESULT_CODE: &str = "RESULT_UNAVAILABLE";

/// Makes the entries of directory `dir` durable (a file created in it).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::DIR_SYNCS.with(|s| s.borrow_mut().push(dir.to_owned()));
    File::open(dir)?.sync_all()
}

/// The directory of the log that belongs to database `db`.
pub fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".results");
    db.with_file_name(name)
}

fn segment_path(dir: &Path, segment: i64) -> PathBuf {
    dir.join(format!("{segment}.log"))
}

impl ResultLog {
    pub(crate) fn open(dir: &Path) -> io::Result<ResultLog> {
        fs::create_dir_all(dir)?;
        // The directory itself may be new: its entry in the parent, then its own entries.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        sync_dir(dir)?;
        Ok(ResultLog {
            dir: dir.to_owned(),
            current: None,
            pending: Vec::new(),
            pending_segment: -1,
            pending_start: 0,
            dir_unsynced: false,
        })
    }

    /// The open file of `segment`, and its length. At the start of a group
    /// (`start_of_group`), a file that was removed under the log (by hand: the purge never
    /// removes the current hour) is reopened, so later responses do not go to an unlinked
    /// file; within a group the file never changes, since offsets were handed out in it.
    fn current(&mut self, segment: i64, start_of_group: bool) -> io::Result<(&mut File, u64)> {
        let reopen = match &self.current {
            Some((s, f, _)) if *s == segment => {
                start_of_group && f.metadata().is_ok_and(|m| m.nlink() == 0)
            }
            _ => true,
        };
        if reopen {
            let path = segment_path(&self.dir, segment);
            let mut options = OpenOptions::new();
            options.append(true).read(true);
            let file = match options.clone().create_new(true).open(&path) {
                Ok(f) => {
                    self.dir_unsynced = true;
                    f
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(&path)?,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            self.current = Some((segment, file, len));
        }
        match self.current.as_mut() {
            Some((_, f, len)) => Ok((f, *len)),
            None => Err(io::Error::other("no current segment")),
        }
    }

    /// Stages `bytes` for the group finishing at `now_ms`; returns where they will be.
    /// Nothing reaches the file until [`flush`](Self::flush).
    pub(crate) fn stage(&mut self, now_ms: i64, bytes: &[u8]) -> io::Result<Location> {
        let segment = now_ms.div_euclid(SEGMENT_SPAN_MS);
        if self.pending.is_empty() {
            let (_, len) = self.current(segment, true)?;
            self.pending_segment = segment;
            self.pending_start = len;
        } else if segment != self.pending_segment {
            return Err(io::Error::other("a group spans two segments"));
        }
        let offset = self.pending_start + self.pending.len() as u64;
        self.pending.extend_from_slice(bytes);
        Ok(Location {
            segment,
            offset,
            len: u32::try_from(bytes.len()).map_err(|_| io::Error::other("response too large"))?,
        })
    }

    /// Writes and syncs the staged bytes (call before committing the rows that point at them).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let segment = self.pending_segment;
        let pending = std::mem::take(&mut self.pending);
        let result = (|| {
            let start = self.pending_start;
            let (file, len) = self.current(segment, false)?;
            if len != start {
                return Err(io::Error::other("the segment changed under the group"));
            }
            file.write_all(&pending)?;
            file.sync_data()?;
            if self.dir_unsynced {
                sync_dir(&self.dir)?;
                self.dir_unsynced = false;
            }
            Ok(())
        })();
        match (&result, self.current.as_mut()) {
            (Ok(()), Some((_, _, len))) => *len += pending.len() as u64,
            _ => self.current = None, // re-read the length on the next use
        }
        self.pending = pending;
        self.pending.clear();
        result
    }

    /// Takes back the bytes staged last at `at` (their row was not updated after all).
    pub(crate) fn unstage(&mut self, at: Location) {
        if at.segment == self.pending_segment && at.offset >= self.pending_start {
            let keep = (at.offset - self.pending_start) as usize;
            if keep + at.len as usize == self.pending.len() {
                self.pending.truncate(keep);
            }
        }
    }

    /// Forgets staged bytes (their group failed).
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
    }
}

/// Reads one response.
pub(crate) fn read(dir: &Path, at: Location) -> io::Result<Vec<u8>> {
    let file = File::open(segment_path(dir, at.segment))?;
    let mut buf = vec![0; at.len as usize];
    file.read_exact_at(&mut buf, at.offset)?;
    Ok(buf)
}

/// Deletes the segments whose every task finished before `cutoff_ms`; returns how many.
pub(crate) fn remove_before(dir: &Path, cutoff_ms: i64) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(segment) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if (segment + 1) * SEGMENT_SPAN_MS <= cutoff_ms {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    thread_local! {
        /// The directories [`sync_dir`] synced on this thread, in order.
        pub(super) static DIR_SYNCS: std::cell::RefCell<Vec<PathBuf>> = const {
            std::cell::RefCell::new(Vec::new())
        };
    }

    /// Takes the directories synced on this thread so far.
    pub(in crate::store::sqlite) fn dir_syncs() -> Vec<PathBuf> {
        DIR_SYNCS.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    #[test]
    fn the_log_directory_and_each_new_segment_s_entry_are_synced_before_a_flush_returns() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("db.results");
        dir_syncs();
        let mut log = ResultLog::open(&dir).expect("open");
        assert_eq!(dir_syncs(), [root.path().to_owned(), dir.clone()]);
        // A new segment: its name is durable once the flush returns.
        log.stage(10, b"a").expect("stage");
        log.flush().expect("flush");
        assert_eq!(dir_syncs(), std::slice::from_ref(&dir));
        // The same segment again: only its bytes are synced.
        log.stage(20, b"b").expect("stage");
        log.flush().expect("flush");
        assert_eq!(dir_syncs(), Vec::<PathBuf>::new());
        // The next hour's segment is a new file.
        log.stage(SEGMENT_SPAN_MS + 1, b"c").expect("stage");
        log.flush().expect("flush");
        assert_eq!(dir_syncs(), std::slice::from_ref(&dir));
        // A reopened log appending to an existing segment creates no entry.
        let mut log = ResultLog::open(&dir).expect("reopen");
        dir_syncs();
        log.stage(SEGMENT_SPAN_MS + 2, b"d").expect("stage");
        log.flush().expect("flush");
        assert_eq!(dir_syncs(), Vec::<PathBuf>::new());
    }

    #[test]
    fn staged_bytes_are_readable_after_a_flush_at_their_location() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = ResultLog::open(dir.path()).expect("open");
        let a = log.stage(10, b"hello").expect("stage");
        let b = log.stage(10, b"world!").expect("stage");
        log.flush().expect("flush");
        assert_eq!(read(dir.path(), a).expect("read"), b"hello");
        assert_eq!(read(dir.path(), b).expect("read"), b"world!");
        let c = log.stage(20, b"more").expect("stage");
        assert_eq!(c.offset, 11);
        log.flush().expect("flush");
        assert_eq!(read(dir.path(), c).expect("read"), b"more");
    }

    #[test]
    fn a_reopened_log_appends_after_existing_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = ResultLog::open(dir.path()).expect("open");
        log.stage(5, b"abc").expect("stage");
        log.flush().expect("flush");
        // Discarded bytes never reach the file.
        log.stage(5, b"zzz").expect("stage");
        log.discard();
        let mut log = ResultLog::open(dir.path()).expect("reopen");
        let at = log.stage(5, b"def").expect("stage");
        log.flush().expect("flush");
        assert_eq!(at.offset, 3);
        assert_eq!(read(dir.path(), at).expect("read"), b"def");
    }

    #[test]
    fn a_segment_removed_under_the_log_is_made_again_by_the_next_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = ResultLog::open(dir.path()).expect("open");
        log.stage(5, b"old").expect("stage");
        log.flush().expect("flush");
        fs::remove_file(segment_path(dir.path(), 0)).expect("remove");
        dir_syncs();
        let at = log.stage(6, b"new").expect("stage");
        log.flush().expect("flush");
        assert_eq!(at.offset, 0, "a new file");
        assert_eq!(read(dir.path(), at).expect("read"), b"new");
        assert_eq!(dir_syncs(), [dir.path().to_owned()], "its entry is durable");
    }

    #[test]
    fn segments_are_removed_only_when_wholly_before_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = ResultLog::open(dir.path()).expect("open");
        log.stage(0, b"old").expect("stage");
        log.flush().expect("flush");
        let newer = log.stage(SEGMENT_SPAN_MS + 5, b"new").expect("stage");
        log.flush().expect("flush");
        assert_eq!(
            remove_before(dir.path(), SEGMENT_SPAN_MS - 1).expect("rm"),
            0
        );
        assert_eq!(remove_before(dir.path(), SEGMENT_SPAN_MS).expect("rm"), 1);
        assert_eq!(read(dir.path(), newer).expect("read"), b"new");
    }
}
