//! The store contracts on PostgreSQL ([`TaskQueue`], [`Directory`], [`Outbox`], [`Store`]):
//! each method delegates to the file that owns the operation (see the module docs of
//! [`super`]).

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{
    PgStore, admin, claim, cluster, finisher, lanes, next_due, outbox, reads, submit, sync, upkeep,
};
use crate::domain::apikey::ApiKey;
use crate::domain::types::TaskType;
use crate::store::{
    ClaimedTask, CreatedOrg, Directory, EngineHealthRow, ItemError, KeyRecord, LaneStarts, Lanes,
    NewTask, Org, OrgKey, OrgSpec, Outbox, Outcome, QueueStatus, Result, Store, SubmitError,
    SyncAdmission, SyncDone, SyncSlot, TaskQueue, TaskRecord, WebhookJob, WebhookResult,
};

#[async_trait]
impl TaskQueue for PgStore {
    async fn submit(
        &self,
        org: OrgKey,
        tasks: Vec<NewTask>,
    ) -> Result<std::result::Result<Vec<std::result::Result<TaskRecord, ItemError>>, SubmitError>>
    {
        self.bounded(submit::submit(self, org, tasks)).await
    }

    async fn get_task(&self, org: OrgKey, id: Uuid) -> Result<Option<TaskRecord>> {
        self.bounded(reads::get_task(self, org, id)).await
    }

    async fn status(&self, org: OrgKey) -> Result<QueueStatus> {
        self.bounded(reads::status(self, org)).await
    }

    async fn clear_queue(&self, org: OrgKey) -> Result<u64> {
        self.bounded(submit::clear_queue(self, org)).await
    }

    async fn claim_in(&self, max: usize, lanes: &Lanes) -> Result<Vec<ClaimedTask>> {
        self.bounded(claim::claim(self, max, lanes)).await
    }

    async fn take_lane_starts(
        &self,
        lane: &str,
        want: u32,
        per_minute: u32,
        now_ms: i64,
    ) -> Result<LaneStarts> {
        self.bounded(lanes::take_starts(self, lane, want, per_minute, now_ms))
            .await
    }

    async fn return_lane_starts(&self, lane: &str, n: u32, per_minute: u32) -> Result<()> {
        self.bounded(lanes::return_starts(self, lane, n, per_minute))
            .await
    }

    async fn sync_enter(
        &self,
        org: OrgKey,
        task_type: TaskType,
        cost: i64,
    ) -> Result<SyncAdmission> {
        self.bounded(sync::enter(self, org, task_type, cost)).await
    }

    async fn sync_lane_enter(&self, lanes: &Lanes, task_type: TaskType) -> Result<bool> {
        self.bounded(sync::lane_enter(self, lanes, task_type)).await
    }

    async fn sync_lane_leave(&self, task_type: TaskType) -> Result<()> {
        self.bounded(sync::lane_leave(self, task_type)).await
    }

    async fn sync_leave(&self, slot: &SyncSlot, done: Option<&SyncDone>) -> Result<()> {
        sync::leave(self, slot, done).await
    }

    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> Result<()> {
        finisher::finish(&self.finisher, outcomes).await
    }

    async fn abandoned(&self, task: &ClaimedTask) {
        self.shared
            .running
            .abandoned(task.seq, task.attempt as i32)
            .await
    }

    async fn purge(&self, cutoff_ms: i64) -> Result<u64> {
        upkeep::purge(self, cutoff_ms).await
    }

    async fn renew_cycles(&self, now_ms: i64) -> Result<u64> {
        self.bounded(upkeep::renew_cycles(self, now_ms)).await
    }

    fn next_retry_ms(&self) -> Option<i64> {
        // Work of other nodes (their retries, a lost notification) is found by polling.
        Some(next_due(
            &self.shared.clock,
            &self.shared.retries,
            self.shared.cfg.poll_ms,
        ))
    }

    fn work_notify(&self) -> &Notify {
        &self.shared.notify
    }

    async fn totals(&self) -> Result<(u64, u64)> {
        self.bounded(reads::totals(self)).await
    }

