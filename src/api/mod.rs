//! The HTTP API: the route table, the middleware, and the extractors that keep every error in
//! the cloro envelope.
//!
//! Middleware, outermost first (see `docs/ARCHITECTURE.md`): the edge ([`edge`]: request id,
//! `X-Latency-Ms`, request timeout, panics → 500) → authentication for `/v1/*` (an unknown
//! `/v1/...` path without a key is a 401, as upstream) → the rate limit per key and route
//! template ([`ratelimit`], `X-RateLimit-*` on every authenticated response) → the handler. Unknown routes are 404 `RESOURCE_NOT_FOUND` with `details.id` = the path.

pub mod credits;
pub mod edge;
pub mod error;
pub mod listener;
pub mod monitor;
pub mod openapi;
pub mod ratelimit;
pub mod reference;
pub mod tasks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use self::error::ApiError;
use crate::auth::{Authenticator, Caller};
use crate::store::Store;

/// Shared state of every handler.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    /// Largest accepted request body (a 500-task batch of long prompts fits).
    pub max_body_bytes: usize,
    /// Bounds of the HTTP edge.
    pub edge: edge::EdgeConfig,
    pub limiter: ratelimit::RateLimiter,
    /// `--allow-private-webhooks`: literal private webhook URLs are accepted at submission.
    pub allow_private_webhooks: bool,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        max_body_bytes: usize,
        edge: edge::EdgeConfig,
        allow_private_webhooks: bool,
    ) -> AppState {
        AppState {
            store,
            auth: Authenticator::default(),
            max_body_bytes,
            limiter: ratelimit::RateLimiter::new(edge.rate_limit),
            edge,
            allow_private_webhooks,
        }
    }
}

/// Every route template, the rate limit's bucket names (anything else shares `*`).
pub const ROUTES: &[&str] = &[
    "/v1/async/task",
    "/v1/async/task/batch",
    "/v1/async/task/{task_id}",
    "/v1/async/status",
    "/v1/async/queue",
    "/v1/credits",
    "/v1/countries",
    "/v1/states",
];

pub type SharedState = Arc<AppState>;

/// The route table.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/v1/async/task", post(tasks::create))
        .route("/v1/async/task/batch", post(tasks::create_batch))
        .route("/v1/async/task/{task_id}", get(tasks::get))
        .route("/v1/async/status", get(monitor::status))
        .route("/v1/async/queue", delete(monitor::clear_queue))
        .route("/v1/credits", get(credits::get))
        .route("/v1/countries", get(reference::countries))
        .route("/v1/states", get(reference::states))
        .route("/healthz", get(monitor::healthz))
        .route("/readyz", get(monitor::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(uri.path(), "Route not found")
}

async fn authenticate(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/v1" || path.starts_with("/v1/") {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.auth.authenticate(&*state.store, header).await {
            Ok(caller) => {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()))
                    .copied()
                    .unwrap_or("*");
                let d = state
                    .limiter
                    .check(&caller.key_id, route, caller.rate_limit);
                let mut resp = if d.allowed {
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                } else {
                    tracing::info!(route, limit = d.limit, "Rate limited");
                    ApiError::new("RATE_LIMIT_EXCEEDED").into_response()
                };
                let h = resp.headers_mut();
                h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
                h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
                return resp;
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(req).await
}

/// The authenticated organization of a `/v1/*` request.
pub struct Auth(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| ApiError::new("MISSING_API_KEY"))
    }
}

/// A JSON request body: `Content-Type: application/json`, at most `max_body_bytes`, valid JSON.
pub struct JsonBody(pub Value);

impl FromRequest<SharedState> for JsonBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new("VALIDATION_ERROR")
                .message("Content-Type must be application/json")
                .details(json!([{ "field": "body", "message": "Content-Type must be application/json" }])));
        }
        let limit = state.max_body_bytes;
        let too_large = || {
            ApiError::new("PAYLOAD_TOO_LARGE")
                .message(format!("Request body is too large (max {limit} bytes)"))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| too_large())?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new("VALIDATION_ERROR")
                .message("Request body is empty")
                .details(json!([{ "field": "body", "message": "Request body is empty" }])));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new("VALIDATION_ERROR")
                .message("Request body is not valid JSON")
                .details(json!([{ "field": "body", "message": e.to_string() }]))
        })?;
        Ok(JsonBody(value))
    }
}

/// A 200 JSON response.
pub fn ok(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}
