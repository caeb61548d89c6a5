//! The durable store and the contract every backend honours.
//!
//! A [`Store`] keeps organizations, API keys and tasks, and it is the scheduler's source of
//! truth: [`Store::claim`] is the only way a task becomes PROCESSING, and it enforces, at every
//! instant, these rules:
//!
//! * **Order.** Within an organization, the highest priority first, then the oldest (FIFO by
//!   sequence, which is creation order), always.
//! * **Caps.** An organization never has more PROCESSING tasks than its concurrency limit; a
//!   claim that would exceed it skips that organization.
//! * **Fairness.** Organizations with runnable work are served round-robin, one task per turn,
//!   so one organization's backlog delays another's next task by at most one engine call.
//! * **Lanes.** With [`Lanes`] ([`TaskQueue::claim_in`]), a task whose engine has no room (its
//!   lane's `max_in_flight` tasks PROCESSING, cluster-wide, or the claim's `starts` used) is
//!   skipped without losing its place; the organization is offered its best task of a lane
//!   with room (strict priority among runnable tasks), and fairness is unchanged.
//! * **Credits at pickup.** A task whose cost no longer fits the organization's live balance
//!   (minus what running tasks have reserved) is not run: it is FAILED with
//!   `INSUFFICIENT_CREDITS`, `latencyMs: null`, `creditsCharged: 0`.
//! * **No leaked slot.** [`Store::finish`] is the only way out of PROCESSING and always frees
//!   the slot (after the outcome is durable); a retry puts the task back to QUEUED with a
//!   `run_after` time and no slot; recovery at start-up turns PROCESSING tasks back to QUEUED.
//! * **Durability.** Every mutating call returns only after its transaction committed. A
//!   completion and its credit charge commit in the same transaction.
//!
//! Submission rules (all per organization): the queue limit counts QUEUED tasks including those
//! waiting for a retry, and a batch that would overflow it is refused whole; credits are
//! checked cumulatively within a batch against the live balance; an idempotency key may be
//! used by one task while that task's record exists.

pub mod admin;
pub mod lanes;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
pub use crate::domain::usage::Usage;

pub use lanes::{Lane, LaneStarts, Lanes};

/// A JSON value as the text a store keeps (payloads, results): `serde_json::to_string`, which
/// writes straight into a byte buffer. The same bytes as `Value`'s `Display`, which goes through
/// `fmt::Write` one piece at a time and costs measurably more for results of a few KB.
pub(crate) fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded store: a SQLite file (and its result log beside it).
    Sqlite(std::path::PathBuf),
    /// The cluster store: a PostgreSQL URL.
    Postgres(String),
}

/// Internal organization key (small integer; the public id is a UUID string).
pub type OrgKey = i64;

/// Store errors, classified by kind (the way sqlx's portable error kind does): callers decide
/// what to do by the kind (404, 409, 503 and back off, 500), and each backend maps its own
/// driver's errors into these kinds (`sqlite/error.rs`, `postgres/errors.rs`), keeping the
/// driver's error as the [`Cause`] so a log line or a `source()` chain shows what really failed.
#[derive(Debug)]
pub enum Error {
    NotFound,
    Conflict(String),
    /// The store cannot serve right now (database down or busy, shutting down): retry later.
    Unavailable(Cause),
    Other(Cause),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found"),
            Error::Conflict(m) => write!(f, "conflict: {m}"),
            Error::Unavailable(c) => write!(f, "store unavailable: {c}"),
            Error::Other(c) => write!(f, "store error: {c}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Unavailable(c) | Error::Other(c) => c.source(),
            Error::NotFound | Error::Conflict(_) => None,
        }
    }
}

