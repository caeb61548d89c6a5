//! The engines this node calls: which engine serves each task type, each engine's limits, and
//! its health (issue 10).
//!
//! * **Routes.** Each task type runs on the engine the engines file names for it
//!   (`[task_types]`); a task type it does not list runs on the default engine (the simulator,
//!   or whatever engine the caller of [`crate::app::start`] brings).
//! * **Limits.** An engine's `max_in_flight` and `requests_per_minute` become a
//!   [`Lane`] of every claim: the store starts no task of a lane without room and offers the
//!   organization its next runnable task instead, so a saturated engine blocks nothing else.
//!   `max_in_flight` is counted by the store (cluster-wide in cluster mode); the per-minute budget
//!   is taken from the store's shared rate tokens before each claim and what the claim did not
//!   use is given back.
//! * **Health.** An upstream 429 pauses the engine's new calls until the reset it announced
//!   ([`DEFAULT_RATE_PAUSE`] when it announced none, at most [`MAX_RATE_PAUSE`]); a refused key
//!   or exhausted quota marks it *failing*: it starts nothing, logs an error, shows in
//!   `/readyz`, and lets one task through every [`PROBE_EVERY`] as a probe. Either way the task
//!   that met the error goes back to the head of its priority without spending its attempt
//!   ([`Outcome::Requeue`](crate::store::Outcome::Requeue)), so a wrong key never burns a queue
//!   into FAILED. Health is this node's view (each node meets the upstream on its own).
//! * **Shared health.** Each change of an engine's health (ok, rate-limited, failing, or a new
//!   message) wakes one writer task ([`write_health`]) that records it in the database's
//!   `engine_health` table, off the claim loop; it also writes every engine once at start-up
//!   (`ok`: a stale `failing` of an earlier run is cleared) and re-writes the unhealthy ones every
//!   [`HEALTH_REFRESH`] (in a cluster a node starting writes `ok`, and the latest writer wins).
//!   `cloro engines list` reads it.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::types::TaskType;
use crate::engines::{Engine, EngineError};
use crate::store::{Directory, Lane, Lanes};

/// Pause after a 429 that announced no reset time.
pub(crate) const DEFAULT_RATE_PAUSE: Duration = Duration::from_secs(20);
/// Longest pause a 429 can ask for (an upstream announcing a day is not taken at its word).
pub(crate) const MAX_RATE_PAUSE: Duration = Duration::from_secs(15 * 60);
/// How often a failing engine lets one task through to find out whether its key works again.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(60);
/// How often the health writer re-writes the engines that are not `ok` (so a node that started
/// later and wrote `ok` does not hide another node's failing key for long).
pub(crate) const HEALTH_REFRESH: Duration = Duration::from_secs(60);
/// Wait before the health writer tries again after the database refused a write.
const HEALTH_WRITE_RETRY: Duration = Duration::from_secs(5);
/// Longest the health writer's last pass may take at shutdown.
const HEALTH_LAST_PASS: Duration = Duration::from_secs(2);

/// An engine's health as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The upstream said 429: no new call before `until_ms`.
    RateLimited {
        until_ms: i64,
        message: String,
    },
    /// The upstream refused the key (invalid, no access, quota or plan exhausted): no new call
    /// except one probe at `next_probe_ms`.
    Failing {
        message: String,
        since_ms: i64,
        next_probe_ms: i64,
        /// A probe is running; no other starts until it ends.
        probing: bool,
    },
}

impl Health {
    /// `ok`, `rate-limited` or `failing`.
    pub fn label(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::RateLimited { .. } => "rate-limited",
            Health::Failing { .. } => "failing",
        }
    }

    /// What went wrong, if anything.
    pub fn message(&self) -> Option<&str> {
        match self {
            Health::Ok => None,
            Health::RateLimited { message, .. } | Health::Failing { message, .. } => Some(message),
        }
    }

    /// Most tasks of the engine that may start at `now` by health alone (`None`: no limit).
    fn budget(&self, now: i64) -> Option<u32> {
        match self {
            Health::Ok => None,
            Health::RateLimited { until_ms, .. } => (now < *until_ms).then_some(0),
            Health::Failing {
                next_probe_ms,
                probing,
                ..
            } => Some(u32::from(!probing && now >= *next_probe_ms)),
        }
    }

    /// When the budget opens again, if it is shut.
    fn opens_ms(&self) -> Option<i64> {
        match self {
            Health::Ok => None,
            Health::RateLimited { until_ms, .. } => Some(*until_ms),
            Health::Failing {
                next_probe_ms,
                probing: false,
                ..
            } => Some(*next_probe_ms),
            Health::Failing { probing: true, .. } => None,
        }
    }
}

