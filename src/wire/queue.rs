//! The organization's queue: its numbers and the answer to clearing it.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::QueueStatus;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PriorityCount {
    #[schema(minimum = 1, maximum = 10)]
    pub(crate) priority: u8,
    pub(crate) count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Concurrency {
    pub(crate) used: u64,
    pub(crate) max: u64,
}

// `GET /v1/async/status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusResponse {
    pub(crate) queued_tasks: u64,
    pub(crate) processing_tasks: u64,
    pub(crate) priority_breakdown: Vec<PriorityCount>,
    /// Null when it cannot be read.
    #[schema(required)]
    pub(crate) concurrency: Option<Concurrency>,
}

impl StatusResponse {
    pub(crate) fn new(st: &QueueStatus) -> StatusResponse {
        StatusResponse {
            queued_tasks: st.queued,
            processing_tasks: st.processing,
            priority_breakdown: st
                .by_priority
                .iter()
                .map(|&(priority, count)| PriorityCount { priority, count })
                .collect(),
            // Both stores always know it today; the document keeps upstream's `null`.
            concurrency: Some(Concurrency {
                used: st.concurrency_used,
                max: st.concurrency_max,
            }),
        }
    }
}

// `DELETE /v1/async/queue`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClearQueueResponse {
    // Always `true` (a `const` in the document).
    pub(crate) success: bool,
    pub(crate) cleared: u64,
}
