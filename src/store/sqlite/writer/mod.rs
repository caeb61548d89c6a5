//! The writer thread: every mutation of the embedded store, applied in groups.
//!
//! Every mutation is a [`Cmd`] sent to one dedicated thread that owns the write connection. It
//! takes every command waiting (up to [`MAX_GROUP`]), applies them in ONE transaction
//! (`BEGIN IMMEDIATE` … `COMMIT`), appends and syncs the group's responses to the result log
//! *before* the commit, and only then answers the commands and updates the in-memory indexes
//! ([`after`]): group commit, so many small requests share one fsync and a reply always
//! means "durable". If any statement fails, the whole group is rolled back and every command in
//! it is answered `Unavailable`, with what the store took out of the ready index put back.
//!
//! [`Writer::apply`] only dispatches: each command is a named function in its own file, with
//! its SQL beside it ([`submit`], [`claim`], [`finish`], [`clear`], [`purge`], [`renew`],
//! [`webhook`], [`sync`]). This is the hottest code of the project (docs/PERFORMANCE.md): the command
//! functions run no statement, allocation or lock per task beyond what the operation needs.

pub(crate) mod after;
pub(crate) mod claim;
pub(crate) mod clear;
pub(crate) mod finish;
pub(crate) mod orgs;
pub(crate) mod purge;
pub(crate) mod renew;
pub(crate) mod submit;
pub(crate) mod sync;
pub(crate) mod webhook;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use self::after::{After, FailedReply, unapplied};
use self::claim::RawClaim;
use self::finish::{Attempt, FinishRow};
use self::renew::Renewed;
pub(crate) use self::submit::Queued;
use self::submit::{InsertItem, ItemAnswers};
use self::sync::SyncRow;
use super::error::io_err;
use super::result_log::ResultLog;
use super::url_cache::UrlCache;
use super::{Shared, lock};
use crate::store::sqlite::ready::Pick;
use crate::store::{OrgKey, Result, WebhookResult};

/// Most commands folded into one transaction.
const MAX_GROUP: usize = 512;

/// How a command is answered: once its group committed (or failed).
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A mutation, sent to the writer thread.
pub(crate) enum Cmd {
    Submit {
        org: OrgKey,
        items: Vec<InsertItem>,
        /// Room reserved under the queue limit, released once the group ends.
        reserved: u64,
        reply: Reply<ItemAnswers>,
    },
    Claim {
        picks: Vec<Pick>,
        reply: Reply<Vec<RawClaim>>,
    },
    Finish {
        outcomes: Vec<(Attempt, FinishRow)>,
        reply: Reply<()>,
    },
    /// Clear: the queued tasks taken out of the ready index.
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
    /// Every organization's settings, read again (another process changed them): the ready
    /// index takes the limits and balances of those it knows after the commit.
    ReloadOrgs {
        reply: Reply<Vec<crate::store::Org>>,
    },
    /// A sync call that got its answer ends: its charge, its kept result; its slot and its
    /// reservation (`cost`) are freed once the group ends, committed or not.
    Sync {
        org: OrgKey,
        cost: i64,
        charged: i64,
        keep: Option<SyncRow>,
        reply: Reply<()>,
    },
    /// Claimed webhook attempts `(seq, attempt)`, counted before they are sent.
    ClaimHooks {
        claims: Vec<(i64, u32)>,
        reply: Reply<Vec<bool>>,
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

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// Copies the WAL into the database file beside the writer ([`super::checkpoint`]).
    pub(crate) checkpoint: super::checkpoint::Checkpointer,
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: ResultLog,
    pub(crate) urls: UrlCache,
}

/// What a command may use while its group's transaction is open.
pub(crate) struct Group<'a, 'c> {
    pub(crate) tx: &'a rusqlite::Transaction<'c>,
    /// The group's time: every row the group writes says the same time.
    pub(crate) now: i64,
    /// The database's id key (public task ids).
    pub(crate) ids: crate::domain::task::IdKey,
    pub(crate) log: &'a mut ResultLog,
    pub(crate) urls: &'a mut UrlCache,
    /// The next task sequence number ([`Shared::next_seq`]).
    pub(crate) next_seq: &'a AtomicI64,
    /// Credits charged by the group's commands so far and not yet written: one `UPDATE orgs`
    /// per organization per group instead of one per finished task ([`Group::charge`]).
    pub(crate) charges: Vec<(OrgKey, i64)>,
}

/// Takes charged credits off an organization's balance.
const CHARGE: &str = "UPDATE orgs SET credits = credits - ?2 WHERE id = ?1";

impl Group<'_, '_> {
    /// Charges `amount` to `org` in this group's transaction (written by
    /// [`Group::write_charges`] before anything reads or resets the balance, and before the
    /// commit).
    pub(crate) fn charge(&mut self, org: OrgKey, amount: i64) {
        if amount == 0 {
            return;
        }
        match self.charges.iter_mut().find(|(o, _)| *o == org) {
            Some((_, n)) => *n += amount,
            None => self.charges.push((org, amount)),
        }
    }

