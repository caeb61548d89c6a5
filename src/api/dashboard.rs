//! The operator's dashboard (`GET /dashboard`, issue 13): a live page served by the binary
//! itself, with no CDN and nothing from another origin, so it works offline.
//!
//! * `GET /dashboard`, `/dashboard/app.js`, `/dashboard/app.css`: the page, a static shell
//!   with no data (`assets/dashboard/`, compiled in). It is served without the token: a
//!   browser cannot send `Authorization` on a navigation, and a token in a query string would
//!   land in logs and history. The page takes the token from the URL's fragment
//!   (`/dashboard#token=…`, which the browser never sends), keeps it in the tab's
//!   `sessionStorage`, removes it from the address bar and sends it as `Authorization: Bearer`.
//! * `GET /dashboard/data`: the numbers, as JSON, behind the admin token like `/metrics`
//!   (401 without it, 404 when none is configured). With `?since=<version>` (the `version`
//!   of the previous answer: the store's change counter, [`Store::changes`]) it waits until the
//!   store changed, at most [`LONG_POLL`], before it answers: the page shows a change at once
//!   without asking many times a second. The page asks again a second after each answer.
//!
//! What the data holds: per organization, the queue by priority and PROCESSING against the
//! concurrency limit (the store's, [`Store::overview`], so every node of a cluster shows the
//! same), and this node's throughput and queue wait over the last ten minutes in 5-second
//! buckets, and its last failures with their errors ([`Activity`], in memory: each node shows
//! what it ran, and a restart starts them afresh); node-wide, the workers busy, the engines'
//! health and the webhook backlog.
//!
//! The data is not part of the public API (not in `/openapi.json`); its shape is the page's.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::SharedState;
use super::error::ApiError;
use crate::clock::Clock;
use crate::metrics::TaskEnd;
use crate::store::{OrgKey, Overview, Store};

/// The width of a bucket of the charts.
pub const BUCKET_MS: i64 = 5_000;
/// How many buckets the charts show (ten minutes).
pub const BUCKETS: usize = 120;
/// How many failures are kept.
pub const FAILURES: usize = 20;
/// The longest `GET /dashboard/data?since=` waits for a change.
pub const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// One bucket of an organization's activity.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: i64,
    completed: u64,
    failed: u64,
    wait_ms_sum: u64,
    wait_count: u64,
}

#[derive(Debug, Clone)]
struct Failure {
    at_ms: i64,
    org: OrgKey,
    task_id: Uuid,
    task_type: &'static str,
    error: Value,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per organization, its buckets, oldest first (at most [`BUCKETS`], none older).
    orgs: HashMap<OrgKey, VecDeque<Bucket>>,
    /// The last failures, oldest first.
    failures: VecDeque<Failure>,
}

/// What this node ran lately, for the dashboard: counted by the dispatcher as it happens.
#[derive(Debug, Default)]
pub struct Activity {
    clock: Clock,
    workers: u64,
    busy: AtomicU64,
    inner: Mutex<Inner>,
}

