//! The async price of a task in credits (reference §5.9, SPEC §3 decisions 6 and 7): an engine
//! base plus add-ons, computed from the validated payload. AI Mode's `expandProducts` is billed
//! after the run by the engine (one credit per product cluster), not here; what it may add at
//! most ([`Payload::max_add_ons`]) is reserved beside the price while a task or a sync call
//! runs, so the charge never exceeds what the balance held for it.

use serde_json::Value;

use super::super::google_url::MAX_PAGES;
use super::super::types::TaskType;
use super::chat::{ChatEngine, ChatInclude, ChatPayload};
use super::payload::Payload;

/// Extra credits of a sync `/v1/monitor/*` call over the async price (not added here).
pub(crate) const SYNC_SURCHARGE: u32 = 2;

/// AI Mode's price.
pub(super) const AIMODE: u32 = 4;

/// Most product clusters AI Mode's `expandProducts` returns, one credit each (reference §5.6
/// and §5.9: "+1 per returned cluster, ≤ +6"): the most an engine may add to a task's price.
pub(crate) const MAX_PRODUCT_CLUSTERS: u32 = 6;

impl Payload {
    /// The most the engine may bill on top of the price after the run: AI Mode with
    /// `include.expandProducts` adds up to [`MAX_PRODUCT_CLUSTERS`]; nothing else adds any.
    pub(crate) fn max_add_ons(&self) -> u32 {
        match self {
            Payload::AiMode(p)
                if p.include
                    .as_ref()
                    .is_some_and(|i| i.expand_products == Some(true)) =>
            {
                MAX_PRODUCT_CLUSTERS
            }
            _ => 0,
        }
    }
}

/// [`Payload::max_add_ons`] of a stored (normalised) payload of `task_type`, read without
/// decoding the whole payload (the stores call it on queued rows). A payload that cannot be
/// read adds nothing (it never runs: the engine refuses it).
pub(crate) fn max_add_ons_stored(task_type: TaskType, stored: &Value) -> i64 {
    match task_type {
        TaskType::Aimode
            if stored.pointer("/include/expandProducts") == Some(&Value::Bool(true)) =>
        {
            i64::from(MAX_PRODUCT_CLUSTERS)
        }
        _ => 0,
    }
}

/// [`max_add_ons_stored`] of a stored payload still in its text form (`None`: not read, as for
/// task types that have no add-on billed after the run).
pub(crate) fn max_add_ons_text(task_type: TaskType, stored: Option<&str>) -> i64 {
    if task_type != TaskType::Aimode {
        return 0;
    }
    stored
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .map_or(0, |v| max_add_ons_stored(task_type, &v))
}

/// A chat engine: 5 (ChatGPT, Copilot) or 4; ChatGPT's full-response add-ons (`rawResponse`,
/// `searchQueries`, `ads`, `shopping`) cost one flat 2; a US `state` costs 2.
pub(super) fn chat(engine: ChatEngine, payload: &ChatPayload) -> u32 {
    let mut credits = match engine {
        ChatEngine::Chatgpt | ChatEngine::Copilot => 5,
        ChatEngine::Gemini | ChatEngine::Grok | ChatEngine::Perplexity => 4,
    };
    if engine == ChatEngine::Chatgpt
        && payload.include.as_ref().is_some_and(|i| {
            [i.raw_response, i.search_queries, i.ads, i.shopping]
                .into_iter()
                .any(ChatInclude::on)
        })
    {
        credits += 2;
    }
    if payload.state.is_some() {
        credits += 2;
    }
    credits
}

/// Google Search: the pages, plus one flat 2 for `aioverview` and/or `paaAioverview`.
pub(super) fn google(pages: i64, aioverview: bool) -> u32 {
    let mut credits = self::pages(pages);
    if aioverview {
        credits += 2;
    }
    credits
}

/// 3 credits + 2 per page beyond the first (Google / Google News).
pub(super) fn pages(pages: i64) -> u32 {
    let extra = u32::try_from(pages.clamp(1, MAX_PAGES) - 1).unwrap_or(0);
    3 + 2 * extra
}
