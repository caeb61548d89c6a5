//! `GET /v1/credits`.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::error::ApiError;
use super::{Auth, SharedState, ok};
use crate::time_fmt::format_ms;

/// The live balance (completed charges only), the plan's credits per cycle and the next reset.
pub async fn get(State(s): State<SharedState>, Auth(caller): Auth) -> Result<Response, ApiError> {
    let org = s.store.org(caller.org).await?;
    Ok(ok(json!({
        "remaining": org.credits,
        "perCycle": org.per_cycle,
        "cycleResetsAt": org.cycle_resets_ms.map(format_ms),
    })))
}
