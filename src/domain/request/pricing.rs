//! The async price of a task in credits (reference §5.9, SPEC §3 decisions 6 and 7): an engine
//! base plus add-ons, computed from the validated payload. AI Mode's `expandProducts` is billed
//! after the run by the engine (one credit per product cluster), not here.

use super::super::google_url::MAX_PAGES;
use super::chat::{ChatEngine, ChatInclude, ChatPayload};

/// Extra credits of a sync `/v1/monitor/*` call over the async price (not added here).
pub(crate) const SYNC_SURCHARGE: u32 = 2;

/// AI Mode's price.
pub(super) const AIMODE: u32 = 4;

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