/// Why a store call failed: a message and, when a driver produced the failure, the driver's
/// own error (its kind, code and position survive, not only its text).
#[derive(Debug)]
pub struct Cause {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// `message`, caused by the driver error `source`.
    pub(crate) fn new(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The driver's error, if a driver produced this failure.
    pub(crate) fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::from(message.to_owned())
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// An organization as the scheduler and the API see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub key: OrgKey,
    pub public_id: String,
    pub(crate) name: String,
    pub(crate) plan: String,
    pub(crate) concurrency: u32,
    pub credits: i64,
    pub(crate) per_cycle: Option<i64>,
    pub cycle_resets_ms: Option<i64>,
    pub(crate) queue_limit: i64,
}

/// Length of a billing cycle.
pub const CYCLE_MS: i64 = 30 * 24 * 3600 * 1000;

/// Settings of a new organization (`cloro org create`).
#[derive(Debug, Clone)]
pub struct OrgSpec {
    pub name: String,
    pub plan: String,
    pub concurrency: Option<u32>,
    pub credits: Option<i64>,
    pub queue_limit: Option<i64>,
    /// Requests/s per API key per endpoint; `None`: the server's default.
    pub rate_limit: Option<u32>,
}

/// What `org create` made.
#[derive(Debug, Clone)]
pub struct CreatedOrg {
    pub org: Org,
    pub key_id: String,
    pub api_key: crate::domain::apikey::ApiKey,
}

impl Org {
    /// A new organization from its spec: the plan's credits and concurrency unless overridden;
    /// paid plans start a billing cycle now. `key` is 0 until the store assigns one.
    pub(crate) fn from_spec(spec: &OrgSpec, now_ms: i64) -> Result<Org> {
        let p = crate::domain::plan::plan(&spec.plan).ok_or_else(|| {
            let names: Vec<&str> = crate::domain::plan::PLANS.iter().map(|p| p.name).collect();
            Error::Conflict(format!(
                "unknown plan {:?}; plans: {}",
                spec.plan,
                names.join(", ")
            ))
        })?;
        let paid = p.name != "free";
        Ok(Org {
            key: 0,
            public_id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            plan: p.name.to_owned(),
            concurrency: spec.concurrency.unwrap_or(p.concurrency),
            credits: spec.credits.unwrap_or(p.credits),
            per_cycle: paid.then_some(p.credits),
            cycle_resets_ms: paid.then_some(now_ms + CYCLE_MS),
            queue_limit: spec
                .queue_limit
                .unwrap_or(crate::domain::plan::DEFAULT_QUEUE_LIMIT),
        })
    }
}

/// A fresh API key id.
pub(crate) fn new_key_id() -> String {
    format!("key_{}", Uuid::new_v4().simple())
}

/// What an API key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub(crate) key_id: String,
    pub org: OrgKey,
    pub(crate) digest: Vec<u8>,
    pub(crate) revoked: bool,
    /// The organization's rate limit (`orgs.rate_limit`), if set.
    pub(crate) rate_limit: Option<u32>,
}

/// An engine's last recorded health (`engine_health`, issue 10): what the servers running it
/// last saw, for `cloro engines list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHealthRow {
    /// The engine's name in the engines file.
    pub name: String,
    /// `ok`, `rate-limited` or `failing`.
    pub health: String,
    /// What went wrong (the upstream's message, already redacted of keys).
    pub message: Option<String>,
    /// When the engine entered this health (epoch ms).
    pub since_ms: i64,
    /// When a server last wrote the row (epoch ms).
    pub updated_ms: i64,
    /// The cluster node that wrote it (`None` on the embedded store).
    pub node: Option<String>,
}

/// A validated task to insert.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub task_type: TaskType,
    pub payload: Value,
    pub priority: u8,
    pub idempotency_key: Option<String>,
    pub webhook_url: Option<String>,
    pub credits_to_charge: i64,
}

/// Why one item of a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError {
    DuplicateKey(String),
    InsufficientCredits,
}

/// Why a whole submission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    QueueLimit(i64),
}

/// One answer per submitted item, filled in as the submission is decided.
pub(crate) type ItemResults = Vec<Option<std::result::Result<TaskRecord, ItemError>>>;

