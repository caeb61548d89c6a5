//! The one place that knows HTTP error meaning: every stable error code, its status and its
//! default message, and the cloro error envelope
//! `{"success": false, "error": {"code", "message", "details"?, "timestamp"}}` (its shape is
//! [`crate::wire::ErrorEnvelope`]; only [`ApiError`] builds one).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::domain::types::FieldError;
use crate::time_fmt::{format_ms, now_ms};
use crate::wire::{ErrorBody, ErrorEnvelope};

/// Stable error codes: (code, status, default message). One line per code.
pub(crate) const ERROR_CODES: &[(&str, u16, &str)] = &[
    ("VALIDATION_ERROR", 400, "Request validation failed"),
    ("MISSING_API_KEY", 401, "Missing or invalid API key"),
    ("INVALID_API_KEY_FORMAT", 401, "Invalid API key format"),
    (
        "INVALID_OR_EXPIRED_API_KEY",
        401,
        "Invalid or expired API key",
    ),
    ("INSUFFICIENT_CREDITS", 403, "Insufficient credits"),
    ("RESOURCE_NOT_FOUND", 404, "Resource not found"),
    ("RESOURCE_ALREADY_EXISTS", 409, "Task already exists"),
    ("REQUEST_TIMEOUT", 408, "Request timed out"),
    ("PAYLOAD_TOO_LARGE", 413, "Request body is too large"),
    ("RATE_LIMIT_EXCEEDED", 429, "API key rate limit exceeded"),
    (
        "CONCURRENCY_LIMIT_EXCEEDED",
        429,
        "Concurrency limit exceeded",
    ),
    ("QUEUE_LIMIT_EXCEEDED", 429, "Queue limit exceeded"),
    ("INTERNAL_SERVER_ERROR", 500, "Internal server error"),
    ("EXTERNAL_SERVICE_ERROR", 502, "goto resolve request failed"),
    (
        "SERVICE_UNAVAILABLE",
        503,
        "Service temporarily unavailable",
    ),
];

/// An error answered to a client.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
    /// Seconds, sent as `Retry-After` (503s, and the 429 of an address over its failed-key
    /// budget, `crate::auth`).
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    /// The error with `code`'s status and default message.
    pub(crate) fn new(code: &'static str) -> ApiError {
        let (status, message) = ERROR_CODES
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, s, m)| (*s, *m))
            .unwrap_or((500, "Internal server error"));
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.to_owned(),
            details: None,
            retry_after: None,
        }
    }

    pub(crate) fn message(mut self, m: impl Into<String>) -> ApiError {
        self.message = m.into();
        self
    }

    pub(crate) fn details(mut self, d: Value) -> ApiError {
        self.details = Some(d);
        self
    }

    /// 400 listing every invalid field.
    pub(crate) fn validation(errors: &[FieldError]) -> ApiError {
        ApiError::new("VALIDATION_ERROR").details(field_errors(errors))
    }

    pub(crate) fn not_found(id: &str, message: &str) -> ApiError {
        ApiError::new("RESOURCE_NOT_FOUND")
            .message(message)
            .details(json!({ "id": id }))
    }

    pub(crate) fn unavailable() -> ApiError {
        let mut e = ApiError::new("SERVICE_UNAVAILABLE");
        e.retry_after = Some(1);
        e
    }

    /// The `error` object of the envelope (also used per item in batch results).
    pub(crate) fn body(self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message,
            details: self.details,
            timestamp: format_ms(now_ms()),
        }
    }
}

pub(crate) fn field_errors(errors: &[FieldError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| json!({ "field": e.field, "message": e.message }))
            .collect(),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        let body = ErrorEnvelope {
            success: false,
            error: self.body(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::Unavailable(cause) => {
                tracing::warn!(error = %cause, "Store unavailable");
                ApiError::unavailable()
            }
            other => {
                tracing::error!(error = %other, "Store error");
                ApiError::new("INTERNAL_SERVER_ERROR")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_valid_status_and_a_message() {
        for (code, status, message) in ERROR_CODES {
            let e = ApiError::new(code);
            assert_eq!(e.status.as_u16(), *status);
            assert_eq!(e.message, *message);
        }
    }

    #[test]
    fn details_are_omitted_when_absent() {
        let b = serde_json::to_value(ApiError::new("MISSING_API_KEY").body()).expect("JSON");
        assert!(b.get("details").is_none());
        assert!(b["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
