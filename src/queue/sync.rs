//! Sync calls (`POST /v1/monitor/*`, issue 11): one answer while the client waits, on the same
//! engines, limits and slots as the async tasks.
//!
//! A call, once validated and priced by the handler, runs in this order:
//! 1. **Slot.** [`Store::sync_enter`] checks the balance (403) and takes one of the
//!    organization's concurrency slots at once (429 when none is free; never queued). The slot
//!    is shared with PROCESSING tasks, cluster-wide, so the dispatcher starts fewer async tasks
//!    while calls hold slots. A [`SlotGuard`] owns it from then on: whatever ends the request
//!    (an answer, an error, a panic, the client going away, which drops the handler's future
//!    and with it the attempt in flight) gives the slot back exactly once.
//! 2. **Attempts.** [`SyncRunner::run`] calls the engine that serves the task type (the
//!    engines file's, or the default one), up to [`QueueConfig::max_attempts`] times with the
//!    dispatcher's backoff between failures; no attempt starts once [`SYNC_BUDGET`] (5 minutes)
//!    has passed since the call arrived. Before each attempt it waits, within that budget, for
//!    room on the engine: its health (a rate-limit pause), its `max_in_flight` (a place counted
//!    by the store with the engine's PROCESSING tasks, [`Store::sync_lane_enter`]) and its
//!    `requests_per_minute` (a start token of the same shared budget the dispatcher takes).
//!    While a call waits, this node's dispatcher starts none of the engine's async tasks, so
//!    the call goes first ([`Member::sync_wait`]). An engine whose key was refused (`failing`)
//!    is not waited for: the call is answered 503 with the time of its next probe, unless a
//!    probe is due, in which case the call is the probe.
//! 3. **Charge.** Only an answer is charged: [`Store::sync_leave`] records the charge durably
//!    (and, for a result with page links, the result itself, so its pages can be served), and
//!    only then is the 200 sent. The charge runs on a task of its own, so a client leaving
//!    during it cannot tear it in half.
//!
//! Times: the budget and the waits are on `tokio::time` (tests pause it); rate tokens and
//! health use [`QueueConfig::clock`], like the dispatcher.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::engines::Member;
use super::{EngineRoutes, QueueConfig};
use crate::domain::request::Payload;
use crate::domain::types::TaskType;
use crate::engines::{Engine, EngineError, EngineOutput, EngineTask};
use crate::store::{OrgKey, Store, SyncDone, SyncSlot};
use crate::worker::backoff::Doubling;

/// No attempt of a sync call starts after this long (reference §1.3).
pub(crate) const SYNC_BUDGET: Duration = Duration::from_secs(300);

/// How often a call waiting for room on an engine looks again when nothing woke it (another
/// node's tasks finishing are not seen as local changes).
const LANE_RECHECK: Duration = Duration::from_millis(100);

/// How a sync call ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncFailure {
    /// Every attempt failed.
    MaxRetries,
    /// The budget ran out before an attempt could start.
    Timeout,
    /// The engine failed the call for good (its code and message).
    Fatal { code: String, message: String },
    /// The engine's key is refused; its next probe is in `retry_after_s` seconds.
    EngineFailing {
        engine: String,
        message: String,
        retry_after_s: u32,
    },
    /// The store could not be asked for room on the engine.
    Store(String),
}

/// A sync call's answer.
#[derive(Debug, Clone)]
pub(crate) struct SyncAnswer {
    pub(crate) result: crate::engines::ResultText,
    /// Credits the engine adds to the price (AI Mode products).
    pub(crate) extra_credits: i64,
    /// Attempts made, this one included.
    pub(crate) attempts: u32,
}

/// Runs sync calls: the engines, their routes and the dispatcher's settings.
pub(crate) struct SyncRunner {
    pub(crate) store: Arc<dyn Store>,
    /// Runs the task types the routes do not list.
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) routes: Arc<EngineRoutes>,
    /// The dispatcher's settings: attempts, backoff, the engine's time limit, the sync budget
    /// ([`QueueConfig::sync_budget`]), the clock and the pages' public URL.
    pub(crate) cfg: QueueConfig,
}

impl SyncRunner {
    /// The longest a call may take: its budget, then one last attempt under the engine's time
    /// limit, and the charge. The HTTP edge bounds sync routes by this instead of its own
    /// request timeout.
    pub(crate) fn longest(&self) -> Duration {
        self.cfg.sync_budget + self.cfg.engine_timeout + Duration::from_secs(30)
    }