/// The submission rules both stores share: within the submission a repeated idempotency key
/// fails (the first one wins), and credits are checked cumulatively in input order against
/// `balance`. Refused items are answered in `out`; the accepted ones come back with their index.
pub(crate) fn screen_submission(
    tasks: Vec<NewTask>,
    balance: i64,
    out: &mut ItemResults,
) -> Vec<(usize, NewTask)> {
    let mut accepted = Vec::with_capacity(tasks.len());
    let mut keys = std::collections::HashSet::new();
    let mut committed = 0i64;
    for (index, task) in tasks.into_iter().enumerate() {
        if let Some(k) = &task.idempotency_key
            && !keys.insert(k.clone())
        {
            out[index] = Some(Err(ItemError::DuplicateKey(k.clone())));
            continue;
        }
        if committed + task.credits_to_charge > balance {
            out[index] = Some(Err(ItemError::InsufficientCredits));
            continue;
        }
        committed += task.credits_to_charge;
        accepted.push((index, task));
    }
    accepted
}

/// An organization as the operator sees it (`cloro org list|show|set`): its settings and its
/// committed balance (SQLite: as last written; PostgreSQL: minus the charges not yet folded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgInfo {
    pub org_id: String,
    pub name: String,
    pub plan: String,
    pub concurrency: u32,
    pub credits: i64,
    pub per_cycle: Option<i64>,
    pub cycle_resets_ms: Option<i64>,
    pub queue_limit: i64,
    /// Requests/s per API key per endpoint; `None`: the server's default.
    pub rate_limit: Option<u32>,
    pub created_ms: i64,
}

/// A change of an organization's settings (`cloro org set`): `None` keeps a setting. A new
/// plan brings its credits and concurrency (and its billing cycle: a paid plan starts one now
/// unless one runs already; `free` has none) unless `credits`/`concurrency` say otherwise, as
/// `org create` does.
#[derive(Debug, Clone, Default)]
pub struct OrgUpdate {
    pub plan: Option<String>,
    pub concurrency: Option<u32>,
    pub credits: Option<i64>,
    pub queue_limit: Option<i64>,
    pub rate_limit: Option<u32>,
    /// Back to the server's `--rate-limit` (the organization's own limit removed).
    pub clear_rate_limit: bool,
}

impl OrgUpdate {
    /// The settings `cur` has after this update at `now_ms` (`Conflict` for an unknown plan).
    pub(crate) fn apply(&self, cur: &OrgInfo, now_ms: i64) -> Result<OrgInfo> {
        let mut next = cur.clone();
        if let Some(name) = &self.plan {
            let p = crate::domain::plan::plan(name).ok_or_else(|| {
                let names: Vec<&str> = crate::domain::plan::PLANS.iter().map(|p| p.name).collect();
                Error::Conflict(format!(
                    "unknown plan {name:?}; plans: {}",
                    names.join(", ")
                ))
            })?;
            let paid = p.name != "free";
            next.plan = p.name.to_owned();
            next.concurrency = p.concurrency;
            next.credits = p.credits;
            next.per_cycle = paid.then_some(p.credits);
            next.cycle_resets_ms = if paid {
                cur.cycle_resets_ms
                    .filter(|_| cur.per_cycle.is_some())
                    .or(Some(now_ms + CYCLE_MS))
            } else {
                None
            };
        }
        if let Some(c) = self.concurrency {
            next.concurrency = c;
        }
        if let Some(c) = self.credits {
            next.credits = c;
        }
        if let Some(q) = self.queue_limit {
            next.queue_limit = q;
        }
        if let Some(r) = self.rate_limit {
            next.rate_limit = Some(r);
        }
        if self.clear_rate_limit {
            next.rate_limit = None;
        }
        Ok(next)
    }

    /// Whether the update sets the balance (explicitly, or through a new plan).
    pub(crate) fn sets_credits(&self) -> bool {
        self.credits.is_some() || self.plan.is_some()
    }
}

/// An API key as `cloro key list` shows it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// One organization's queue numbers as the database holds them (`cloro status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgQueue {
    pub org_id: String,
    pub name: String,
    /// `(priority, queued count)`, priority descending, only non-zero levels.
    pub by_priority: Vec<(u8, u64)>,
    pub queued: u64,
    /// PROCESSING tasks.
    pub processing: u64,
    pub concurrency: u32,
    pub queue_limit: i64,
}

