//! `GET /v1/async/status`, `DELETE /v1/async/queue`, `GET /healthz`, `GET /readyz`.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::error::ApiError;
use super::{Auth, SharedState, ok};

/// Queue numbers from the store's in-memory index: the cost does not grow with queue depth.
pub async fn status(
    State(s): State<SharedState>,
    Auth(caller): Auth,
) -> Result<Response, ApiError> {
    let st = s.store.status(caller.org).await?;
    let breakdown: Vec<_> = st
        .by_priority
        .iter()
        .map(|(p, c)| json!({ "priority": p, "count": c }))
        .collect();
    Ok(ok(json!({
        "queuedTasks": st.queued,
        "processingTasks": st.processing,
        "priorityBreakdown": breakdown,
        "concurrency": { "used": st.concurrency_used, "max": st.concurrency_max },
    })))
}

pub async fn clear_queue(
    State(s): State<SharedState>,
    Auth(caller): Auth,
) -> Result<Response, ApiError> {
    let cleared = s.store.clear_queue(caller.org).await?;
    Ok(ok(json!({ "success": true, "cleared": cleared })))
}

pub async fn healthz() -> Response {
    ok(json!({ "status": "ok" }))
}

pub async fn readyz(State(s): State<SharedState>) -> Result<Response, ApiError> {
    s.store.ping().await?;
    Ok(ok(json!({ "status": "ready" })))
}
