//! The [`Store`] contract, as the embedded store honours it: what each call reads from the
//! in-memory indexes, which command it sends to the writer, and which point read it runs.
//!
//! One impl block per contract ([`TaskQueue`], [`Directory`], [`Outbox`], [`Store`]). The work is in the modules it calls: [`super::writer`]
//! for every mutation, [`super::reader`] for point reads, [`super::ready`] and
//! [`super::hook_index`] for what needs no I/O.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::Notify;
use uuid::Uuid;

use super::ready::SyncEnter;
use super::writer::Cmd;
use super::writer::finish::{Attempt, FinishRow};
use super::writer::purge::PURGE_BATCH;
use super::writer::submit::InsertItem;
use super::writer::sync::SyncRow;
use super::{SqliteStore, admin, lock, reader, result_log};
use crate::domain::apikey::ApiKey;
use crate::domain::types::TaskType;
use crate::store::lanes::{gcra_return, gcra_take};
use crate::store::{
    ClaimedTask, CreatedOrg, Directory, EngineHealthRow, Error, ItemError, KeyRecord, LaneStarts,
    Lanes, NewTask, Org, OrgKey, OrgSpec, Outbox, Outcome, QueueStatus, Result, Store, SubmitError,
    SyncAdmission, SyncDone, SyncSlot, TaskQueue, TaskRecord, Usage, WebhookJob, WebhookResult,
};

