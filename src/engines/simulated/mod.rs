//! The deterministic `simulated` engine (SPEC §5), the default engine (no keys needed):
//! results with the same shape as the real engines' `result` objects (reference
//! `cloro-api.md` §5.1–§5.8), derived only from the task's typed payload, after a simulated
//! latency and with an optional simulated failure rate.
//!
//! The same payload (and page links) always gives byte-identical JSON. Every result says it is
//! simulated: a top-level `"simulated": true`, `"model": "simulated"` where the shape has a
//! model field, and a text starting with `[simulated] `. Generated links only use the reserved
//! `example.com` / `example.org` / `example.net` domains, Google search links, and the result
//! pages cloro serves itself (`include.html`: the attempt's [`PageLinks`], under the server's
//! public URL; never a host cloro does not serve).
//!
//! Layout: this file holds the engine (latency, failure injection) and the dispatch by task
//! type; `context.rs` what every simulated engine shares (the seeded per-task context, the
//! vocabulary, text and source builders); one file per engine (`chatgpt.rs`, `gemini.rs`,
//! `grok.rs`, `copilot.rs`, `perplexity.rs`, `aimode.rs`, `google.rs`, `news.rs`).
//!
//! In Google's url form the engine reads the fields the validator derived from the URL
//! (`query`, `gl`/`country`, `hl`, `pages`). Only when no `hl` was derived does it look at the
//! URL, through `domain::google_url::last_query_value` (its historical rule, kept so results
//! stay byte-identical).

mod aimode;
mod chatgpt;
mod context;
mod copilot;
mod gemini;
mod google;
mod grok;
mod news;
mod perplexity;

use std::time::Duration;

use async_trait::async_trait;
#[cfg(test)]
use serde_json::Value;

use super::{Engine, EngineError, EngineOutput, EngineTask};
use crate::domain::request::{ChatEngine, Payload};
use crate::pages::PageLinks;
use context::{Ctx, FNV_OFFSET, fnv1a, mix, to_unit};

/// Simulated latency: fixed or uniformly spread over `min..=max` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl std::str::FromStr for LatencyRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("invalid latency {s:?}: expected N or MIN..MAX"))
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let (min_ms, max_ms) = (parse(a)?, parse(b)?);
                if min_ms > max_ms {
                    return Err(format!("invalid latency {s:?}: MIN is above MAX"));
                }
                Ok(LatencyRange { min_ms, max_ms })
            }
            None => {
                let v = parse(s)?;
                Ok(LatencyRange {
                    min_ms: v,
                    max_ms: v,
                })
            }
        }
    }
}

/// The simulated engine (SPEC §5).
#[derive(Debug, Clone)]
pub struct SimulatedEngine {
    pub latency: LatencyRange,
    pub failure_rate: f64,
}

#[async_trait]
impl Engine for SimulatedEngine {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let seed = task.id.to_string();
        let LatencyRange { min_ms, max_ms } = self.latency;
        let ms = if max_ms > min_ms {
            min_ms
                + (unit_interval(&seed, u32::MAX - task.attempt) * (max_ms - min_ms + 1) as f64)
                    as u64
        } else {
            min_ms
        };
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.failure_rate > 0.0 && unit_interval(&seed, task.attempt) < self.failure_rate {
            return Err(EngineError::Retryable("simulated upstream failure".into()));
        }
        let out = simulate(task.payload, task.pages);
        Ok(EngineOutput {
            result: out.result,
            extra_credits: i64::from(out.extra_credits),
            usage: None,
        })
    }
}

/// A simulated result: the object served as the task's `result` (as its JSON text), and extra
/// credits to bill (AI Mode `expandProducts`: one per product cluster returned).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimOutput {
    pub(crate) result: crate::engines::ResultText,
    pub(crate) extra_credits: u32,
}

/// A deterministic result with the same shape as the real engine's `result` object for the
/// payload's task type, derived only from the typed payload (and, for `include.html`, the
/// attempt's page links). Every result says it is simulated. Never panics.
pub(crate) fn simulate(payload: &Payload, pages: &PageLinks) -> SimOutput {
    let mut ctx = Ctx::new(payload, pages);
    let mut extra_credits = 0;
    let result = match payload {
        Payload::Chat(ChatEngine::Chatgpt, _) => chatgpt::chatgpt(&mut ctx),
        Payload::Chat(ChatEngine::Gemini, _) => gemini::gemini(&mut ctx),
        Payload::Chat(ChatEngine::Grok, _) => grok::grok(&mut ctx),
        Payload::Chat(ChatEngine::Copilot, _) => copilot::copilot(&mut ctx),
        Payload::Chat(ChatEngine::Perplexity, _) => perplexity::perplexity(&mut ctx),
        Payload::AiMode(_) => aimode::aimode(&mut ctx, &mut extra_credits),
        Payload::Google(_) => google::google(&mut ctx),
        Payload::News(_) => news::google_news(&mut ctx),
    };
    SimOutput {
        result,
        extra_credits,
    }
}

/// [`simulate`] with its result read back as a tree (tests).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimValue {
    pub(crate) result: Value,
    pub(crate) text: crate::engines::ResultText,
    pub(crate) extra_credits: u32,
}

#[cfg(test)]
pub(crate) fn simulate_value(payload: &Payload, pages: &PageLinks) -> SimValue {
    let out = simulate(payload, pages);
    let result = serde_json::from_str(out.result.text()).expect("a simulated result is JSON");
    SimValue {
        result,
        text: out.result,
        extra_credits: out.extra_credits,
    }
}

/// Deterministic pseudo-random decision in [0,1) for failure injection: the same
/// `(seed_text, attempt)` always gives the same value.
pub(crate) fn unit_interval(seed_text: &str, attempt: u32) -> f64 {
    let h = fnv1a(FNV_OFFSET, seed_text.as_bytes());
    let h = fnv1a(h, &attempt.to_le_bytes());
    to_unit(mix(h))
}

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;
