//! `GET /v1/pages/{org}/{taskId}/{token}/page-{n}.html`: the result pages cloro serves itself
//! (`include.html`; links and matching in [`crate::pages`], rendering in
//! [`crate::pages::render`]).
//!
//! No API key: the URL is the capability, like a presigned link. The page is rendered from the
//! task's STORED result on each request, so it expires with the task (purged, or past its
//! retention) and nothing is stored for it. Every refusal that could tell something about a
//! task (unknown task, another organization's, wrong token, page not linked, not COMPLETED,
//! expired) is the same 404.
//!
//! Bounded without keys, so that it is never an amplifier: a malformed path is refused before
//! anything else; then the page requests of the whole server share one per-second budget
//! (`--page-rate-limit`, 429 `RATE_LIMIT_EXCEEDED` beyond it) and at most
//! [`PagesConfig::max_in_flight`] are answered at once (503 beyond, at once, never queued);
//! each costs one indexed read of one task; a page's size is bounded by the stored result's
//! (lists capped at [`render::MAX_ITEMS`]); nothing is fetched from anywhere. Not in the
//! per-key rate-limit buckets (there is no key to count against).

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::SharedState;
use super::error::ApiError;
use crate::clock::Clock;
use crate::domain::task::TaskStatus;
use crate::pages::{PAGES_PREFIX, PageRef, PagesConfig, render};

/// Longest a browser may keep a page (`Cache-Control: private, max-age`), never past the
/// task's expiry.
const MAX_AGE_SECS: i64 = 300;

/// The page route's own bounds and what it needs to decide expiry.
pub(crate) struct PageServing {
    rate_limit: u32,
    start: Instant,
    /// `(window second, requests counted in it)`.
    window: Mutex<(u64, u32)>,
    in_flight: std::sync::Arc<Semaphore>,
    /// How long terminal tasks are kept (`--retention-secs`): a page past it is gone even
    /// before the purger deletes the task.
    retention_ms: i64,
    clock: Clock,
}

impl PageServing {
    pub(crate) fn new(cfg: &PagesConfig, retention_ms: i64, clock: Clock) -> PageServing {
        PageServing {
            rate_limit: cfg.rate_limit.max(1),
            start: Instant::now(),
            window: Mutex::new((0, 0)),
            in_flight: std::sync::Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            retention_ms,
            clock,
        }
    }

    /// Counts one page request against the server-wide budget and takes a serving slot.
    fn admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.admit_at(self.start.elapsed().as_secs())
    }

    /// [`admit`](Self::admit) in window `second` (tests drive it).
    fn admit_at(&self, second: u64) -> Result<OwnedSemaphorePermit, Refused> {
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if w.0 != second {
                *w = (second, 0);
            }
            if w.1 >= self.rate_limit {
                return Err(Refused::OverBudget);
            }
            w.1 += 1;
        }
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)
    }
}

/// Why a page request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// This second's budget is spent: 429 with `Retry-After: 1`.
    OverBudget,
    /// Every serving slot is taken: 503 with `Retry-After: 1`.
    Busy,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::OverBudget => {
                let mut e =
                    ApiError::new("RATE_LIMIT_EXCEEDED").message("Result page rate limit exceeded");
                e.retry_after = Some(1);
                e
            }
            Refused::Busy => ApiError::unavailable(),
        }
    }
}

impl Default for PageServing {
    fn default() -> Self {
        PageServing::new(&PagesConfig::default(), 24 * 3600 * 1000, Clock::system())
    }
}

/// The one answer of every refusal that concerns a task.
fn not_found() -> ApiError {
    ApiError::new("RESOURCE_NOT_FOUND").message("Page not found")
}

