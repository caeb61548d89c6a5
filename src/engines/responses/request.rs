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
//! ChatGPT's `disableWebSearch: true` sends no tool at all.

use serde_json::{Map, Value, json};

use super::{Chat, Provider};

pub(super) fn body(
    provider: Provider,
    model: &str,
    payload: &Chat<'_>,
    user_location: bool,
) -> Value {
    let mut m = Map::new();
    m.insert("model".into(), Value::String(model.trim().to_owned()));
    m.insert("input".into(), Value::String(payload.prompt.to_owned()));
    if payload.disable_web_search {
        return Value::Object(m);
    }
    let mut tool = Map::new();
    tool.insert("type".into(), json!("web_search"));
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
    if matches!(provider, Provider::OpenAi | Provider::AzureOpenAi) {
        m.insert("include".into(), json!(["web_search_call.action.sources"]));
    }
    Value::Object(m)
}
