//! `GET /healthz` and `GET /readyz`: the operator's probes (no key needed).

use axum::Json;
use axum::extract::State;

use super::SharedState;
use super::error::ApiError;
use crate::wire::{EngineHealth, Health};

#[utoipa::path(get, path = "/healthz", tag = "operator", operation_id = "healthz",
    summary = "200 while the process runs",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        engines: Vec::new(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operator", operation_id = "readyz",
    summary = "200 while the store answers, 503 otherwise; lists the configured engines' health",
    responses((status = 200, description = "Ready", body = Health)))]
pub(crate) async fn readyz(State(s): State<SharedState>) -> Result<Json<Health>, ApiError> {
    s.store.ping().await?;
    let engines = s
        .engines
        .health()
        .into_iter()
        .map(|(name, kind, health)| EngineHealth {
            name,
            kind,
            health: health.label(),
            message: health.message().map(str::to_owned),
        })
        .collect();
    Ok(Json(Health {
        status: "ready",
        engines,
    }))
}
