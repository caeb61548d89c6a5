//! `GET /v1/async/status` and `DELETE /v1/async/queue`: the organization's queue.

use axum::Json;
use axum::extract::State;

use super::SharedState;
use super::error::ApiError;
use super::extract::Auth;
use crate::wire::{ClearQueueResponse, StatusResponse};

/// Queue numbers from the store's in-memory index: the cost does not grow with queue depth.
#[utoipa::path(get, path = "/v1/async/status", tag = "async", operation_id = "getAsyncStatus",
    summary = "The organization's queue",
    responses((status = 200, description = "Queue numbers", body = StatusResponse)))]
pub(crate) async fn status(
    State(s): State<SharedState>,
    Auth(caller): Auth,
) -> Result<Json<StatusResponse>, ApiError> {
    let st = s.store.status(caller.org).await?;
    Ok(Json(StatusResponse::new(&st)))
}

#[utoipa::path(delete, path = "/v1/async/queue", tag = "async", operation_id = "clearAsyncQueue",
    summary = "Delete every QUEUED task of the organization",
    responses((status = 200, description = "How many were deleted", body = ClearQueueResponse)))]
pub(crate) async fn clear(
    State(s): State<SharedState>,
    Auth(caller): Auth,
) -> Result<Json<ClearQueueResponse>, ApiError> {
    let cleared = s.store.clear_queue(caller.org).await?;
    Ok(Json(ClearQueueResponse {
        success: true,
        cleared,
    }))
}