#[utoipa::path(get, path = "/v1/pages/{org}/{taskId}/{token}/{page}", tag = "pages",
    operation_id = "getResultPage",
    summary = "A result page (`include.html`): HTML rendered from the task's stored result",
    description = "The `html` links of a result point here. No API key: the link itself grants access (like a presigned URL) and expires with the task. A self-contained HTML document (no scripts, no external assets). Page requests of the whole server share one per-second budget (`--page-rate-limit`).",
    security(()),
    params(
        ("org" = String, Path, description = "The organization's key, as in the link"),
        ("taskId" = String, Path, description = "The task id (a UUID)"),
        ("token" = String, Path, description = "The link's token: 32 lowercase hex digits"),
        ("page" = String, Path, description = "`page-N.html`, N from 1 to 10"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String,
            headers(
                ("Content-Security-Policy" = String, description = "default-src 'none'; style-src 'unsafe-inline'"),
                ("X-Content-Type-Options" = String, description = "nosniff"),
                ("Referrer-Policy" = String, description = "no-referrer"),
                ("Cache-Control" = String, description = "private, max-age=300 at most (never past the task's expiry)"),
            )),
        (status = 404, description = "RESOURCE_NOT_FOUND: no such page (unknown or expired task, wrong link, not completed)", body = crate::wire::ErrorEnvelope),
        (status = 429, description = "RATE_LIMIT_EXCEEDED: the server's page budget for this second is spent; retry after `Retry-After`", body = crate::wire::ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: too many pages being served, or the store cannot answer; retry after `Retry-After` seconds", body = crate::wire::ErrorEnvelope),
    ))]
pub(crate) async fn page(State(s): State<SharedState>, uri: Uri) -> Result<Response, ApiError> {
    let tail = uri
        .path()
        .strip_prefix(PAGES_PREFIX)
        .ok_or_else(not_found)?;
    let mut parts = tail.split('/');
    let (Some(org), Some(task), Some(token), Some(page), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(not_found());
    };
    let req = PageRef::from_parts(org, task, token, page).ok_or_else(not_found)?;
    let _slot = s.pages.admit()?;
    let t = s
        .store
        .get_task(req.org, req.task)
        .await?
        .ok_or_else(not_found)?;
    let now = s.pages.clock.now_ms();
    let expires_ms = t
        .finished_ms
        .map_or(i64::MIN, |f| f.saturating_add(s.pages.retention_ms));
    let result = match (&t.status, &t.response) {
        (TaskStatus::Completed, Some(r)) if expires_ms > now => r,
        _ => return Err(not_found()),
    };
    if !req.is_linked_from(result) {
        return Err(not_found());
    }
    let html = render::render(t.task_type, t.id, result, req.page).ok_or_else(not_found)?;
    let max_age = ((expires_ms - now) / 1000).clamp(0, MAX_AGE_SECS);
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::HeaderName::from_static("x-robots-tag"),
            HeaderValue::from_static("noindex, nofollow"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("private, max-age={max_age}"))
                .unwrap_or_else(|_| HeaderValue::from_static("no-store")),
        ),
    ];
    Ok((headers, html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_per_second_over_all_clients_and_slots_are_bounded() {
        let cfg = PagesConfig {
            public_url: None,
            rate_limit: 3,
            max_in_flight: 2,
        };
        let s = PageServing::new(&cfg, 1000, Clock::system());
        let a = s.admit_at(5).expect("1st");
        let b = s.admit_at(5).expect("2nd");
        assert_eq!(s.admit_at(5).err(), Some(Refused::Busy));
        assert_eq!(ApiError::from(Refused::Busy).code, "SERVICE_UNAVAILABLE");
        drop((a, b));
        // The 4th request of the same second is over the budget (the 3rd counted too).
        assert_eq!(s.admit_at(5).err(), Some(Refused::OverBudget));
        let over = ApiError::from(Refused::OverBudget);
        assert_eq!(over.code, "RATE_LIMIT_EXCEEDED");
        assert_eq!(over.retry_after, Some(1));
        // A new second, a new budget.
        assert!(s.admit_at(6).is_ok());
    }
}
