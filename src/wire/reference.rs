//! Reference lists. `GET /v1/countries` is a plain array of codes (`Vec<&str>`), so only the
//! states need a type.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsState {
    #[schema(value_type = String)]
    pub(crate) code: &'static str,
    #[schema(value_type = String)]
    pub(crate) name: &'static str,
}