/// Counts a worker busy until dropped ([`Activity::busy`]).
pub(crate) struct Busy<'a>(&'a AtomicU64);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// Reads the time from `clock`; `workers` is the node's `--workers`.
    pub fn new(clock: Clock, workers: usize) -> Activity {
        Activity {
            clock,
            workers: workers as u64,
            ..Activity::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker runs an attempt until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(&self.busy)
    }

    /// The bucket of `org` for now, created if needed (older ones dropped).
    fn with_bucket(&self, org: OrgKey, f: impl FnOnce(&mut Bucket)) {
        let slot = self.clock.now_ms().div_euclid(BUCKET_MS);
        let mut inner = self.lock();
        let ring = inner.orgs.entry(org).or_default();
        if ring.back().is_none_or(|b| b.slot < slot) {
            ring.push_back(Bucket {
                slot,
                ..Bucket::default()
            });
        }
        while ring
            .front()
            .is_some_and(|b| b.slot <= slot - BUCKETS as i64)
            || ring.len() > BUCKETS
        {
            ring.pop_front();
        }
        // The clock went back: count it in the newest bucket.
        if let Some(b) = ring.back_mut() {
            f(b);
        }
    }

    /// A first attempt of a task of `org` started, `waited_ms` after its submission.
    pub(crate) fn started(&self, org: OrgKey, waited_ms: u64) {
        self.with_bucket(org, |b| {
            b.wait_ms_sum = b.wait_ms_sum.saturating_add(waited_ms);
            b.wait_count += 1;
        });
    }

    /// An attempt ended with `end`; a FAILED task's `error` is kept among the last failures.
    pub(crate) fn finished(
        &self,
        org: OrgKey,
        task_id: Uuid,
        task_type: &'static str,
        end: TaskEnd,
        error: Option<&Value>,
    ) {
        match end {
            TaskEnd::Completed => self.with_bucket(org, |b| b.completed += 1),
            TaskEnd::Failed => {
                self.with_bucket(org, |b| b.failed += 1);
                let failure = Failure {
                    at_ms: self.clock.now_ms(),
                    org,
                    task_id,
                    task_type,
                    error: error.cloned().unwrap_or(Value::Null),
                };
                let mut inner = self.lock();
                inner.failures.push_back(failure);
                while inner.failures.len() > FAILURES {
                    inner.failures.pop_front();
                }
            }
            TaskEnd::Retried | TaskEnd::Requeued => {}
        }
    }

    /// The snapshot of `overview` with this node's activity and `engines`.
    fn snapshot(&self, version: u64, overview: Overview, engines: Vec<EngineView>) -> Snapshot {
        let now_ms = self.clock.now_ms();
        let first = now_ms.div_euclid(BUCKET_MS) - (BUCKETS as i64 - 1);
        let inner = self.lock();
        let orgs = overview
            .orgs
            .into_iter()
            .map(|o| {
                let mut completed = vec![0; BUCKETS];
                let mut failed = vec![0; BUCKETS];
                let mut wait_ms = vec![None; BUCKETS];
                for b in inner.orgs.get(&o.org).into_iter().flatten() {
                    let Ok(i) = usize::try_from(b.slot - first) else {
                        continue;
                    };
                    if i < BUCKETS {
                        completed[i] = b.completed;
                        failed[i] = b.failed;
                        wait_ms[i] = (b.wait_count > 0).then(|| b.wait_ms_sum / b.wait_count);
                    }
                }
                let failures = inner
                    .failures
                    .iter()
                    .rev()
                    .filter(|f| f.org == o.org)
                    .map(|f| FailureView {
                        at_ms: f.at_ms,
                        task_id: f.task_id.to_string(),
                        task_type: f.task_type,
                        error: f.error.clone(),
                    })
                    .collect();
                OrgView {
                    org_id: o.org_id,
                    queued: o.status.queued,
                    by_priority: o
                        .status
                        .by_priority
                        .iter()
                        .map(|&(priority, queued)| PriorityView { priority, queued })
                        .collect(),
                    processing: o.status.processing,
                    concurrency_used: o.status.concurrency_used,
                    concurrency_limit: o.status.concurrency_max,
                    completed,
                    failed,
                    wait_ms,
                    failures,
                }
            })
            .collect();
        Snapshot {
            version,
            now_ms,
            bucket_ms: BUCKET_MS,
            node: NodeView {
                workers_busy: self.busy.load(Ordering::Relaxed),
                workers: self.workers,
                webhook_backlog: overview.webhook_backlog,
                engines,
            },
            orgs,
        }
    }
}