    /// Runs the call `id` of organization `org` (its slot already taken) until an answer or a
    /// failure. `started` is when the call arrived (the budget counts from there).
    pub(crate) async fn run(
        &self,
        org: OrgKey,
        id: Uuid,
        payload: &Payload,
        started: Instant,
    ) -> Result<SyncAnswer, SyncFailure> {
        let task_type = payload.task_type();
        let member = self.routes.member_of(task_type);
        let engine = member.map_or(&*self.engine, |m| &*m.engine);
        let deadline = started + self.cfg.sync_budget;
        let mut attempts = 0u32;
        loop {
            if Instant::now() >= deadline {
                return Err(SyncFailure::Timeout);
            }
            let place = match member {
                Some(m) => Some(self.room(m, task_type, deadline).await?),
                None => None,
            };
            attempts += 1;
            // A fresh page token per attempt, as for tasks: only the answer's links are kept.
            let pages = crate::pages::PageLinks::new(&self.cfg.public_url, org, id);
            let call = engine.execute(EngineTask {
                id,
                task_type,
                payload,
                attempt: attempts,
                pages: &pages,
            });
            let result = match tokio::time::timeout(self.cfg.engine_timeout, call).await {
                Ok(r) => r.map_err(|e| e.billed().0),
                Err(_) => Err(EngineError::Retryable("engine call timed out".into())),
            };
            if let Some(place) = place {
                place.leave().await;
            }
            match self.decide(member, result, attempts)? {
                Some(out) => {
                    return Ok(SyncAnswer {
                        result: out.result,
                        extra_credits: out.extra_credits,
                        attempts,
                    });
                }
                None if attempts >= self.cfg.max_attempts => {
                    return Err(SyncFailure::MaxRetries);
                }
                None => {}
            }
            let wait = Duration::from_millis(
                self.cfg
                    .retry_jitter
                    .retry_ms(self.cfg.retry_base_ms, attempts),
            );
            if Instant::now() + wait >= deadline {
                return Err(SyncFailure::Timeout);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// What an attempt's result means: the answer, `None` to try again, or the call's failure.
    /// The engine's health learns from it as from a task's attempt.
    fn decide(
        &self,
        member: Option<&Member>,
        result: Result<EngineOutput, EngineError>,
        attempt: u32,
    ) -> Result<Option<EngineOutput>, SyncFailure> {
        if let Some(m) = member {
            m.record_attempt(&result, self.cfg.clock.now_ms());
        }
        match result {
            Ok(out) => Ok(Some(out)),
            Err(EngineError::Fatal { code, message }) => Err(SyncFailure::Fatal { code, message }),
            Err(e) => {
                tracing::debug!(attempt, error = %e, "Sync attempt failed");
                Ok(None)
            }
        }
    }

    /// Waits until engine `m` has room for one attempt of `task_type`, or the deadline.
    async fn room(
        &self,
        m: &Member,
        task_type: TaskType,
        deadline: Instant,
    ) -> Result<LanePlace, SyncFailure> {
        let _waiting = m.sync_wait();
        let mut changes = self.store.changes();
        loop {
            let now = self.cfg.clock.now_ms();
            match m.budget(now) {
                Some(0) => {
                    let health = m.health();
                    if let super::Health::Failing { message, .. } = &health {
                        let next = m.opens_ms().unwrap_or(now + 60_000);
                        return Err(SyncFailure::EngineFailing {
                            engine: m.name.clone(),
                            message: message.clone(),
                            retry_after_s: u32::try_from(((next - now).max(0) + 999) / 1000)
                                .unwrap_or(u32::MAX)
                                .max(1),
                        });
                    }
                    let until = m.opens_ms().unwrap_or(now + 1_000);
                    sleep_until_ms(now, until, deadline).await?;
                    continue;
                }
                Some(_) => m.started(1, now),
                None => {}
            }
            let (lanes, _) = self.routes.lanes(1, now);
            let entered = lane_enter(self.store.clone(), lanes, task_type)
                .await
                .map_err(|e| SyncFailure::Store(e.to_string()))?;
            if !entered {
                changes.borrow_and_update();
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(LANE_RECHECK) => {}
                    _ = tokio::time::sleep_until(deadline) => return Err(SyncFailure::Timeout),
                }
                continue;
            }
            let place = LanePlace {
                store: self.store.clone(),
                task_type,
                held: true,
            };
            let Some(per_minute) = m.per_minute else {
                return Ok(place);
            };
            loop {
                let now = self.cfg.clock.now_ms();
                let got = self
                    .store
                    .take_lane_starts(&m.name, 1, per_minute, now)
                    .await
                    .map_err(|e| SyncFailure::Store(e.to_string()))?;
                if got.granted > 0 {
                    return Ok(place);
                }
                let until = got.next_ms.unwrap_or(now + 1_000);
                sleep_until_ms(now, until, deadline).await?;
            }
        }
    }
}

/// Sleeps from `now_ms` until `until_ms` (wall clock), unless that is past the deadline.
async fn sleep_until_ms(now_ms: i64, until_ms: i64, deadline: Instant) -> Result<(), SyncFailure> {
    let wait = Duration::from_millis(u64::try_from((until_ms - now_ms).max(1)).unwrap_or(1));
    if Instant::now() + wait >= deadline {
        return Err(SyncFailure::Timeout);
    }
    tokio::time::sleep(wait).await;
    Ok(())
}

/// A sync attempt's place on its engine ([`Store::sync_lane_enter`]), given back once.
struct LanePlace {
    store: Arc<dyn Store>,
    task_type: TaskType,
    held: bool,
}

impl LanePlace {
    /// Gives the place back on a task of its own (a caller leaving meanwhile cannot stop it
    /// half-way), and waits for it.
    async fn leave(mut self) {
        self.held = false;
        let _ = tokio::spawn(lane_leave_durably(self.store.clone(), self.task_type)).await;
    }
}

impl Drop for LanePlace {
    fn drop(&mut self) {
        if self.held {
            // The call went away mid-attempt (its client left): give the place back anyway.
            let (store, task_type) = (self.store.clone(), self.task_type);
            tokio::spawn(lane_leave_durably(store, task_type));
        }
    }
}

/// Wait while an engine place cannot be given back: 20 ms, doubling up to 5 s.
const LEAVE_RETRY: Doubling = Doubling {
    first: Duration::from_millis(20),
    max: Duration::from_secs(5),
};

async fn lane_leave_durably(store: Arc<dyn Store>, task_type: TaskType) {
    let mut failures = 0;
    while let Err(error) = store.sync_lane_leave(task_type).await {
        tracing::warn!(%error, "Cannot give back a sync call's engine place; retrying");
        failures += 1;
        tokio::time::sleep(LEAVE_RETRY.after(failures)).await;
    }
}

/// [`Store::sync_enter`], safe against the caller going away: the store call runs on a task
/// of its own, and a slot it took after the caller left (a client that disconnected while the
/// admission's transaction committed) is given back there, so it cannot leak.
pub(crate) async fn enter(
    store: Arc<dyn Store>,
    org: OrgKey,
    task_type: TaskType,
    cost: i64,
) -> crate::store::Result<crate::store::SyncAdmission> {
    let call = {
        let store = store.clone();
        async move { store.sync_enter(org, task_type, cost).await }
    };
    detached(call, "the admission task", |admission| async move {
        if let crate::store::SyncAdmission::Admitted(slot) = admission {
            leave(store, slot).await;
        }
    })
    .await
}

/// [`Store::sync_lane_enter`], safe against the caller going away like [`enter`]: a place
/// taken after the caller left is given back.
async fn lane_enter(
    store: Arc<dyn Store>,
    lanes: crate::store::Lanes,
    task_type: TaskType,
) -> crate::store::Result<bool> {
    let call = {
        let store = store.clone();
        async move { store.sync_lane_enter(&lanes, task_type).await }
    };
    detached(call, "the engine place task", move |entered| async move {
        if entered {
            lane_leave_durably(store, task_type).await;
        }
    })
    .await
}

/// Runs the store call `call` on a task of its own and answers with its result; when the
/// caller went away before the answer, `undo` gets what the call took instead (to give it
/// back there). `task` names the task in the error when it ends without an answer.
async fn detached<T, U>(
    call: impl Future<Output = crate::store::Result<T>> + Send + 'static,
    task: &'static str,
    undo: impl FnOnce(T) -> U + Send + 'static,
) -> crate::store::Result<T>
where
    T: Send + 'static,
    U: Future<Output = ()> + Send,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(Ok(taken)) = tx.send(call.await) {
            undo(taken).await;
        }
    });
    rx.await.unwrap_or_else(|_| {
        Err(crate::store::Error::Other(
            format!("{task} ended without an answer").into(),
        ))
    })
}

