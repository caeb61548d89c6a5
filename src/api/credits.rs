//! `GET /v1/credits`.

use axum::Json;
use axum::extract::State;

use super::SharedState;
use super::error::ApiError;
use super::extract::Auth;
use crate::wire::CreditsResponse;

/// The live balance (completed charges only), the plan's credits per cycle and the next reset.
#[utoipa::path(get, path = "/v1/credits", tag = "account", operation_id = "getCredits",
    summary = "Credit balance and billing cycle",
    responses((status = 200, description = "Balance", body = CreditsResponse)))]
pub(crate) async fn get(
    State(s): State<SharedState>,
    Auth(caller): Auth,
) -> Result<Json<CreditsResponse>, ApiError> {
    let org = s.store.org(caller.org).await?;
    Ok(Json(CreditsResponse::new(&org)))
}