/// `GET /dashboard/data`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    /// The store's change counter when the numbers were read (`?since=` of the next request).
    version: u64,
    now_ms: i64,
    /// The width of a bucket of `completed`, `failed`, `waitMs`; the last one holds `nowMs`.
    bucket_ms: i64,
    node: NodeView,
    orgs: Vec<OrgView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeView {
    workers_busy: u64,
    workers: u64,
    webhook_backlog: u64,
    engines: Vec<EngineView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EngineView {
    name: String,
    kind: String,
    health: &'static str,
    message: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrgView {
    org_id: String,
    queued: u64,
    by_priority: Vec<PriorityView>,
    processing: u64,
    concurrency_used: u64,
    concurrency_limit: u64,
    /// Tasks COMPLETED per bucket, oldest first ([`BUCKETS`] of them).
    completed: Vec<u64>,
    /// Tasks FAILED per bucket.
    failed: Vec<u64>,
    /// Mean queue wait of the first attempts started in the bucket (`null`: none started).
    wait_ms: Vec<Option<u64>>,
    /// The last failures, newest first.
    failures: Vec<FailureView>,
}

#[derive(Debug, Serialize)]
struct PriorityView {
    priority: u8,
    queued: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureView {
    at_ms: i64,
    task_id: String,
    task_type: &'static str,
    error: Value,
}

/// `since` of a query string (anything else, or a malformed value, is ignored).
fn since(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(|v| v.parse().ok())
}

/// Waits until the store's change counter is no longer `since`, at most [`LONG_POLL`].
async fn changed_since(store: &dyn Store, since: u64) {
    let mut changes = store.changes();
    let _ = tokio::time::timeout(LONG_POLL, changes.wait_for(|v| *v != since)).await;
}

/// `GET /dashboard/data[?since=<version>]` behind the admin token.
pub(crate) async fn data(
    State(state): State<SharedState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if let Some(refused) = super::admin::refusal(&state, &headers) {
        return refused;
    }
    if let Some(since) = since(query.as_deref()) {
        changed_since(&*state.store, since).await;
    }
    // Read before the numbers: a change in between makes the next request answer at once.
    let version = *state.store.changes().borrow();
    let overview = match state.store.overview().await {
        Ok(o) => o,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let engines = state
        .engines
        .health()
        .into_iter()
        .map(|(name, kind, health)| EngineView {
            name,
            kind,
            health: health.label(),
            message: health.message().map(str::to_owned),
        })
        .collect();
    let snapshot = state
        .metrics
        .activity()
        .snapshot(version, overview, engines);
    ([(header::CACHE_CONTROL, "no-store")], Json(snapshot)).into_response()
}

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/app.css");

/// Only this server: the script and the style files and the data; no inline script or style.
pub(crate) const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`: the page (no data; see the module docs).
pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /dashboard/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_older_than_the_window_are_dropped_and_failures_are_bounded() {
        let clock = Clock::manual(1_000_000);
        let a = Activity::new(clock.clone(), 4);
        a.finished(1, Uuid::nil(), "CHATGPT", TaskEnd::Completed, None);
        a.started(1, 300);
        a.started(1, 100);
        clock.advance(BUCKET_MS);
        a.finished(1, Uuid::nil(), "CHATGPT", TaskEnd::Completed, None);
        a.finished(1, Uuid::nil(), "CHATGPT", TaskEnd::Retried, None);
        let overview = |orgs: Vec<OrgKey>| Overview {
            orgs: orgs
                .into_iter()
                .map(|org| crate::store::OrgOverview {
                    org,
                    org_id: format!("org_{org}"),
                    status: crate::store::QueueStatus {
                        queued: 0,
                        processing: 0,
                        by_priority: Vec::new(),
                        concurrency_used: 0,
                        concurrency_max: 1,
                    },
                })
                .collect(),
            webhook_backlog: 0,
        };
        let s = a.snapshot(0, overview(vec![1]), Vec::new());
        let o = &s.orgs[0];
        assert_eq!(o.completed[BUCKETS - 2..], [1, 1]);
        assert_eq!(o.wait_ms[BUCKETS - 2], Some(200));
        assert_eq!(o.completed.iter().sum::<u64>(), 2);
        // Ten minutes on, the first bucket is out of the window; the second is the oldest.
        clock.advance(BUCKET_MS * (BUCKETS as i64 - 1));
        let s = a.snapshot(0, overview(vec![1]), Vec::new());
        assert_eq!(s.orgs[0].completed[0], 1);
        assert_eq!(s.orgs[0].completed.iter().sum::<u64>(), 1);
        for i in 0..FAILURES + 5 {
            let err = serde_json::json!({ "n": i });
            a.finished(1, Uuid::nil(), "GOOGLE", TaskEnd::Failed, Some(&err));
        }
        let s = a.snapshot(0, overview(vec![1]), Vec::new());
        let f = &s.orgs[0].failures;
        assert_eq!(f.len(), FAILURES);
        assert_eq!(f[0].error["n"], FAILURES + 4, "newest first");
        let _busy = a.busy();
        assert_eq!(
            a.snapshot(0, overview(vec![]), Vec::new())
                .node
                .workers_busy,
            1
        );
    }
}