/// How an attempt on an engine ended, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The upstream took the key (an answer, or a request it refused on its merits).
    KeyWorks,
    /// Nothing learnt about the key (a timeout, a 5xx, a transport error).
    Unknown,
    RateLimited(Option<Duration>),
    Refused,
}

impl Verdict {
    pub(crate) fn of(result: &Result<crate::engines::EngineOutput, EngineError>) -> Verdict {
        match result {
            Ok(_) => Verdict::KeyWorks,
            Err(e) => Verdict::of_error(e),
        }
    }

    fn of_error(e: &EngineError) -> Verdict {
        match e {
            EngineError::Fatal { .. } => Verdict::KeyWorks,
            EngineError::Retryable(_) => Verdict::Unknown,
            EngineError::RateLimited { retry_after, .. } => Verdict::RateLimited(*retry_after),
            EngineError::Unauthorized { .. } => Verdict::Refused,
            EngineError::Billed { error, .. } => Verdict::of_error(error),
        }
    }
}

/// One configured engine.
pub struct Member {
    pub(crate) name: String,
    /// `openai-responses`, `gemini`, `serpapi`, `simulated`.
    pub(crate) kind: String,
    pub(crate) model: Option<String>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) per_minute: Option<u32>,
    health: Mutex<Health>,
    /// When the health last changed its label (epoch ms; 0: never since start-up).
    since_ms: AtomicI64,
    /// Wakes the health writer (shared by the members of one [`EngineRoutes`]).
    health_changed: Arc<Notify>,
    /// When the rate tokens run out, the earliest next start (from the last take).
    tokens_open_ms: Mutex<Option<i64>>,
    /// Sync calls of this node waiting for room on the engine (issue 11): while any waits,
    /// the dispatcher starts none of the engine's async tasks, so the calls go first.
    sync_waiting: AtomicU32,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("max_in_flight", &self.max_in_flight)
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl Member {
    pub(crate) fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        model: Option<String>,
        engine: Arc<dyn Engine>,
        max_in_flight: Option<u32>,
        per_minute: Option<u32>,
    ) -> Member {
        Member {
            name: name.into(),
            kind: kind.into(),
            model,
            engine,
            max_in_flight,
            per_minute,
            health: Mutex::new(Health::Ok),
            since_ms: AtomicI64::new(0),
            health_changed: Arc::new(Notify::new()),
            tokens_open_ms: Mutex::new(None),
            sync_waiting: AtomicU32::new(0),
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or(Health::Ok)
    }

    /// The health and when it began (epoch ms; 0: since start-up).
    fn health_since(&self) -> (Health, i64) {
        let health = self.health();
        let since = match &health {
            Health::Failing { since_ms, .. } => *since_ms,
            _ => self.since_ms.load(Ordering::Relaxed),
        };
        (health, since)
    }

    /// Runs `f` on the health; if what the database shows of it (label or message) changed,
    /// notes when (a new label) and wakes the health writer. Returns whether it changed.
    fn change_health(&self, now: i64, f: impl FnOnce(&mut Health)) -> bool {
        let (label_changed, changed) = self.with_health(|h| {
            let label = h.label();
            let message = h.message().map(str::to_owned);
            f(h);
            let label_changed = h.label() != label;
            (
                label_changed,
                label_changed || h.message() != message.as_deref(),
            )
        });
        if label_changed {
            self.since_ms.store(now, Ordering::Relaxed);
        }
        if changed {
            self.health_changed.notify_one();
        }
        changed
    }

    fn with_health<R>(&self, f: impl FnOnce(&mut Health) -> R) -> R {
        let mut guard = match self.health.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Most tasks its health lets start at `now` (`None`: no limit). A pause that has ended is
    /// over: the engine is healthy again.
    pub(crate) fn budget(&self, now: i64) -> Option<u32> {
        self.change_health(now, |h| {
            if let Health::RateLimited { until_ms, .. } = h
                && now >= *until_ms
            {
                tracing::info!(engine = %self.name, "Engine pause ended");
                *h = Health::Ok;
            }
        });
        self.with_health(|h| h.budget(now))
    }

    /// A claim started `n` tasks on this engine while its health allowed `budget`: a start
    /// while failing is the probe.
    pub(crate) fn started(&self, n: usize, now: i64) {
        if n == 0 {
            return;
        }
        self.with_health(|h| {
            if let Health::Failing {
                probing,
                next_probe_ms,
                ..
            } = h
            {
                *probing = true;
                *next_probe_ms = now + PROBE_EVERY.as_millis() as i64;
            }
        });
    }

    /// Updates the health from an attempt's `result` at `now` (a task's or a sync call's), with
    /// the engine's message as the reason; returns that message (empty for an answer or a
    /// billed error). A change wakes the health writer (see `write_health`).
    pub(crate) fn record_attempt<'r>(
        &self,
        result: &'r Result<crate::engines::EngineOutput, EngineError>,
        now: i64,
    ) -> &'r str {
        let message = match result {
            Ok(_) | Err(EngineError::Billed { .. }) => "",
            Err(
                EngineError::Retryable(m)
                | EngineError::Fatal { message: m, .. }
                | EngineError::RateLimited { message: m, .. }
                | EngineError::Unauthorized { message: m },
            ) => m.as_str(),
        };
        self.record(Verdict::of(result), message, now);
        message
    }

    /// Updates the health from how an attempt ended at `now`; logs each change once. Returns
    /// whether the health changed (its label or its message): the health writer then records it.
    pub(crate) fn record(&self, verdict: Verdict, message: &str, now: i64) -> bool {
        self.change_health(now, |h| match verdict {
            Verdict::KeyWorks => {
                if *h != Health::Ok {
                    tracing::info!(engine = %self.name, was = h.label(), "Engine is healthy again");
                    *h = Health::Ok;
                }
            }
            Verdict::Unknown => {
                // A probe that learnt nothing: probe again after the interval.
                if let Health::Failing { probing, .. } = h {
                    *probing = false;
                }
            }
            Verdict::RateLimited(after) => {
                let pause = after.unwrap_or(DEFAULT_RATE_PAUSE).min(MAX_RATE_PAUSE);
                let until_ms = now + pause.as_millis() as i64;
                match h {
                    // A failing engine stays failing: its key is the bigger problem.
                    Health::Failing { probing, .. } => *probing = false,
                    Health::RateLimited { until_ms: u, .. } if *u >= until_ms => {}
                    _ => {
                        tracing::warn!(engine = %self.name, pause_ms = pause.as_millis() as u64,
                                       %message, "Upstream rate limit: pausing the engine's new calls");
                        *h = Health::RateLimited {
                            until_ms,
                            message: message.to_owned(),
                        };
                    }
                }
            }
            Verdict::Refused => {
                let next_probe_ms = now + PROBE_EVERY.as_millis() as i64;
                match h {
                    Health::Failing {
                        probing,
                        next_probe_ms: next,
                        message: m,
                        ..
                    } => {
                        *probing = false;
                        *next = (*next).max(next_probe_ms);
                        *m = message.to_owned();
                    }
                    _ => {
                        tracing::error!(engine = %self.name, %message,
                            "The upstream refused the engine's key: its tasks stay QUEUED; probing every minute");
                        *h = Health::Failing {
                            message: message.to_owned(),
                            since_ms: now,
                            next_probe_ms,
                            probing: false,
                        };
                    }
                }
            }
        })
    }

    /// When a shut engine opens again (its pause ends, its probe is due, a rate token comes).
    pub(crate) fn opens_ms(&self) -> Option<i64> {
        let health = self.with_health(|h| h.opens_ms());
        let tokens = self.tokens_open_ms.lock().ok().and_then(|t| *t);
        match (health, tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Member {
    /// A sync call starts waiting for room on this engine; the returned guard ends the wait
    /// when dropped (however the call ends).
    pub(crate) fn sync_wait(&self) -> SyncWait<'_> {
        self.sync_waiting.fetch_add(1, Ordering::AcqRel);
        SyncWait(self)
    }

    /// Whether a sync call of this node waits for room on the engine.
    fn sync_waits(&self) -> bool {
        self.sync_waiting.load(Ordering::Acquire) > 0
    }
}

/// A sync call waiting for room on an engine ([`Member::sync_wait`]).
pub(crate) struct SyncWait<'a>(&'a Member);