#[async_trait]
impl TaskQueue for SqliteStore {
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
            items = crate::store::screen_submission(tasks, balance, &mut out)
                .into_iter()
                .map(|(index, task)| {
                    let payload = crate::store::json_text(&task.payload);
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
        let seqs = self.shared.ids.seqs_of(org, &id);
        let (log_dir, lost) = (self.log_dir.clone(), self.lost_results.clone());
        self.readers
            .read(move |c| {
                for seq in seqs {
                    if let Some(t) = reader::task(c, &log_dir, &lost, org, id, seq)? {
                        return Ok(Some(t));
                    }
                }
                Ok(None)
            })
            .await
    }

    async fn status(&self, org: OrgKey) -> Result<QueueStatus> {
        let c = lock(&self.shared.ready).counts(org);
        Ok(QueueStatus {
            queued: c.queued,
            processing: c.processing,
            by_priority: c.by_priority,
            concurrency_used: c.processing + c.sync,
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

    async fn claim_in(&self, max: usize, lanes: &Lanes) -> Result<Vec<ClaimedTask>> {
        let picks = {
            let mut ready = lock(&self.shared.ready);
            ready.promote_due(self.shared.clock.now_ms());
            ready.claim_in(max, lanes)
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
                payload: c.payload.into_boxed_str(),
                attempt: c.attempts.max(1) as u32,
                credits_to_charge: c.credits_to_charge,
                reserved: c.pick.cost,
                usage: None,
                row_at: None,
            })
            .collect())
    }

    async fn sync_enter(
        &self,
        org: OrgKey,
        task_type: TaskType,
        cost: i64,
    ) -> Result<SyncAdmission> {
        // An organization created after start-up becomes known to the ready index on first use.
        if !lock(&self.shared.ready).knows(org) {
            self.org(org).await?;
        }
        let decided = lock(&self.shared.ready).sync_enter(org, cost);
        Ok(match decided {
            SyncEnter::Credits => SyncAdmission::InsufficientCredits,
            SyncEnter::Limit { limit, current } => {
                SyncAdmission::ConcurrencyLimit { limit, current }
            }
            SyncEnter::Admitted { limit, current } => {
                let started_ms = self.shared.clock.now_ms();
                let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
                SyncAdmission::Admitted(SyncSlot {
                    id: self
                        .shared
                        .ids
                        .task_id(org, started_ms, seq, rand::random::<u16>()),
                    org,
                    task_type,
                    cost,
                    limit,
                    current,
                    started_ms,
                })
            }
        })
    }

    async fn sync_lane_enter(&self, lanes: &Lanes, task_type: TaskType) -> Result<bool> {
        Ok(lock(&self.shared.ready).sync_lane_enter(lanes, task_type.code() as u8))
    }

    async fn sync_lane_leave(&self, task_type: TaskType) -> Result<()> {
        lock(&self.shared.ready).sync_lane_leave(task_type.code() as u8);
        // A lane place freed: a task of that lane may start now.
        self.shared.notify.notify_one();
        Ok(())
    }

    async fn sync_leave(&self, slot: &SyncSlot, done: Option<&SyncDone>) -> Result<()> {
        let Some(done) = done else {
            // Nothing to record: the slot and the reservation are in memory only.
            lock(&self.shared.ready).sync_leave(slot.org, slot.cost, 0);
            self.shared.notify.notify_one();
            self.shared.changed.send_modify(|g| *g = g.wrapping_add(1));
            return Ok(());
        };
        let keep = match &done.keep {
            None => None,
            Some(rec) if rec.id != slot.id => {
                lock(&self.shared.ready).sync_leave(slot.org, slot.cost, 0);
                self.shared.notify.notify_one();
                self.shared.changed.send_modify(|g| *g = g.wrapping_add(1));
                return Err(Error::Conflict(format!(
                    "a kept sync result must use its slot's id {}, not {}",
                    slot.id, rec.id
                )));
            }
            Some(rec) => Some(SyncRow {
                seq: self.shared.ids.seq_of(slot.org, &slot.id),
                id: *slot.id.as_bytes(),
                task_type: slot.task_type.code(),
                attempts: rec.attempts,
                cost: rec.credits_to_charge,
                payload: crate::store::json_text(&rec.payload),
                response: crate::store::json_text(&rec.result),
                started_ms: slot.started_ms,
            }),
        };
        // The writer frees the slot once its group ended, committed or not, and wakes the
        // dispatcher; if the command never reached it (or it stopped without answering), the
        // slot is freed here.
        let (reply, rx) = tokio::sync::oneshot::channel();
        let cmd = Cmd::Sync {
            org: slot.org,
            cost: slot.cost,
            charged: done.credits,
            keep,
            reply,
        };
        let sent = match lock(&self.tx).as_ref() {
            Some(tx) => tx.send(cmd).is_ok(),
            None => false,
        };
        let answer = if sent { rx.await.ok() } else { None };
        match answer {
            Some(result) => result,
            None => {
                lock(&self.shared.ready).sync_leave(slot.org, slot.cost, 0);
                self.shared.notify.notify_one();
                Err(Error::Unavailable("store writer stopped".into()))
            }
        }
    }

    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> Result<()> {
        let rows = outcomes
            .iter()
            .map(|(t, o)| {
                let row = match o {
                    Outcome::Completed { result, credits } => FinishRow::Completed {
                        response: result.clone(),
                        credits: *credits,
                    },
                    Outcome::Retry { run_after_ms } => FinishRow::Retry {
                        run_after_ms: *run_after_ms,
                    },
                    Outcome::Failed { error } => FinishRow::Failed {
                        response: crate::store::json_text(error).into(),
                    },
                    Outcome::Requeue => FinishRow::Requeue,
                };
                let key = Attempt {
                    seq: t.seq,
                    org: t.org,
                    kind: t.task_type.code() as u8,
                    attempt: t.attempt,
                    cost: t.reserved,
                    usage: t.usage.and_then(Usage::nonempty).map(Usage::to_json),
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

    async fn take_lane_starts(
        &self,
        lane: &str,
        want: u32,
        per_minute: u32,
        now_ms: i64,
    ) -> Result<LaneStarts> {
        let mut rates = lock(&self.shared.lane_rates);
        let tat = rates.entry(lane.to_owned()).or_insert(0);
        let g = gcra_take(*tat, now_ms, want, per_minute);
        *tat = g.tat_ms;
        Ok(LaneStarts {
            granted: g.granted,
            next_ms: g.next_ms,
        })
    }

    async fn return_lane_starts(&self, lane: &str, n: u32, per_minute: u32) -> Result<()> {
        if n > 0 {
            let mut rates = lock(&self.shared.lane_rates);
            if let Some(tat) = rates.get_mut(lane) {
                *tat = gcra_return(*tat, n, per_minute);
            }
        }
        Ok(())
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
            if n < PURGE_BATCH {
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
                .map_err(|e| Error::Other(crate::store::Cause::new(e.to_string(), e)))?
                .map_err(|e| {
                    Error::Other(crate::store::Cause::new(
                        format!("cannot remove old result segments: {e}"),
                        e,
                    ))
                })?;
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

    async fn overview(&self) -> Result<crate::store::Overview> {
        // Every organization, idle ones included (as in the cluster store): the ready index
        // knows those with a task queued or running since start-up; the others have none.
        let keys = self.readers.read(reader::org_keys).await?;
        let webhook_backlog = lock(&self.shared.hooks).len() as u64;
        let ready = lock(&self.shared.ready);
        let orgs = keys
            .into_iter()
            .map(|(org, org_id, concurrency)| {
                let known = ready.knows(org);
                let c = ready.counts(org);
                crate::store::OrgOverview {
                    org,
                    org_id,
                    status: QueueStatus {
                        queued: c.queued,
                        processing: c.processing,
                        by_priority: c.by_priority,
                        concurrency_used: c.processing + c.sync,
                        concurrency_max: if known {
                            u64::from(c.concurrency)
                        } else {
                            u64::from(concurrency)
                        },
                    },
                }
            })
            .collect();
        drop(ready);
        Ok(crate::store::Overview {
            orgs,
            webhook_backlog,
        })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}

#[async_trait]
impl Directory for SqliteStore {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.readers
            .read(move |c| reader::find_key(c, &digest))
            .await
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        let cached = lock(&self.orgs).get(&key).cloned();
        let mut org = match cached {
            Some(o) => o,
            None => {
                let o = self.readers.read(move |c| admin::read_org(c, key)).await?;
                self.ensure_loaded(&o);
                lock(&self.orgs).insert(key, o.clone());
                o
            }
        };
        org.credits = lock(&self.shared.ready).credits(key);
        Ok(org)
    }

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        self.readers
            .read(move |c| reader::webhook_secret(c, org))
            .await
    }

    async fn create_org(&self, spec: &OrgSpec) -> Result<CreatedOrg> {
        let spec = spec.clone();
        self.admin_write(move |c, now| admin::create_org(c, &spec, now))
            .await
    }

    async fn create_key(&self, org_id: &str) -> Result<(String, ApiKey)> {
        let org_id = org_id.to_owned();
        self.admin_write(move |c, now| admin::create_key(c, &org_id, now))
            .await
    }

    async fn revoke_key(&self, key_id: &str) -> Result<()> {
        let key_id = key_id.to_owned();
        self.admin_write(move |c, now| admin::revoke_key(c, &key_id, now))
            .await
    }

    async fn set_webhook_secret(&self, org_id: &str, secret: Option<&str>) -> Result<()> {
        let (org_id, secret) = (org_id.to_owned(), secret.map(str::to_owned));
        self.admin_write(move |c, _| admin::set_webhook_secret(c, &org_id, secret.as_deref()))
            .await
    }

    async fn count_orgs(&self) -> Result<i64> {
        self.readers.read(admin::count_orgs).await
    }

    async fn record_engine_health(
        &self,
        name: &str,
        health: &str,
        message: Option<&str>,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        let (name, health) = (name.to_owned(), health.to_owned());
        let message = message.map(str::to_owned);
        self.admin_write(move |c, _| {
            admin::record_engine_health(c, &name, &health, message.as_deref(), since_ms, now_ms)
        })
        .await
    }

    async fn engine_health(&self) -> Result<Vec<EngineHealthRow>> {
        self.readers.read(admin::engine_health).await
    }

    async fn list_orgs(&self) -> Result<Vec<crate::store::OrgInfo>> {
        self.readers.read(admin::list_orgs).await
    }

    async fn org_info(&self, org_id: &str) -> Result<crate::store::OrgInfo> {
        let org_id = org_id.to_owned();
        self.readers
            .read(move |c| admin::org_info(c, &org_id))
            .await
    }

    async fn update_org(
        &self,
        org_id: &str,
        update: &crate::store::OrgUpdate,
    ) -> Result<crate::store::OrgInfo> {
        // Applied to this store's memory by its organizations' watch, like the CLI's.
        let (org_id, update) = (org_id.to_owned(), update.clone());
        self.admin_write(move |c, now| admin::update_org(c, &org_id, &update, now))
            .await
    }

    async fn list_keys(&self, org_id: &str) -> Result<Vec<crate::store::KeyInfo>> {
        let org_id = org_id.to_owned();
        self.readers
            .read(move |c| admin::list_keys(c, &org_id))
            .await
    }

    async fn queues(&self) -> Result<Vec<crate::store::OrgQueue>> {
        self.readers.read(admin::queues).await
    }

    async fn task_of_org(&self, org_id: &str, id: Uuid) -> Result<Option<TaskRecord>> {
        let org_id = org_id.to_owned();
        let org = self
            .readers
            .read(move |c| admin::org_key(c, &org_id))
            .await?;
        self.get_task(org, id).await
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim_webhooks(&self, max: usize, _lease_ms: i64) -> Result<Vec<WebhookJob>> {
        // One process owns the file: which deliveries are in flight lives in memory; the count of
        // attempts is written before they are sent (see `writer::webhook`), so an attempt a crash
        // interrupts still counts.
        let now = self.shared.clock.now_ms();
        let taken = lock(&self.shared.hooks).take_due(now, max);
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        // Not claimed after all (the store failed): due again at once, not counted.
        let put_back = |seqs: &mut dyn Iterator<Item = i64>| {
            let mut hooks = lock(&self.shared.hooks);
            for seq in seqs {
                if let Some(h) = hooks.pending.get_mut(&seq) {
                    h.in_flight = false;
                    hooks.due.insert((now, seq));
                }
            }
        };
        // The task id and the URL come from the task rows (a reader, not the writer).
        let seqs: Vec<i64> = taken.iter().map(|t| t.0).collect();
        let rows = match self
            .readers
            .read(move |c| reader::webhook_targets(c, seqs))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                put_back(&mut taken.iter().map(|t| t.0));
                return Err(e);
            }
        };
        let mut jobs = Vec::with_capacity(taken.len());
        {
            let mut hooks = lock(&self.shared.hooks);
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
        }
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let claims: Vec<(i64, u32)> = jobs.iter().map(|j| (j.seq, j.attempt)).collect();
        let applied = match self.send(|reply| Cmd::ClaimHooks { claims, reply }).await {
            Ok(applied) => applied,
            Err(e) => {
                put_back(&mut jobs.iter().map(|j| j.seq));
                return Err(e);
            }
        };
        let mut hooks = lock(&self.shared.hooks);
        let mut applied = applied.into_iter();
        jobs.retain(|j| {
            // A row that did not change was purged since it was read.
            let kept = applied.next().unwrap_or(false);
            if !kept {
                hooks.pending.remove(&j.seq);
            }
            kept
        });
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
}

#[async_trait]
impl Store for SqliteStore {
    fn close(&self) {
        SqliteStore::close(self);
    }

    async fn ping(&self) -> Result<()> {
        if lock(&self.tx).is_none() {
            return Err(Error::Unavailable("store is shut down".into()));
        }
        self.readers.read(reader::ping).await
    }
}

impl SqliteStore {
    /// Runs an administrative write on a connection of its own, off the runtime's threads,
    /// as the CLI would (see [`admin`]): directory writes are rare and bypass the writer.
    async fn admin_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection, i64) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        let now = self.shared.clock.now_ms();
        tokio::task::spawn_blocking(move || f(&super::schema::open_admin(&path)?, now))
            .await
            .map_err(|e| {
                Error::Other(crate::store::Cause::new(
                    format!("an administrative write stopped: {e}"),
                    e,
                ))
            })?
    }
}
