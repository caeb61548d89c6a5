//! `POST /v1/monitor/google/goto`: the request (documentation only) and the answer.

use serde::Serialize;
use utoipa::ToSchema;

/// The request body, for the document only: the handler validates the JSON by hand with the
/// field messages of every other validation error (`api::goto`), so this type is never built.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "`GoogleGotoRequest`: one Google redirect link (`https://www.google.com/url?…` or `/goto?…`, the `redirectLink` of Google, Google News and AI Mode results)."
)]
pub(crate) struct GotoRequest {
    /// Absolute http(s) URL on `google.com` or `www.google.com`, path `/url` or `/goto`, at
    /// most 8,192 characters.
    #[schema(max_length = 8192, format = "uri")]
    url: String,
}

// `GoogleGotoResponse`: the destination, with no `success` wrapper (reference §1.4). (A `//`
// comment: a doc comment would become the schema's description.)
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GotoResponse {
    /// The absolute http(s) URL the link leads to.
    #[schema(format = "uri")]
    pub(crate) url: String,
}
