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
//!   harmless and go away with the segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
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
        Ok(ResultLog {
            dir: dir.to_owned(),
            current: None,
            pending: Vec::new(),
            pending_segment: -1,
            pending_start: 0,
        })
    }

    fn current(&mut self, segment: i64) -> io::Result<(&mut File, u64)> {
        if self.current.as_ref().is_none_or(|(s, _, _)| *s != segment) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(segment_path(&self.dir, segment))?;
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
            let (_, len) = self.current(segment)?;
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
            let (file, _) = self.current(segment)?;
            file.write_all(&pending)?;
            file.sync_data()
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
mod tests {
    use super::*;

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
