//! The cloro error envelope. Built only by `api::error::ApiError` (the one place that knows
//! codes, statuses and default messages); here is just its shape.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The cloro error envelope (every 4xx and 5xx).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    pub(crate) success: bool,
    pub(crate) error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable machine key (see `ErrorCode`).
    #[schema(value_type = String)]
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Extra context: a list of `{field, message}` for validation errors, an object otherwise;
    /// omitted when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    pub(crate) details: Option<Value>,
    #[schema(format = DateTime)]
    pub(crate) timestamp: String,
}