/// A task's public record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: Uuid,
    pub(crate) task_type: TaskType,
    pub status: TaskStatus,
    pub(crate) priority: u8,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub(crate) attempts: u32,
    pub(crate) idempotency_key: Option<String>,
    pub webhook_url: Option<String>,
    pub(crate) credits_to_charge: i64,
    pub credits_charged: Option<i64>,
    /// The result (COMPLETED) or `{"error": ...}` (FAILED).
    pub response: Option<Value>,
    /// When a receiver acknowledged the task's webhook (2xx), if it has.
    pub webhook_delivered_ms: Option<i64>,
    /// The upstream usage summed over the attempts that reported one (`None`: none did, as
    /// on the simulator).
    pub usage: Option<Usage>,
}

impl TaskRecord {
    /// `latencyMs`: first pickup to final outcome; null until terminal or if never started.
    pub fn latency_ms(&self) -> Option<i64> {
        match (self.status.is_terminal(), self.started_ms, self.finished_ms) {
            (true, Some(s), Some(f)) => Some((f - s).max(0)),
            _ => None,
        }
    }
}

/// A task handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub(crate) seq: i64,
    pub id: Uuid,
    pub org: OrgKey,
    pub(crate) task_type: TaskType,
    /// The stored payload (its normalised JSON text), read typed by the runner
    /// ([`Payload::from_stored_text`](crate::domain::request::payload::Payload::from_stored_text)).
    pub(crate) payload: Box<str>,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub(crate) credits_to_charge: i64,
    /// Credits reserved for this attempt at pickup: its price plus the most its engine may add
    /// after the run (`Payload::max_add_ons`), so the charge always fits what the balance held
    /// for it. The finish releases it and charges the actual cost.
    pub(crate) reserved: i64,
    /// What this attempt used upstream: `None` when claimed; the runner sets it once the
    /// engine answered (an answer's usage, or what a failed run was billed), and
    /// [`TaskQueue::finish`] adds it to the task's `usage`, in the transaction that records
    /// the outcome (whatever the outcome: completed, retried, failed or requeued).
    pub usage: Option<Usage>,
    /// Where the store found the task's row when it started it, to find it again without an
    /// index lookup (PostgreSQL: the row version's `ctid`; `None` elsewhere).
    pub(crate) row_at: Option<Box<str>>,
}

impl ClaimedTask {
    /// The task's type (which engine, hence which lane, runs it).
    pub fn task_type(&self) -> TaskType {
        self.task_type
    }

    /// Replaces what the claim remembered of the task's row ([`ClaimedTask::row_at`]), so a
    /// test can show that a finish still finds its own task (and only it) when that is stale.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_row_at(&mut self, at: Option<&str>) {
        self.row_at = at.map(Into::into);
    }

    /// See [`ClaimedTask::set_row_at`].
    #[cfg(any(test, feature = "testing"))]
    pub fn row_at(&self) -> Option<&str> {
        self.row_at.as_deref()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed {
        /// The result's JSON text: serialized once, when the engine call ends, so that an
        /// outcome waiting to be recorded holds its text only (not the `Value` tree too), and
        /// shared with the store's write instead of copied (docs/PERFORMANCE.md, "Many in
        /// flight").
        result: std::sync::Arc<str>,
        credits: i64,
    },
    /// Back to QUEUED, runnable again at `run_after_ms`; holds no slot meanwhile.
    Retry {
        run_after_ms: i64,
    },
    Failed {
        error: Value,
    },
    /// The attempt did not count (the upstream said 429, or its engine is paused): back to
    /// QUEUED at the task's own place (same seq: the head of its priority again), runnable at
    /// once, `attempts` one less, its slot freed, nothing charged. `started_ms` is kept, unless
    /// no attempt is left counted (then it is NULL again, so `latencyMs` counts from the first
    /// attempt that did count).
    Requeue,
}

