//! The request body (pure): `{model, input, tools: [web_search…], include?}`.
//!
//! * OpenAI / Azure: `tools: [{"type": "web_search", "user_location": {"type": "approximate",
//!   "country": "US", "region": "CA"}}]` and `include: ["web_search_call.action.sources"]`
//!   (every consulted URL, not only the cited ones) —
//!   <https://platform.openai.com/docs/guides/tools-web-search>.
//! * xAI: `tools: [{"type": "web_search"}]` — <https://docs.x.ai/docs/guides/tools/search-tools>.
//! * Perplexity Agent API: `tools: [{"type": "web_search", "user_location": {"country": "US",
//!   "region": "CA"}}]` (its `user_location` has no `type`; unknown request fields are answered
//!   with 400, so nothing else is sent) — <https://docs.perplexity.ai/api-reference/agent-post>,
//!   `ToolWebSearchToolUserLocation` in perplexityai/perplexity-py
//!   `src/perplexity/types/response_create_params.py`.
//!
//! * Azure OpenAI: as OpenAI; its web search page recommends `web_search` and still accepts
//!   the older `web_search_preview` (the configuration's `web_search_tool`) —
//!   <https://learn.microsoft.com/azure/foundry/openai/how-to/web-search>.
//!
//! ChatGPT's `disableWebSearch: true` sends no tool at all.

use serde_json::{Map, Value, json};

use super::{Chat, Provider};

/// What the request carries besides the prompt (from the engine's configuration).
#[derive(Debug, Clone)]
pub(super) struct Options<'a> {
    pub(super) provider: Provider,
    pub(super) model: &'a str,
    /// The search tool's `type`: `web_search` (Azure's older deployments: `web_search_preview`).
    pub(super) tool: &'a str,
    /// Send `user_location` from `country`/`state`.
    pub(super) user_location: bool,
    /// Ask for every consulted URL (`include: ["web_search_call.action.sources"]`).
    pub(super) include_sources: bool,
}

pub(super) fn body(opts: &Options<'_>, payload: &Chat<'_>) -> Value {
    let Options {
        provider,
        model,
        tool: tool_type,
        user_location,
        include_sources,
    } = *opts;
    let mut m = Map::new();
    m.insert("model".into(), Value::String(model.trim().to_owned()));
    m.insert("input".into(), Value::String(payload.prompt.to_owned()));
    if payload.disable_web_search {
        return Value::Object(m);
    }
    let mut tool = Map::new();
    tool.insert("type".into(), json!(tool_type));
    if user_location {
        let mut loc = Map::new();
        if provider != Provider::Perplexity {
            loc.insert("type".into(), json!("approximate"));
        }
        let country = payload.country.trim();
        if !country.is_empty() {
            loc.insert("country".into(), json!(country));
        }
        if let Some(state) = payload.state.map(str::trim)
            && !state.is_empty()
        {
            loc.insert("region".into(), json!(state));
        }
        tool.insert("user_location".into(), Value::Object(loc));
    }
    m.insert("tools".into(), json!([tool]));
    if include_sources {
        m.insert("include".into(), json!(["web_search_call.action.sources"]));
    }
    Value::Object(m)
}
