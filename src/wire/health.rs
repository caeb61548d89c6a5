//! The operator probes' answer.

use serde::Serialize;
use utoipa::ToSchema;

// `GET /healthz` (`ok`) and `GET /readyz` (`ready`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String)]
    pub(crate) status: &'static str,
}