/// Most attempts of one webhook delivery (reference §3).
pub(crate) const WEBHOOK_MAX_ATTEMPTS: u32 = 5;

/// A webhook delivery claimed by this node: send it, then [`Store::record_webhook`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookJob {
    /// The task's sequence number (the delivery's key).
    pub(crate) seq: i64,
    pub org: OrgKey,
    pub task_id: Uuid,
    pub url: String,
    /// 1-based number of this attempt. Above [`WEBHOOK_MAX_ATTEMPTS`] (a node died during the
    /// last attempt) the delivery is not sent again: record it as given up.
    pub attempt: u32,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// A 2xx answer: `deliveredAt` is now.
    Delivered,
    /// Try again after `delay_ms`.
    Retry { delay_ms: i64 },
    /// No further attempt.
    GaveUp,
    /// Not attempted after all (its destination was busy): due again after `delay_ms`, and
    /// the claim's attempt is not counted.
    Deferred { delay_ms: i64 },
}

/// A sync call's hold on one of its organization's concurrency slots (`POST /v1/monitor/*`,
/// issue 11), from [`TaskQueue::sync_enter`] until [`TaskQueue::sync_leave`]. The slot is
/// shared with PROCESSING tasks: sync calls in flight plus PROCESSING tasks never exceed the
/// organization's limit, cluster-wide, and a claim counts the calls as running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSlot {
    /// The public id a kept result is stored under ([`SyncRecord::id`] must be this id): both
    /// stores derive task ids from a sequence number they draw themselves (see
    /// `domain::task::task_id`), so the id is handed out at admission, before the caller builds
    /// a result whose page URLs contain it. Drawn for every admitted call, kept or not.
    pub id: Uuid,
    pub org: OrgKey,
    pub task_type: TaskType,
    /// Credits reserved for the call until it leaves: its price, the sync surcharge included,
    /// plus the most its engine may add after the run (AI Mode products).
    pub cost: i64,
    /// The organization's concurrency limit when the call was admitted.
    pub limit: u32,
    /// Slots in use when the call was admitted, the call itself included.
    pub current: u32,
    /// When the slot was taken (store clock, epoch ms).
    pub started_ms: i64,
}

/// What [`TaskQueue::sync_enter`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAdmission {
    Admitted(SyncSlot),
    /// The balance minus what running tasks and calls have reserved is below the cost.
    InsufficientCredits,
    /// Every slot is taken: `current` counts the slots in use plus this refused call.
    ConcurrencyLimit {
        limit: u32,
        current: u32,
    },
}

/// How a sync call that got its answer is recorded by [`TaskQueue::sync_leave`]: its charge and,
/// when the result must be kept (it links to result pages, `include.html`), a COMPLETED task
/// row holding it, so the pages can be served and expire with the retention like any task's.
#[derive(Debug, Clone)]
pub struct SyncDone {
    /// Credits charged (the price, plus what the engine added: AI Mode products).
    pub credits: i64,
    pub keep: Option<SyncRecord>,
}

/// The COMPLETED task row of a kept sync result (priority 1, no webhook, no idempotency key).
#[derive(Debug, Clone)]
pub struct SyncRecord {
    /// Must be [`SyncSlot::id`] of the call's slot; [`TaskQueue::sync_leave`] refuses any
    /// other id (`Error::Conflict`, nothing charged, the slot freed) rather than store a row
    /// the result's page URLs would not find.
    pub id: Uuid,
    /// The normalised payload in its stored form.
    pub payload: Value,
    pub result: Value,
    /// Attempts made (1..=5).
    pub attempts: u32,
    /// The call's price, the sync surcharge included (the row's `creditsToCharge`; the slot
    /// reserved more when the engine may add credits after the run).
    pub credits_to_charge: i64,
}

