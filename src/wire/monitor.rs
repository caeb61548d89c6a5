//! The answer of the synchronous monitor endpoints (`POST /v1/monitor/*`).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

// `{"success": true, "result": {...}}`: the result has the shape of a COMPLETED async task's
// `response` of the same task type (reference §5).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MonitorResponse {
    // Always `true` (a `const` in the document).
    pub(crate) success: bool,
    #[schema(value_type = Object)]
    pub(crate) result: Value,
}
