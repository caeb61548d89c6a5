//! The operator probes' answer.

use serde::Serialize;
use utoipa::ToSchema;

// `GET /healthz` (`ok`) and `GET /readyz` (`ready`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String)]
    pub status: &'static str,
}