/// `GET /v1/async/status` numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    pub queued: u64,
    /// PROCESSING tasks only (`processingTasks`): sync calls in flight are not tasks.
    pub processing: u64,
    /// `(priority, queued count)`, priority descending, only non-zero levels.
    pub(crate) by_priority: Vec<(u8, u64)>,
    /// PROCESSING tasks plus sync calls in flight (`concurrency.used`).
    pub concurrency_used: u64,
    pub(crate) concurrency_max: u64,
}

/// One organization's queue ([`TaskQueue::overview`]).
#[derive(Debug, Clone)]
pub struct OrgOverview {
    pub org: OrgKey,
    /// Its public id (`org_…`).
    pub org_id: String,
    pub status: QueueStatus,
}

/// The queue at a glance ([`TaskQueue::overview`]).
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Organizations with tasks queued or running, or known to this node (SQLite) / every
    /// organization (PostgreSQL), by key.
    pub orgs: Vec<OrgOverview>,
    /// Webhook deliveries not yet delivered or given up.
    pub webhook_backlog: u64,
}

/// The task queue: submissions, reads of tasks and counts, the scheduler's claim and finish,
/// and the upkeep (purge, billing cycles). The rules of the module docs are this contract's.
#[async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    /// Inserts tasks atomically as one submission. Items are answered in input order.
    async fn submit(
        &self,
        org: OrgKey,
        tasks: Vec<NewTask>,
    ) -> Result<std::result::Result<Vec<std::result::Result<TaskRecord, ItemError>>, SubmitError>>;
    async fn get_task(&self, org: OrgKey, id: Uuid) -> Result<Option<TaskRecord>>;
    async fn status(&self, org: OrgKey) -> Result<QueueStatus>;
    /// Deletes every QUEUED task (waiting for a retry included) of the organization.
    async fn clear_queue(&self, org: OrgKey) -> Result<u64>;
    /// Claims up to `max` tasks fairly (see the module docs), with no lane limits.
    async fn claim(&self, max: usize) -> Result<Vec<ClaimedTask>> {
        self.claim_in(max, &Lanes::default()).await
    }
    /// Claims up to `max` tasks fairly within the lanes' room (see [`Lanes`]): a task whose
    /// lane has no room is skipped without losing its place, and its organization is offered
    /// its best task of a lane with room.
    async fn claim_in(&self, max: usize, lanes: &Lanes) -> Result<Vec<ClaimedTask>>;
    /// Takes up to `want` start tokens of lane `lane` (`per_minute` starts a minute, GCRA, see
    /// [`lanes::gcra_take`]), cluster-wide: how many were granted and, if fewer than `want`,
    /// when the next one will be.
    async fn take_lane_starts(
        &self,
        lane: &str,
        want: u32,
        per_minute: u32,
        now_ms: i64,
    ) -> Result<LaneStarts>;
    /// Gives back `n` granted starts that were not used (right after the claim they were
    /// taken for).
    async fn return_lane_starts(&self, lane: &str, n: u32, per_minute: u32) -> Result<()>;
    /// Admits a sync call of `task_type` costing `cost` credits for organization `org`: checks
    /// the balance (minus every reservation, and on the cluster store minus the charges not
    /// yet folded) first, then takes one of its concurrency slots at once, never waiting for
    /// one (`ConcurrencyLimit` when every slot is in use). The slot and the reservation live
    /// until [`TaskQueue::sync_leave`] (in cluster mode also until this node's lease runs out:
    /// a dead node's slots come back with its lease). Nothing is written durably for a call
    /// that is only admitted. Every later claim counts the call as a running task, so the
    /// dispatcher starts fewer tasks while calls hold slots; `status()` counts it in
    /// `concurrency_used` but not in `processing`, and `totals()` not at all (tasks only).
    async fn sync_enter(
        &self,
        org: OrgKey,
        task_type: TaskType,
        cost: i64,
    ) -> Result<SyncAdmission>;
    /// Takes a place for an attempt of a sync call of `task_type` in its lane of `lanes`: the
    /// lane's `max_in_flight` counts PROCESSING tasks of the lane's types plus the sync
    /// attempts in flight, cluster-wide, and claims count these places too (`starts` is
    /// ignored: the caller takes rate tokens). `false`: no room now (nothing taken). A type
    /// without a capped lane always has room; its place is counted all the same, so every
    /// `true` must be matched by exactly one [`TaskQueue::sync_lane_leave`].
    async fn sync_lane_enter(&self, lanes: &Lanes, task_type: TaskType) -> Result<bool>;
    /// Gives back a place taken by [`TaskQueue::sync_lane_enter`] (it returned `true`).
    async fn sync_lane_leave(&self, task_type: TaskType) -> Result<()>;
    /// Ends a sync call, exactly once: frees its slot and its reservation; with `done`, first
    /// charges `done.credits` (and keeps the record as a COMPLETED task, see [`SyncRecord`])
    /// durably, in one transaction, so a reply means the charge is on disk. On an error
    /// nothing was charged or kept, and the slot is freed all the same (the call must not
    /// call this again). Wakes the dispatcher (a slot freed).
    async fn sync_leave(&self, slot: &SyncSlot, done: Option<&SyncDone>) -> Result<()>;
    /// Records how attempts ended and frees their slots; each attempt's
    /// [`ClaimedTask::usage`] is added to its task's sum in the same transaction.
    async fn finish(&self, outcomes: &[(&ClaimedTask, &Outcome)]) -> Result<()>;
    /// Returns once this node may no longer run `task`'s attempt: a cluster node whose lease is
    /// no longer provably current, or that was found reaped, gives its attempts up, since
    /// another node may run them (fencing). The dispatcher then stops the attempt and records
    /// nothing; the task comes back to the queue on its own. Never, by default.
    async fn abandoned(&self, task: &ClaimedTask) {
        let _ = task;
        std::future::pending::<()>().await
    }
    /// Deletes terminal tasks that finished before `cutoff_ms`; returns how many.
    async fn purge(&self, cutoff_ms: i64) -> Result<u64>;
    /// Starts a new billing cycle for every paid organization whose cycle ended by `now_ms`:
    /// the balance becomes the plan's credits again (no rollover). Returns how many.
    async fn renew_cycles(&self, now_ms: i64) -> Result<u64>;
    /// Earliest time a task waiting for a retry becomes runnable.
    fn next_retry_ms(&self) -> Option<i64>;
    /// Notified whenever new work may be claimable (submission, freed slot, retry due).
    fn work_notify(&self) -> &tokio::sync::Notify;
    /// `(queued, processing)` over every organization.
    async fn totals(&self) -> Result<(u64, u64)>;
    /// Every organization's queue and the webhook backlog, for the operator's metrics (read
    /// at each scrape: one statement on PostgreSQL, memory on SQLite).
    async fn overview(&self) -> Result<Overview>;
    /// Changes after every committed state change.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The directory: organizations, their API keys and webhook signing secrets, reads and the