    async fn overview(&self) -> Result<crate::store::Overview> {
        super::overview::overview(self).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}

#[async_trait]
impl Directory for PgStore {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.bounded(reads::find_key(self.live_pool()?, digest))
            .await
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        self.bounded(reads::org(self.live_pool()?, key)).await
    }

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        self.bounded(reads::webhook_secret(self.live_pool()?, org))
            .await
    }

    async fn create_org(&self, spec: &OrgSpec) -> Result<CreatedOrg> {
        self.bounded(admin::create_org(
            self.live_pool()?,
            spec,
            self.shared.clock.now_ms(),
        ))
        .await
    }

    async fn create_key(&self, org_id: &str) -> Result<(String, ApiKey)> {
        self.bounded(admin::create_key(
            self.live_pool()?,
            org_id,
            self.shared.clock.now_ms(),
        ))
        .await
    }

    async fn revoke_key(&self, key_id: &str) -> Result<()> {
        self.bounded(admin::revoke_key(
            self.live_pool()?,
            key_id,
            self.shared.clock.now_ms(),
        ))
        .await
    }

    async fn set_webhook_secret(&self, org_id: &str, secret: Option<&str>) -> Result<()> {
        self.bounded(admin::set_webhook_secret(self.live_pool()?, org_id, secret))
            .await
    }

    async fn count_orgs(&self) -> Result<i64> {
        self.bounded(admin::count_orgs(self.live_pool()?)).await
    }

    async fn record_engine_health(
        &self,
        name: &str,
        health: &str,
        message: Option<&str>,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        let node = Some(self.shared.node.to_string());
        let row = (name, health, message);
        self.bounded(admin::record_engine_health(
            self.live_pool()?,
            row,
            since_ms,
            now_ms,
            node,
        ))
        .await
    }

    async fn engine_health(&self) -> Result<Vec<EngineHealthRow>> {
        self.bounded(admin::engine_health(self.live_pool()?)).await
    }

    async fn list_orgs(&self) -> Result<Vec<crate::store::OrgInfo>> {
        self.bounded(admin::list_orgs(self.live_pool()?)).await
    }

    async fn org_info(&self, org_id: &str) -> Result<crate::store::OrgInfo> {
        self.bounded(admin::org_info(self.live_pool()?, org_id))
            .await
    }

    async fn update_org(
        &self,
        org_id: &str,
        update: &crate::store::OrgUpdate,
    ) -> Result<crate::store::OrgInfo> {
        self.bounded(admin::update_org(
            self.live_pool()?,
            org_id,
            update,
            self.shared.clock.now_ms(),
        ))
        .await
    }

    async fn list_keys(&self, org_id: &str) -> Result<Vec<crate::store::KeyInfo>> {
        self.bounded(admin::list_keys(self.live_pool()?, org_id))
            .await
    }

    async fn queues(&self) -> Result<Vec<crate::store::OrgQueue>> {
        self.bounded(admin::queues(self.live_pool()?)).await
    }

    async fn task_of_org(&self, org_id: &str, id: Uuid) -> Result<Option<TaskRecord>> {
        self.bounded(admin::task_of_org(self.live_pool()?, org_id, id))
            .await
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim_webhooks(&self, max: usize, lease_ms: i64) -> Result<Vec<WebhookJob>> {
        self.bounded(outbox::claim_webhooks(self, max, lease_ms))
            .await
    }

    async fn record_webhook(&self, job: &WebhookJob, result: WebhookResult) -> Result<()> {
        self.bounded(outbox::record_webhook(self, job, result))
            .await
    }

    fn webhook_notify(&self) -> &Notify {
        &self.shared.hook_notify
    }

    fn next_webhook_ms(&self) -> Option<i64> {
        // Other nodes' deliveries and taken-over leases are found by polling.
        Some(next_due(
            &self.shared.clock,
            &self.shared.hook_retries,
            self.shared.cfg.poll_ms,
        ))
    }
}

#[async_trait]
impl Store for PgStore {
    fn close(&self) {
        self.shared
            .leave
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
        self.tracker.close();
    }

    async fn closed(&self) {
        self.tracker.wait().await;
        if self.shared.leave.load(std::sync::atomic::Ordering::SeqCst) {
            cluster::leave(&self.shared).await;
        }
        // Idle connections go now, not when the last handle on the store is dropped.
        self.shared.pool.close();
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(reads::ping(self)).await
    }
}
