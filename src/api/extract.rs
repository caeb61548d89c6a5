//! The extractors of the handlers, written so that every rejection is a cloro error envelope
//! (axum's own rejections are plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::{Value, json};

use super::SharedState;
use super::error::ApiError;
use crate::auth::Caller;

/// The authenticated organization of a `/v1/*` request (put there by
/// [`authenticate`](super::auth::authenticate)).
pub(crate) struct Auth(pub(crate) Caller);

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
///
/// While it is read and parsed it holds its share of the node's budget of body bytes in flight
/// (`AppState::body_budget`): the declared `Content-Length`, or `max_body_bytes` for a body
/// without one (chunked). When the budget cannot give that much now the request is answered
/// 503 `SERVICE_UNAVAILABLE` with `Retry-After` at once, never queued. The share is given back
/// once the body is parsed: the budget bounds raw bytes being read, not the parsed JSON that
/// the handler then holds.
pub(crate) struct JsonBody(pub(crate) Value);

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
        // A body larger than the whole budget takes all of it (it is alone, then), so that
        // every body up to `max_body_bytes` can be served.
        let share = declared
            .map_or(limit, |n| n as usize)
            .min(limit)
            .min(state.edge.max_body_bytes_in_flight);
        let share = u32::try_from(share).unwrap_or(u32::MAX);
        let _permit = state
            .body_budget
            .try_acquire_many(share)
            .map_err(|_| ApiError::unavailable())?;
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
