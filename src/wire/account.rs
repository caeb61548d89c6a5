//! The organization's credits.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::Org;
use crate::time_fmt::format_ms;

// `GET /v1/credits`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreditsResponse {
    pub(crate) remaining: i64,
    /// Null on the free plan.
    #[schema(required)]
    pub(crate) per_cycle: Option<i64>,
    #[schema(format = DateTime, required)]
    pub(crate) cycle_resets_at: Option<String>,
}

impl CreditsResponse {
    /// The live balance (completed charges only), the plan's credits per cycle and the next
    /// reset.
    pub(crate) fn new(org: &Org) -> CreditsResponse {
        CreditsResponse {
            remaining: org.credits,
            per_cycle: org.per_cycle,
            cycle_resets_at: org.cycle_resets_ms.map(format_ms),
        }
    }
}
