//! What happens once a group committed, or failed: the answers, and the in-memory effects.
//!
//! The in-memory indexes change only after the rows are durable: a committed command updates
//! the webhook due index ([`hooks_after_commit`], under its lock) and the ready index
//! ([`after_commit`], under the ready lock, which the writer holds once for the whole group).
//! A failed group changes no row, so what the store took out of the ready index for its
//! commands (picks, cleared tasks, queue-limit reservations) goes back ([`after_failure`]).

use super::claim::RawClaim;
use super::finish::{Back, FinishEffect};
use super::renew::Renewed;
use super::submit::{ItemAnswers, Queued};
use super::{Cmd, Reply};
use crate::store::sqlite::hook_index::{HookIndex, NewHooks};
use crate::store::sqlite::ready::{Pick, ReadySet};
use crate::store::{Error, OrgKey, WebhookResult};

/// Queued tasks taken out of an organization's index, to put back if the delete fails.
pub(crate) type Taken = Option<(OrgKey, Vec<Queued>)>;

/// What to do once a group committed (or failed to).
pub(crate) enum After {
    Submit {
        org: OrgKey,
        reserved: u64,
        pushed: Vec<Queued>,
        reply: Reply<ItemAnswers>,
        results: ItemAnswers,
    },
    Claim {
        picks: Vec<Pick>,
        reply: Reply<Vec<RawClaim>>,
        claims: Vec<RawClaim>,
        /// Deliveries of tasks failed at pickup (credits).
        hooks: NewHooks,
    },
    Finish {
        effects: Vec<FinishEffect>,
        /// Deliveries written with the terminal statuses: `(seq, hook)`.
        hooks: NewHooks,
        reply: Reply<()>,
    },
    /// Webhook attempts counted at their claim: which rows changed.
    ClaimHooks {
        applied: Vec<bool>,
        reply: Reply<Vec<bool>>,
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
    ReloadOrgs {
        rows: Vec<crate::store::Org>,
        reply: Reply<Vec<crate::store::Org>>,
    },
    /// A sync call ended: free its slot and reservation, take its charge off the balance.
    Sync {
        org: OrgKey,
        cost: i64,
        charged: i64,
        reply: Reply<()>,
    },
    Failed {
        reply: FailedReply,
        error: String,
    },
}

/// How to answer a command that failed (the one whose statement failed, or one that was never
/// applied), with what to put back in the ready index.
pub(crate) enum FailedReply {
    Submit(Reply<ItemAnswers>, OrgKey, u64),
    Claim(Reply<Vec<RawClaim>>, Vec<Pick>),
    Finish(Reply<()>),
    ClaimHooks(Reply<Vec<bool>>),
    Count(Reply<u64>, Taken),
    Renew(Reply<Vec<Renewed>>),
    ReloadOrgs(Reply<Vec<crate::store::Org>>),
    /// A sync call's end: nothing was charged, but its slot and reservation (`cost`) are freed.
    Sync(Reply<()>, OrgKey, i64),
}

/// Updates the webhook due index for a committed command; true if it changed.
pub(crate) fn hooks_after_commit(hooks: &mut HookIndex, a: &mut After) -> bool {
    match a {
        After::Finish { hooks: new, .. } | After::Claim { hooks: new, .. } if !new.is_empty() => {
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

/// Applies a committed command to the ready index and answers it.
pub(crate) fn after_commit(ready: &mut ReadySet, a: After) {
    match a {
        After::Submit {
            org,
            reserved,
            pushed,
            reply,
            results,
        } => {
            ready.release_submission(org, reserved);
            for (seq, prio, cost, kind) in pushed {
                ready.push(org, seq, prio, cost, kind);
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
            // A running pick whose row was not QUEUED any more frees its slot again. The claims
            // are a subsequence of the picks, in their order (`claim::claim` walks the picks),
            // so one walk over both finds them (a claim of 20,000 picks must not compare every
            // pick with every claim).
            let mut claimed = claims.iter().map(|c| c.pick.seq).peekable();
            for p in picks.iter().filter(|p| p.run) {
                if claimed.next_if_eq(&p.seq).is_none() {
                    ready.finish(p.org, p.kind, p.cost, 0);
                }
            }
            let _ = reply.send(Ok(claims));
        }
        After::Webhook { reply, .. } => {
            let _ = reply.send(Ok(()));
        }
        After::ClaimHooks { applied, reply } => {
            let _ = reply.send(Ok(applied));
        }
        After::Finish { effects, reply, .. } => {
            for FinishEffect {
                org,
                kind,
                cost,
                charged,
                back,
            } in effects
            {
                ready.finish(org, kind, cost, charged);
                match back {
                    Some(Back::Retry { seq, prio, due }) => {
                        ready.push_delayed(org, seq, prio, cost, kind, due);
                    }
                    Some(Back::Requeue { seq, prio }) => ready.push(org, seq, prio, cost, kind),
                    None => {}
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
        After::ReloadOrgs { rows, reply } => {
            for o in &rows {
                if ready.knows(o.key) {
                    ready.set_org(
                        o.key,
                        crate::store::sqlite::ready::OrgLimits {
                            concurrency: o.concurrency,
                            queue_limit: o.queue_limit,
                            credits: o.credits,
                        },
                    );
                }
            }
            let _ = reply.send(Ok(rows));
        }
        After::Count { reply, n, .. } => {
            let _ = reply.send(Ok(n));
        }
        After::Sync {
            org,
            cost,
            charged,
            reply,
        } => {
            ready.sync_leave(org, cost, charged);
            let _ = reply.send(Ok(()));
        }
        After::Failed { reply, error } => after_failure(ready, After::Failed { reply, error }, ""),
    }
}

/// Answers a command of a failed group (`msg`: the group's error) and puts back in the ready
/// index what the store took out for it.
pub(crate) fn after_failure(ready: &mut ReadySet, a: After, msg: &str) {
    let err = || Error::Unavailable(msg.into());
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
        After::ReloadOrgs { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        After::ClaimHooks { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        After::Sync {
            org, cost, reply, ..
        } => {
            ready.sync_leave(org, cost, 0);
            let _ = reply.send(Err(err()));
        }
        After::Count { reply, restore, .. } => {
            restore_taken(ready, restore);
            let _ = reply.send(Err(err()));
        }
        After::Failed { reply, error } => {
            let e = Error::Unavailable(
                if msg.is_empty() {
                    error
                } else {
                    msg.to_owned()
                }
                .into(),
            );
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
                FailedReply::ReloadOrgs(r) => {
                    let _ = r.send(Err(e));
                }
                FailedReply::Finish(r) => {
                    let _ = r.send(Err(e));
                }
                FailedReply::ClaimHooks(r) => {
                    let _ = r.send(Err(e));
                }
                FailedReply::Count(r, restore) => {
                    restore_taken(ready, restore);
                    let _ = r.send(Err(e));
                }
                FailedReply::Sync(r, org, cost) => {
                    ready.sync_leave(org, cost, 0);
                    let _ = r.send(Err(e));
                }
            }
        }
    }
}

/// A command that was never applied, answered as failed when its group fails.
pub(crate) fn unapplied(cmd: Cmd) -> After {
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
        Cmd::ReloadOrgs { reply } => FailedReply::ReloadOrgs(reply),
        Cmd::Webhook { reply, .. } => FailedReply::Finish(reply),
        Cmd::ClaimHooks { reply, .. } => FailedReply::ClaimHooks(reply),
        Cmd::Sync {
            org, cost, reply, ..
        } => FailedReply::Sync(reply, org, cost),
    };
    After::Failed { reply, error }
}

/// Puts a failed claim's picks back: their slots freed, the tasks queued again.
fn restore_picks(ready: &mut ReadySet, picks: &[Pick]) {
    ready.settle(picks);
    for p in picks {
        if p.run {
            ready.finish(p.org, p.kind, p.cost, 0);
        }
        ready.push(p.org, p.seq, p.priority, p.cost, p.kind);
    }
}

/// Puts a failed clear's tasks back in the ready index.
fn restore_taken(ready: &mut ReadySet, restore: Taken) {
    if let Some((org, taken)) = restore {
        for (seq, prio, cost, kind) in taken {
            ready.push(org, seq, prio, cost, kind);
        }
    }
}
