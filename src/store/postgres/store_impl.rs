//! The [`Store`] contract on PostgreSQL: one impl block, each method delegating to the file
//! that owns the operation (see the module docs of [`super`]).

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{PgStore, claim, cluster, finisher, next_due, outbox, reads, submit, upkeep};
use crate::store::{
    ClaimedTask, ItemError, KeyRecord, NewTask, Org, OrgKey, Outcome, QueueStatus, Result, Store,
    SubmitError, TaskRecord, WebhookJob, WebhookResult,
};

#[async_trait]
impl Store for PgStore {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        reads::find_key(self, digest).await
    }

    async fn org(&self, key: OrgKey) -> Result<Org> {
        reads::org(self, key).await
    }

    async fn submit(
        &self,
        org: OrgKey,
        tasks: Vec<NewTask>,
    ) -> Result<std::result::Result<Vec<std::result::Result<TaskRecord, ItemError>>, SubmitError>>
    {
        submit::submit(self, org, tasks).await
    }

    async fn get_task(&self, org: OrgKey, id: Uuid) -> Result<Option<TaskRecord>> {
        reads::get_task(self, org, id).await
    }

    async fn status(&self, org: OrgKey) -> Result<QueueStatus> {
        reads::status(self, org).await
    }

    async fn clear_queue(&self, org: OrgKey) -> Result<u64> {
        submit::clear_queue(self, org).await
    }

    async fn claim(&self, max: usize) -> Result<Vec<ClaimedTask>> {
        claim::claim(self, max).await
    }

    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> Result<()> {
        finisher::finish(&self.finisher, outcomes).await
    }

    async fn purge(&self, cutoff_ms: i64) -> Result<u64> {
        upkeep::purge(self, cutoff_ms).await
    }

    async fn renew_cycles(&self, now_ms: i64) -> Result<u64> {
        upkeep::renew_cycles(self, now_ms).await
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
        reads::totals(self).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

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

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn claim_webhooks(&self, max: usize, lease_ms: i64) -> Result<Vec<WebhookJob>> {
        outbox::claim_webhooks(self, max, lease_ms).await
    }

    async fn record_webhook(&self, job: &WebhookJob, result: WebhookResult) -> Result<()> {
        outbox::record_webhook(self, job, result).await
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

    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>> {
        reads::webhook_secret(self, org).await
    }

    async fn ping(&self) -> Result<()> {
        reads::ping(self).await
    }
}