impl Drop for SyncWait<'_> {
    fn drop(&mut self) {
        self.0.sync_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which engine runs each task type, and the engines' limits and health.
pub struct EngineRoutes {
    members: Vec<Member>,
    /// Indexed like [`TaskType::ALL`]: the member serving the type; `None`: the default engine.
    route: [Option<usize>; 8],
    /// Notified by any member whose health changed (see [`write_health`]).
    health_changed: Arc<Notify>,
    /// Counts the health writer's successful writes (tests wait on it).
    health_writes: watch::Sender<u64>,
}

impl Default for EngineRoutes {
    /// Every task type on the default engine.
    fn default() -> Self {
        EngineRoutes::new(Vec::new(), [None; 8])
    }
}

impl std::fmt::Debug for EngineRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRoutes")
            .field("members", &self.members)
            .field("route", &self.route)
            .finish()
    }
}

fn type_index(t: TaskType) -> usize {
    TaskType::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

impl EngineRoutes {
    /// Reads the engines file at `path` (SPEC §5), taking API keys from `env`; the error names
    /// the file and the line.
    pub fn load(
        path: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<EngineRoutes, String> {
        crate::engines::file::load(path, env).map(EngineRoutes::from_set)
    }

    /// The routes of a loaded engines file.
    pub(crate) fn from_set(set: crate::engines::file::EngineSet) -> EngineRoutes {
        let members = set
            .engines
            .into_iter()
            .map(|e| {
                Member::new(
                    e.name,
                    e.kind.as_str(),
                    e.model,
                    e.engine,
                    e.max_in_flight,
                    e.requests_per_minute,
                )
            })
            .collect();
        EngineRoutes::new(members, set.route)
    }

    /// Routes from configured engines: `route[i]` is the member serving `TaskType::ALL[i]`.
    pub(crate) fn new(mut members: Vec<Member>, route: [Option<usize>; 8]) -> EngineRoutes {
        let route = route.map(|r| r.filter(|&i| i < members.len()));
        let health_changed = Arc::new(Notify::new());
        for m in &mut members {
            m.health_changed = health_changed.clone();
        }
        EngineRoutes {
            members,
            route,
            health_changed,
            health_writes: watch::Sender::new(0),
        }
    }

    /// Changes after each engine health the writer recorded in the database.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn health_writes(&self) -> watch::Receiver<u64> {
        self.health_writes.subscribe()
    }

    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }

    /// Sync calls of this node waiting for room on the engine of task type `t` (0 for a type
    /// on the default engine). Tests wait on it: while it is above 0, the dispatcher starts
    /// none of that engine's async tasks.
    pub fn sync_waiting(&self, t: TaskType) -> usize {
        self.member_of(t)
            .map_or(0, |m| m.sync_waiting.load(Ordering::Acquire) as usize)
    }

    /// The configured engine of a task type (`None`: the default engine runs it).
    pub(crate) fn member_of(&self, t: TaskType) -> Option<&Member> {
        self.route[type_index(t)].map(|i| &self.members[i])
    }

    /// `(task type, engine name)` for every task type; `None`: the default engine.
    #[cfg(test)]
    pub(crate) fn table(&self) -> Vec<(TaskType, Option<&str>)> {
        TaskType::ALL
            .iter()
            .map(|t| (*t, self.member_of(*t).map(|m| m.name.as_str())))
            .collect()
    }

    /// Each configured engine's name, kind and health.
    pub fn health(&self) -> Vec<(String, String, Health)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.kind.clone(), m.health()))
            .collect()
    }

    /// The lanes of a claim of up to `max` tasks at `now`, before rate tokens: for each member
    /// with limits or a shut health, its lane (`starts` from health only). The second value
    /// maps lane index → member index.
    pub(crate) fn lanes(&self, max: usize, now: i64) -> (Lanes, Vec<usize>) {
        let mut lanes = Lanes::default();
        let mut owners = Vec::new();
        let mut lane_of_member = vec![None; self.members.len()];
        for (i, m) in self.members.iter().enumerate() {
            // Sync calls waiting for the engine go first: no async task of it starts meanwhile.
            let budget = if m.sync_waits() {
                Some(0)
            } else {
                m.budget(now)
            };
            if budget.is_none() && m.max_in_flight.is_none() && m.per_minute.is_none() {
                continue;
            }
            lane_of_member[i] = Some(lanes.lanes.len());
            owners.push(i);
            lanes.lanes.push(Lane {
                name: m.name.clone(),
                max_in_flight: m.max_in_flight,
                starts: budget.map(|b| b.min(u32::try_from(max).unwrap_or(u32::MAX))),
            });
        }
        for (t, r) in self.route.iter().enumerate() {
            lanes.lane_of[t] = r.and_then(|m| lane_of_member[m]);
        }
        (lanes, owners)
    }

    /// Records that rate tokens of member `i` ran out until `next_ms` (or are available).
    pub(crate) fn set_tokens_open(&self, i: usize, next_ms: Option<i64>) {
        if let Some(m) = self.members.get(i)
            && let Ok(mut t) = m.tokens_open_ms.lock()
        {
            *t = next_ms;
        }
    }

    /// After a claim: `started[i]` tasks of member `i` started at `now` (a failing member's
    /// start is its probe).
    pub(crate) fn started(&self, started: &[usize], now: i64) {
        for (m, n) in self.members.iter().zip(started) {
            m.started(*n, now);
        }
    }

    /// Counts claimed tasks per member.
    pub(crate) fn count_started<'a>(
        &self,
        types: impl IntoIterator<Item = &'a TaskType>,
    ) -> Vec<usize> {
        let mut n = vec![0; self.members.len()];
        for t in types {
            if let Some(i) = self.route[type_index(*t)] {
                n[i] += 1;
            }
        }
        n
    }

    /// The earliest time a shut engine opens again, if any is shut.
    pub(crate) fn next_open_ms(&self) -> Option<i64> {
        self.members.iter().filter_map(Member::opens_ms).min()
    }
}