    /// Writes the pending charges (one statement per organization).
    pub(crate) fn write_charges(&mut self) -> rusqlite::Result<()> {
        if self.charges.is_empty() {
            return Ok(());
        }
        let mut charge = self.tx.prepare_cached(CHARGE)?;
        for (org, amount) in self.charges.drain(..) {
            if amount != 0 {
                charge.execute(rusqlite::params![org, amount])?;
            }
        }
        Ok(())
    }
}

/// The commands the writer has taken from its channel and not applied yet, claims apart.
///
/// A claim goes into the next group ahead of every other waiting command: its tasks were
/// picked from the ready index already, within every limit the committed state allows (a
/// waiting finish only frees more room, a waiting submission is not in the index yet, and
/// what a clear takes out of the index no pick holds), so nothing it does depends on the
/// commands sent before it. Without that, a claim sent while a wave of thousands of finishes
/// waits (a slow engine's calls ending together) waited behind all of them, and every slot they
/// freed stayed empty until the whole wave was written (docs/PERFORMANCE.md, "Many in flight").
#[derive(Default)]
struct Waiting {
    claims: VecDeque<Cmd>,
    others: VecDeque<Cmd>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.others.is_empty()
    }

    fn push(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Claim { .. } => self.claims.push_back(cmd),
            _ => self.others.push_back(cmd),
        }
    }

    /// Up to [`MAX_GROUP`] commands: the waiting claims first, then the others in the order
    /// they were sent.
    fn next_group(&mut self) -> Vec<Cmd> {
        let n = (self.claims.len() + self.others.len()).min(MAX_GROUP);
        let mut group = Vec::with_capacity(n);
        let claims = self.claims.len().min(n);
        group.extend(self.claims.drain(..claims));
        group.extend(self.others.drain(..n - claims));
        group
    }
}

impl Writer {
    /// Applies groups of commands until every sender is gone and every command taken is
    /// applied.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let (mut groups, mut cmds, mut busy) = (0u64, 0u64, Duration::ZERO);
        let mut waiting = Waiting::default();
        loop {
            if waiting.is_empty() {
                match rx.recv() {
                    Ok(c) => waiting.push(c),
                    Err(_) => break,
                }
            }
            while let Ok(c) = rx.try_recv() {
                waiting.push(c);
            }
            let group = waiting.next_group();
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

    /// One transaction for the whole group, then the answers and the in-memory effects.
    fn apply_group(&mut self, mut group: Vec<Cmd>) {
        let now = self.shared.clock.now_ms();
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
            let mut g = Group {
                tx: &tx,
                now,
                ids: self.shared.ids,
                log: &mut self.log,
                urls: &mut self.urls,
                next_seq: &self.shared.next_seq,
                charges: Vec::new(),
            };
            let mut cmds = group.drain(..);
            for cmd in cmds.by_ref() {
                match Self::apply(&mut g, cmd) {
                    Ok(after) => afters.push(after),
                    Err((e, reply)) => {
                        afters.push(After::Failed {
                            reply,
                            error: e.to_string(),
                        });
                        // The whole group fails: every command not applied yet is answered too.
                        afters.extend(cmds.map(unapplied));
                        return Err(e);
                    }
                }
            }
            drop(cmds);
            g.write_charges()?;
            // Responses are durable before the rows that point at them.
            g.log.flush().map_err(io_err)?;
            tx.commit()
        })();
        let mut ready = lock(&self.shared.ready);
        match outcome {
            Ok(()) => {
                self.checkpoint.committed();
                let mut hooks_changed = false;
                {
                    let mut hooks = lock(&self.shared.hooks);
                    for a in &mut afters {
                        hooks_changed |= after::hooks_after_commit(&mut hooks, a);
                    }
                }
                for a in afters {
                    after::after_commit(&mut ready, a);
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
                self.urls.forget_ids();
                let msg = e.to_string();
                tracing::error!(error = %msg, "Store transaction failed");
                for a in afters {
                    after::after_failure(&mut ready, a, &msg);
                }
            }
        }
    }

