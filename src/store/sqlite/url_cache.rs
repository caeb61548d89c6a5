//! Recurring webhook URLs stored once: the writer's memory of which URLs are interned.
//!
//! Most organizations send every task to the same endpoint, and the URL was a large part of a
//! small task's row, so of every page the writer commits (docs/PERFORMANCE.md). A submission
//! therefore stores a task's URL in one of two ways (migration 0005):
//!
//! * the first sighting of a URL (lately) goes into the row itself (`tasks.webhook_url`): a URL
//!   unique to one task costs no extra row;
//! * once it recurs it is interned in `webhook_urls` and rows carry its id (`tasks.webhook_id`).
//!
//! Readers get the URL back with `webhook_url_of_task!()` (see [`super`]). The cache belongs to
//! the writer thread alone (no lock); it forgets its ids when a transaction fails (they may not
//! exist) and when the purge deletes unreferenced URLs.

use std::collections::{HashMap, HashSet};

/// Interns a URL, returning its id whether it was new or already there (`DO UPDATE` rather
/// than `DO NOTHING`, so `RETURNING` answers in both cases). The `url` column is unique, so
/// the conflict is found through its index.
const INTERN_URL: &str = "INSERT INTO webhook_urls(url) VALUES (?1)
                 ON CONFLICT(url) DO UPDATE SET url = excluded.url RETURNING id";

/// Deletes interned URLs no task refers to any more. It reads every task row once (there is no
/// index on `webhook_id`: it would cost every submission), hence at most hourly.
const DELETE_UNUSED_URLS: &str = "DELETE FROM webhook_urls WHERE id NOT IN
                                    (SELECT webhook_id FROM tasks WHERE webhook_id IS NOT NULL)";

/// What the writer knows of `webhook_urls` (see the module docs).
#[derive(Default)]
pub(crate) struct UrlCache {
    /// Interned URLs and their ids (committed, or in the open transaction: cleared when a
    /// transaction fails).
    ids: HashMap<String, i64>,
    /// URLs seen once lately.
    seen: HashSet<String>,
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
    pub(crate) fn store<'u>(
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
            .prepare_cached(INTERN_URL)?
            .query_row([url], |r| r.get(0))?;
        if self.ids.len() >= Self::MAX {
            self.ids.clear();
        }
        self.ids.insert(url.to_owned(), id);
        self.seen.remove(url);
        Ok((None, Some(id)))
    }

    /// Forgets every interned id: the transaction that may have made them was rolled back.
    pub(crate) fn forget_ids(&mut self) {
        self.ids.clear();
    }

    /// Deletes the interned URLs no task uses any more, if the last time was at least
    /// [`Self::GC_EVERY_MS`] before `now` (a purge calls it). The cache then forgets every id:
    /// some may be gone.
    pub(crate) fn collect_garbage(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        now: i64,
    ) -> rusqlite::Result<()> {
        if now - self.last_gc_ms >= Self::GC_EVERY_MS {
            tx.execute(DELETE_UNUSED_URLS, [])?;
            self.ids.clear();
            self.last_gc_ms = now;
        }
        Ok(())
    }
}
