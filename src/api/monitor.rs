//! `POST /v1/monitor/{chatgpt,gemini,grok,copilot,perplexity,aimode,google,google/news}`: the
//! synchronous half of the API (reference §1.3, issue 11). The body is the engine's payload
//! (the same fields and validation as an async task's `payload`); the answer is
//! `{"success": true, "result": {...}}` with the result of a COMPLETED task of that type.
//!
//! Order of checks: authentication (401) and the rate limit (429 `RATE_LIMIT_EXCEEDED`) in the
//! middleware → the body (400) → credits for the price plus the sync surcharge plus the most
//! the engine may add after the run (AI Mode `expandProducts`: 6), reserved while the call
//! runs (403) → a
//! concurrency slot, at once (429 `CONCURRENCY_LIMIT_EXCEEDED`, `details.limit`) → the engine,
//! with server-side retries ([`crate::queue::sync`]) → 200 with `X-Credits-Remaining` and
//! `X-Credits-Charged`, or 500 `Maximum retries exceeded` / `Maximum timeout (5 minutes)
//! exceeded`. Every answer past validation carries `X-Concurrency-Limit`, `-Current` (slots in
//! use when the request arrived, itself included) and `-Remaining`.
//!
//! Only a 200 is charged, durably, before it is sent. A client that goes away drops this
//! handler's future: the attempt in flight is cancelled with it, the slot is freed and nothing
//! is charged (SPEC §5).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::SharedState;
use super::error::ApiError;
use super::extract::{Auth, JsonBody};
use super::openapi;
use crate::domain::request::{SYNC_SURCHARGE, validate_payload};
use crate::domain::types::TaskType;
use crate::queue::sync::{SlotGuard, SyncFailure};
use crate::store::{SyncAdmission, SyncDone, SyncRecord};
use crate::wire::{ErrorEnvelope, MonitorResponse};

/// The `X-Concurrency-*` headers: the limit, the slots in use (this request included) and
/// what is left.
fn concurrency_headers(h: &mut HeaderMap, limit: u32, current: u32) {
    h.insert("x-concurrency-limit", HeaderValue::from(limit));
    h.insert("x-concurrency-current", HeaderValue::from(current));
    h.insert(
        "x-concurrency-remaining",
        HeaderValue::from(limit.saturating_sub(current)),
    );
}

fn with_concurrency(resp: impl IntoResponse, limit: u32, current: u32) -> Response {
    let mut resp = resp.into_response();
    concurrency_headers(resp.headers_mut(), limit, current);
    resp
}

/// The error a failed call is answered with.
fn failure(f: SyncFailure) -> ApiError {
    match f {
        SyncFailure::MaxRetries => {
            ApiError::new("INTERNAL_SERVER_ERROR").message("Maximum retries exceeded")
        }
        SyncFailure::Timeout => {
            ApiError::new("INTERNAL_SERVER_ERROR").message("Maximum timeout (5 minutes) exceeded")
        }
        SyncFailure::Fatal { code, message } => ApiError::new("INTERNAL_SERVER_ERROR")
            .message(message)
            .details(json!({ "code": code })),
        SyncFailure::EngineFailing {
            engine,
            message,
            retry_after_s,
        } => {
            let mut e = ApiError::new("SERVICE_UNAVAILABLE")
                .message(format!(
                    "The engine {engine:?} cannot be used now: its upstream refused its key"
                ))
                .details(json!({ "engine": engine, "reason": message }));
            e.retry_after = Some(retry_after_s);
            e
        }
        SyncFailure::Store(error) => {
            tracing::warn!(%error, "Store unavailable during a sync call");
            ApiError::unavailable()
        }
    }
}