/// What the health writer last wrote of a member: its label and message.
type Written = Option<(&'static str, Option<String>)>;

/// Keeps the database's `engine_health` rows in step with this node's view of its engines, until
/// `cancel` fires (then one last pass, bounded by [`HEALTH_LAST_PASS`]). Runs beside the claim
/// loop and never blocks it: members only notify; this task reads their health (a short lock,
/// never held over an await) and writes what changed. The first pass writes every engine (`ok`
/// at start-up); every [`HEALTH_REFRESH`] the engines that are not `ok` are written again; a
/// write the database refused is tried again after [`HEALTH_WRITE_RETRY`].
pub(crate) async fn write_health(
    routes: Arc<EngineRoutes>,
    dir: Arc<dyn Directory>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let started_ms = clock.now_ms();
    let mut written: Vec<Written> = vec![None; routes.members.len()];
    let mut refresh = false;
    loop {
        let failed = health_pass(&routes, &*dir, &clock, started_ms, &mut written, refresh).await;
        let wait = if failed {
            HEALTH_WRITE_RETRY
        } else {
            HEALTH_REFRESH
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = routes.health_changed.notified() => refresh = false,
            () = tokio::time::sleep(wait) => refresh = !failed,
        }
    }
    let last = health_pass(&routes, &*dir, &clock, started_ms, &mut written, false);
    let _ = tokio::time::timeout(HEALTH_LAST_PASS, last).await;
}

/// Writes each member whose health differs from what was last written (all of the unhealthy
/// ones too with `refresh`). Returns whether a write failed.
async fn health_pass(
    routes: &EngineRoutes,
    dir: &dyn Directory,
    clock: &Clock,
    started_ms: i64,
    written: &mut [Written],
    refresh: bool,
) -> bool {
    let mut failed = false;
    for (m, last) in routes.members.iter().zip(written.iter_mut()) {
        let (health, since) = m.health_since();
        let now = (health.label(), health.message().map(str::to_owned));
        if last.as_ref() == Some(&now) && !(refresh && health != Health::Ok) {
            continue;
        }
        let since = if since == 0 { started_ms } else { since };
        let result = dir
            .record_engine_health(&m.name, now.0, now.1.as_deref(), since, clock.now_ms())
            .await;
        match result {
            Ok(()) => {
                *last = Some(now);
                routes.health_writes.send_modify(|n| *n += 1);
            }
            Err(error) => {
                failed = true;
                tracing::warn!(engine = %m.name, %error, "Cannot record the engine's health; trying again");
            }
        }
    }
    failed
}

#[cfg(test)]
#[path = "engines_tests.rs"]
mod tests;