/// administrative writes (`cloro org create`, `key create`, `key revoke`, `org webhook-secret`,
/// the `default` organization at start-up). The writes go straight to the database, so they
/// work while servers run on it, and servers see new organizations and keys at once. A full
/// [`Store`] is a directory; so is the lighter handle of [`admin::open`], which the CLI uses
/// without starting a scheduler.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Resolves an API key digest (not cached here).
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>>;
    /// Loads an organization (a full store also makes it known to its scheduler).
    async fn org(&self, org: OrgKey) -> Result<Org>;
    /// The organization's signing secret (`whsec_...`), read at delivery time.
    async fn webhook_secret(&self, org: OrgKey) -> Result<Option<String>>;
    /// Creates an organization (from its plan, with explicit overrides) and its first key.
    async fn create_org(&self, spec: &OrgSpec) -> Result<CreatedOrg>;
    /// A new API key for the organization with public id `org_id`: `(key id, key)`.
    async fn create_key(&self, org_id: &str) -> Result<(String, crate::domain::apikey::ApiKey)>;
    /// Revokes a key (revoking it again keeps the first revocation time).
    async fn revoke_key(&self, key_id: &str) -> Result<()>;
    /// Sets (or, with `None`, removes) an organization's webhook signing secret; running
    /// servers read it at delivery time.
    async fn set_webhook_secret(&self, org_id: &str, secret: Option<&str>) -> Result<()>;
    /// How many organizations exist.
    async fn count_orgs(&self) -> Result<i64>;
    /// Records an engine's health (`ok`, `rate-limited`, `failing`) as of `now_ms`, in the
    /// state since `since_ms`: one row per engine name, the latest writer wins (in cluster mode
    /// the row names the node that wrote it). `message` must already be free of keys.
    async fn record_engine_health(
        &self,
        name: &str,
        health: &str,
        message: Option<&str>,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<()>;
    /// Every engine's recorded health, by name.
    async fn engine_health(&self) -> Result<Vec<EngineHealthRow>>;
    /// Every organization, oldest first (`cloro org list`).
    async fn list_orgs(&self) -> Result<Vec<OrgInfo>>;
    /// The organization with public id `org_id` (`NotFound` if none).
    async fn org_info(&self, org_id: &str) -> Result<OrgInfo>;
    /// Changes the settings of organization `org_id` in one transaction and returns them
    /// (`NotFound`, or `Conflict` for an unknown plan). Running servers apply it at once
    /// (PostgreSQL: every claim reads the row; SQLite: the server polls a change counter the
    /// update bumps, see `sqlite::orgs_watch`). A concurrency below the tasks running only
    /// stops new starts. The balance set is the live one: on PostgreSQL the charges not yet
    /// folded are accounted for; running tasks' reservations still hold.
    async fn update_org(&self, org_id: &str, update: &OrgUpdate) -> Result<OrgInfo>;
    /// The API keys of organization `org_id`, oldest first (`NotFound` if no such org).
    async fn list_keys(&self, org_id: &str) -> Result<Vec<KeyInfo>>;
    /// Every organization's queued and running tasks and limits, read from the database.
    async fn queues(&self) -> Result<Vec<OrgQueue>>;
    /// Task `id` of organization `org_id`, read only (`cloro task get`): `NotFound` if there is
    /// no such organization, `None` if it has no such task.
    async fn task_of_org(&self, org_id: &str, id: Uuid) -> Result<Option<TaskRecord>>;
}

