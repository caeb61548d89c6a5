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
