//! The `generateContent` request body (pure, unit-tested without HTTP).
//!
//! Body: `{"contents": [{"role": "user", "parts": [{"text": prompt}]}], "tools":
//! [{"google_search": {}}]}` (ai.google.dev/gemini-api/docs/google-search).
//!
//! Country and state: the Gemini API has **no** request field that sets the searcher's country
//! for Google Search grounding. `toolConfig.retrievalConfig{latLng, languageCode}` exists, but the
//! Gemini API reference documents it for Google Maps results ("so the model returns more relevant
//! and personalized Google Maps results"), and cloro has no country → coordinates table, so
//! nothing is sent: the task's `country`/`state` do not reach the upstream, and the prompt is
//! sent verbatim (no language or region hint is added to it).

use serde_json::{Value, json};

/// The JSON body for `prompt`.
pub(crate) fn body(prompt: &str) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "tools": [{"google_search": {}}]
    })
}

/// `{base}/v1beta/models/{model}:generateContent` (`base` without a trailing slash).
pub(crate) fn url(base: &str, model: &str) -> String {
    format!(
        "{}/v1beta/models/{model}:generateContent",
        base.trim_end_matches('/')
    )
}