/// The webhook outbox. A terminal finish of a task with a webhook URL makes its delivery
/// pending in the same transaction (SQLite: in the task's own row; PostgreSQL: a delivery row);
/// purge removes deliveries with their tasks.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims up to `max` deliveries that are due, oldest due first. A claimed delivery is
    /// not handed out again until it is recorded (or, in cluster mode, its lease ran out
    /// because its node died: `lease_ms`, longer than a delivery may take); its attempt
    /// number counts this attempt, durably before this returns, so an attempt a crash
    /// interrupts is never handed out again under the same number.
    async fn claim_webhooks(&self, max: usize, lease_ms: i64) -> Result<Vec<WebhookJob>>;
    /// Records how a claimed attempt ended. A record for an attempt that no longer holds the
    /// delivery (taken over after a lease) changes nothing.
    async fn record_webhook(&self, job: &WebhookJob, result: WebhookResult) -> Result<()>;
    /// Notified when a delivery may have become due (a new one committed, a retry scheduled).
    fn webhook_notify(&self) -> &tokio::sync::Notify;
    /// Earliest due time this node knows of (None: nothing known; poll).
    fn next_webhook_ms(&self) -> Option<i64>;
}

/// A whole store: the three contracts above over one database, and its lifecycle. Components
/// take the part they use (`Arc<dyn Store>` coerces to `Arc<dyn TaskQueue>` and the others).
#[async_trait]
pub trait Store: TaskQueue + Directory + Outbox {
    /// Stops background work and releases the database (shutdown, tests).
    fn close(&self);
    /// Waits until the background work stopped by [`Store::close`] has ended (a cluster node
    /// has left the cluster).
    async fn closed(&self) {}
    /// Answers while the store can serve requests.
    async fn ping(&self) -> Result<()>;
}