/// Frees a slot without a charge. Called once: a store that fails to record it still frees
/// the slot (its contract), so there is nothing to retry here.
async fn leave(store: Arc<dyn Store>, slot: SyncSlot) {
    if let Err(error) = store.sync_leave(&slot, None).await {
        tracing::warn!(%error, "Freeing a sync call's slot met an error (the store frees it anyway)");
    }
}

/// Owns a sync call's slot: [`SlotGuard::charge`] ends it with a charge; dropping it
/// (an error, a panic, the client gone) ends it without one.
pub(crate) struct SlotGuard {
    store: Arc<dyn Store>,
    slot: Option<SyncSlot>,
}

impl SlotGuard {
    pub(crate) fn new(store: Arc<dyn Store>, slot: SyncSlot) -> SlotGuard {
        SlotGuard {
            store,
            slot: Some(slot),
        }
    }

    /// Records the charge durably and frees the slot. On its own task: a client leaving
    /// meanwhile cannot stop it half-way (the charge is recorded or not, and the slot is
    /// freed either way). Err: the charge could not be recorded (nothing was charged).
    pub(crate) async fn charge(mut self, done: SyncDone) -> crate::store::Result<()> {
        let Some(slot) = self.slot.take() else {
            return Ok(());
        };
        let store = self.store.clone();
        // On an error nothing was charged and the store freed the slot all the same.
        let task = tokio::spawn(async move { store.sync_leave(&slot, Some(&done)).await });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(crate::store::Error::Other(
                format!("the charge task ended: {e}").into(),
            )),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            tokio::spawn(leave(self.store.clone(), slot));
        }
    }
}