/// One sync call of `task_type` (see the module docs).
async fn monitor(
    s: SharedState,
    caller: crate::auth::Caller,
    body: serde_json::Value,
    task_type: TaskType,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let (payload, price) =
        validate_payload(task_type, &body, "").map_err(|e| ApiError::validation(&e))?;
    let Some(runner) = s.sync.clone() else {
        return Err(ApiError::new("INTERNAL_SERVER_ERROR").message("Sync calls are not served"));
    };
    let cost = i64::from(price + SYNC_SURCHARGE);
    // The slot reserves the most the call can cost: the price, the surcharge and what the
    // engine may add after the run (AI Mode products), so the charge always fits the balance.
    let most_added = i64::from(payload.max_add_ons());
    let reserve = cost + most_added;
    // Cancellation-safe: a client leaving while the slot is taken cannot leak it.
    let slot = match crate::queue::sync::enter(s.store.clone(), caller.org, task_type, reserve)
        .await?
    {
        SyncAdmission::Admitted(slot) => slot,
        SyncAdmission::InsufficientCredits => {
            let st = s.store.status(caller.org).await?;
            let limit = u32::try_from(st.concurrency_max).unwrap_or(u32::MAX);
            let used = u32::try_from(st.concurrency_used).unwrap_or(u32::MAX);
            return Ok(with_concurrency(
                ApiError::new("INSUFFICIENT_CREDITS"),
                limit,
                used,
            ));
        }
        SyncAdmission::ConcurrencyLimit { limit, current } => {
            let e = ApiError::new("CONCURRENCY_LIMIT_EXCEEDED").details(json!({ "limit": limit }));
            return Ok(with_concurrency(e, limit, current));
        }
    };
    let (limit, current, id) = (slot.limit, slot.current, slot.id);
    let guard = SlotGuard::new(s.store.clone(), slot);
    let answer = match runner.run(caller.org, id, &payload, arrived).await {
        Ok(a) => a,
        Err(f) => {
            drop(guard);
            return Ok(with_concurrency(failure(f), limit, current));
        }
    };
    let credits = cost + answer.extra_credits.clamp(0, most_added);
    // A result linking to its pages is kept as a COMPLETED task, so the pages can be served
    // (and expire with the retention like any task's).
    let keep = answer.result.has_html().then(|| SyncRecord {
        id,
        payload: payload.clone().into_stored(),
        result: answer.result.to_value(),
        attempts: answer.attempts,
        credits_to_charge: cost,
    });
    if let Err(error) = guard.charge(SyncDone { credits, keep }).await {
        tracing::warn!(%error, "Cannot record a sync call's charge; answering 503");
        return Ok(with_concurrency(ApiError::unavailable(), limit, current));
    }
    // `MonitorResponse`, written around the result's text (no tree to build and serialize).
    let body = (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        format!(r#"{{"success":true,"result":{}}}"#, answer.result.text()),
    );
    let mut resp = with_concurrency(body, limit, current);
    let h = resp.headers_mut();
    h.insert("x-credits-charged", HeaderValue::from(credits));
    if let Ok(org) = s.store.org(caller.org).await {
        h.insert("x-credits-remaining", HeaderValue::from(org.credits));
    }
    Ok(resp)
}

/// Declares the handler of one monitor endpoint.
macro_rules! monitor_endpoint {
    ($name:ident, $path:literal, $op:literal, $task:expr, $summary:literal) => {
        #[utoipa::path(post, path = $path, tag = "monitor", operation_id = $op,
            summary = $summary,
            request_body(content = openapi::MonitorRequest, content_type = "application/json",
                description = "The engine's payload: the fields of an async task's `payload` of this type (reference §5)"),
            responses(
                (status = 200, description = "The answer (charged)", body = MonitorResponse),
                (status = 400, description = "Invalid body; `details` lists every invalid field", body = ErrorEnvelope),
                (status = 403, description = "INSUFFICIENT_CREDITS", body = ErrorEnvelope),
                (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
                (status = 429, description = "RATE_LIMIT_EXCEEDED, or CONCURRENCY_LIMIT_EXCEEDED (every slot in use; `details.limit`)", body = ErrorEnvelope),
                (status = 500, description = "INTERNAL_SERVER_ERROR: `Maximum retries exceeded` or `Maximum timeout (5 minutes) exceeded` (not charged)", body = ErrorEnvelope),
                (status = 503, description = "SERVICE_UNAVAILABLE: the store cannot answer, or the engine's key is refused upstream (retry after `Retry-After` seconds)", body = ErrorEnvelope),
            ))]
        pub(crate) async fn $name(
            State(s): State<SharedState>,
            Auth(caller): Auth,
            JsonBody(body): JsonBody,
        ) -> Result<Response, ApiError> {
            monitor(s, caller, body, $task).await
        }
    };
}

monitor_endpoint!(
    chatgpt,
    "/v1/monitor/chatgpt",
    "monitorChatgpt",
    TaskType::Chatgpt,
    "ChatGPT's answer to a prompt"
);
monitor_endpoint!(
    gemini,
    "/v1/monitor/gemini",
    "monitorGemini",
    TaskType::Gemini,
    "Gemini's answer to a prompt"
);
monitor_endpoint!(
    grok,
    "/v1/monitor/grok",
    "monitorGrok",
    TaskType::Grok,
    "Grok's answer to a prompt"
);
monitor_endpoint!(
    copilot,
    "/v1/monitor/copilot",
    "monitorCopilot",
    TaskType::Copilot,
    "Copilot's answer to a prompt"
);
monitor_endpoint!(
    perplexity,
    "/v1/monitor/perplexity",
    "monitorPerplexity",
    TaskType::Perplexity,
    "Perplexity's answer to a prompt"
);
monitor_endpoint!(
    aimode,
    "/v1/monitor/aimode",
    "monitorAiMode",
    TaskType::Aimode,
    "Google AI Mode's answer to a prompt"
);
monitor_endpoint!(
    google,
    "/v1/monitor/google",
    "monitorGoogle",
    TaskType::Google,
    "Google Search results (and AI Overview) for a query"
);
monitor_endpoint!(
    google_news,
    "/v1/monitor/google/news",
    "monitorGoogleNews",
    TaskType::GoogleNews,
    "Google News results for a query"
);

/// Whether `path` is a sync call that holds a slot (every `/v1/monitor/*` route but `goto`):
/// the edge bounds it by the sync budget instead of its request timeout.
pub(crate) fn is_sync_call(path: &str) -> bool {
    path.starts_with("/v1/monitor/") && path != "/v1/monitor/google/goto"
}