    /// Applies one command inside the open transaction: what to do once the group commits, or
    /// the statement error (which ends the group) and how to answer the command.
    fn apply(
        g: &mut Group<'_, '_>,
        cmd: Cmd,
    ) -> std::result::Result<After, (rusqlite::Error, FailedReply)> {
        match cmd {
            Cmd::Submit {
                org,
                items,
                reserved,
                reply,
            } => match submit::insert(g, org, items) {
                Ok((results, pushed)) => Ok(After::Submit {
                    org,
                    reserved,
                    pushed,
                    reply,
                    results,
                }),
                Err(e) => Err((e, FailedReply::Submit(reply, org, reserved))),
            },
            Cmd::Claim { picks, reply } => match claim::claim(g, &picks) {
                Ok((claims, hooks)) => Ok(After::Claim {
                    picks,
                    reply,
                    claims,
                    hooks,
                }),
                Err(e) => Err((e, FailedReply::Claim(reply, picks))),
            },
            Cmd::Finish { outcomes, reply } => match finish::finish(g, &outcomes) {
                Ok((effects, hooks)) => Ok(After::Finish {
                    effects,
                    hooks,
                    reply,
                }),
                Err(e) => Err((e, FailedReply::Finish(reply))),
            },
            Cmd::Delete { org, taken, reply } => match clear::delete(g.tx, &taken) {
                Ok(n) => Ok(After::Count {
                    reply,
                    n,
                    restore: None,
                }),
                Err(e) => Err((e, FailedReply::Count(reply, Some((org, taken))))),
            },
            // A renewal resets balances and a reload reads them: the charges before them first.
            Cmd::Renew { now, reply } => {
                match g.write_charges().and_then(|()| renew::renew(g.tx, now)) {
                    Ok(rows) => Ok(After::Renew { rows, reply }),
                    Err(e) => Err((e, FailedReply::Renew(reply))),
                }
            }
            Cmd::ReloadOrgs { reply } => {
                match g.write_charges().and_then(|()| orgs::reload(g.tx)) {
                    Ok(rows) => Ok(After::ReloadOrgs { rows, reply }),
                    Err(e) => Err((e, FailedReply::ReloadOrgs(reply))),
                }
            }
            Cmd::ClaimHooks { claims, reply } => match webhook::claim(g, &claims) {
                Ok(applied) => Ok(After::ClaimHooks { applied, reply }),
                Err(e) => Err((e, FailedReply::ClaimHooks(reply))),
            },
            Cmd::Webhook {
                seq,
                claimed,
                attempt,
                result,
                reply,
            } => match webhook::record(g, seq, claimed, attempt, result) {
                Ok(applied) => Ok(After::Webhook {
                    seq,
                    attempt,
                    result,
                    now: g.now,
                    applied,
                    reply,
                }),
                Err(e) => Err((e, FailedReply::Finish(reply))),
            },
            Cmd::Sync {
                org,
                cost,
                charged,
                keep,
                reply,
            } => match sync::record(g, org, charged, keep.as_ref()) {
                Ok(()) => Ok(After::Sync {
                    org,
                    cost,
                    charged,
                    reply,
                }),
                Err(e) => Err((e, FailedReply::Sync(reply, org, cost))),
            },
            Cmd::Purge { cutoff, reply } => match purge::purge(g, cutoff) {
                Ok(n) => Ok(After::Count {
                    reply,
                    n,
                    restore: None,
                }),
                Err(e) => Err((e, FailedReply::Count(reply, None))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cmd, MAX_GROUP, Waiting};

    fn purge(n: i64) -> Cmd {
        Cmd::Purge {
            cutoff: n,
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    fn claim() -> Cmd {
        Cmd::Claim {
            picks: Vec::new(),
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    /// The group as `C` (a claim) and the purges' numbers.
    fn names(group: &[Cmd]) -> Vec<String> {
        group
            .iter()
            .map(|c| match c {
                Cmd::Claim { .. } => "C".to_string(),
                Cmd::Purge { cutoff, .. } => cutoff.to_string(),
                _ => "?".to_string(),
            })
            .collect()
    }

    #[test]
    fn a_claim_joins_the_next_group_ahead_of_every_command_waiting() {
        let mut w = Waiting::default();
        let n = MAX_GROUP as i64 + 10;
        for i in 0..n {
            w.push(purge(i));
        }
        w.push(claim());
        w.push(purge(n));
        // The claim first, then the others in the order they were sent; nothing is lost.
        let mut expected = vec!["C".to_string()];
        expected.extend((0..=n).map(|i| i.to_string()));
        let first = w.next_group();
        assert_eq!(first.len(), MAX_GROUP);
        let second = w.next_group();
        assert!(w.is_empty());
        assert_eq!([names(&first), names(&second)].concat(), expected);
    }
}
