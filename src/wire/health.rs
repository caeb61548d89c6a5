//! The operator probes' answer.

use serde::Serialize;
use utoipa::ToSchema;

// `GET /healthz` (`ok`) and `GET /readyz` (`ready`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String)]
    pub(crate) status: &'static str,
    /// `/readyz` with an engines file: each configured engine's health on this node. A failing
    /// engine does not make the node unready (the API still takes tasks; they wait QUEUED).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) engines: Vec<EngineHealth>,
}

/// One configured engine's health.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EngineHealth {
    pub(crate) name: String,
    /// `openai-responses`, `gemini`, `serpapi`, `simulated`.
    pub(crate) kind: String,
    /// `ok`, `rate-limited` (an upstream 429: new calls paused until its reset) or `failing`
    /// (the upstream refused the key: tasks stay QUEUED, one probe a minute).
    #[schema(value_type = String)]
    pub(crate) health: &'static str,
    /// The upstream's message (keys redacted), when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}
