//! The Gemini adapter (`kind = "gemini"`): GEMINI tasks answered by the Gemini API's
//! `generateContent` with Google Search grounding.
//!
//! * [`request`]: the request body and URL (`POST {base}/v1beta/models/{model}:generateContent`,
//!   the key in the `x-goog-api-key` header, never in the URL);
//! * [`normalize`]: the answer → the cloro GEMINI result, and Gemini's error bodies → error
//!   kinds (the field mapping and the choices are documented there).
//!
//! Not wired into `cloro serve` yet (issue 10): the engines file, limits and pauses come next.

#[cfg(test)]
mod cpu_tests;
#[cfg(test)]
mod golden;
mod normalize;
mod request;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;

use super::upstream;
use super::{Engine, EngineError, EngineOutput, EngineTask};
use crate::domain::request::{ChatEngine, Payload};

/// One Gemini engine's configuration (from the engines file).
#[derive(Clone)]
pub(crate) struct GeminiConfig {
    /// API root, e.g. `https://generativelanguage.googleapis.com` (the engines file's default;
    /// a compatible proxy works too).
    pub(crate) base_url: String,
    /// The API key value (sent as `x-goog-api-key`).
    pub(crate) api_key: String,
    /// Model id, e.g. `gemini-2.5-flash` (a leading `models/` is accepted).
    pub(crate) model: String,
    /// Time limit of one whole call.
    pub(crate) timeout: Duration,
    /// Largest answer body read ([`upstream::MAX_BODY_BYTES`] by default).
    pub(crate) max_body: usize,
}

impl std::fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

pub(crate) struct GeminiEngine {
    url: String,
    api_key: String,
    max_body: usize,
    client: reqwest::Client,
}

impl GeminiEngine {
    /// Checks the configuration (an http(s) base URL, a key, a plain model id, a non-zero
    /// timeout and body cap) and builds the client.
    pub(crate) fn new(cfg: GeminiConfig) -> Result<GeminiEngine, String> {
        let base = cfg.base_url.trim().trim_end_matches('/');
        let parsed = url::Url::parse(base).map_err(|e| format!("gemini: bad base_url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err("gemini: base_url must be an http(s) URL with a host".into());
        }
        let api_key = cfg.api_key.trim().to_owned();
        if api_key.is_empty() {
            return Err("gemini: api_key is empty".into());
        }
        if api_key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("gemini: api_key contains whitespace or control characters".into());
        }
        let model = cfg.model.trim();
        let model = model.strip_prefix("models/").unwrap_or(model);
        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "gemini: model must be a plain model id such as gemini-2.5-flash, got {model:?}"
            ));
        }
        if cfg.timeout.is_zero() {
            return Err("gemini: timeout must be above zero".into());
        }
        if cfg.max_body == 0 {
            return Err("gemini: max_body must be above zero".into());
        }
        Ok(GeminiEngine {
            url: request::url(base, model),
            api_key,
            max_body: cfg.max_body,
            client: upstream::client(cfg.timeout)?,
        })
    }
}

#[async_trait]
impl Engine for GeminiEngine {
    /// `GET {base}/v1beta/models/{model}`, "models.get" (free; no tokens): it proves the key
    /// (an invalid one is a 400 `API_KEY_INVALID`, read as a refused key) and that the model
    /// exists — ai.google.dev/api/rest/v1beta/models/get.
    async fn check(&self) -> Result<String, EngineError> {
        let url = self
            .url
            .strip_suffix(":generateContent")
            .unwrap_or(&self.url);
        let req = self.client.get(url).header("x-goog-api-key", &self.api_key);
        let reply = upstream::send(req, 4 * 1024 * 1024, &self.api_key).await?;
        if !reply.status.is_success() {
            return Err(normalize::error(
                reply.status,
                &reply.headers,
                &reply.body,
                &self.api_key,
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| {
            EngineError::Retryable(format!("the upstream's answer is not JSON: {e}"))
        })?;
        let name = json
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("the model");
        Ok(upstream::redact(
            &format!("{name} is available"),
            &self.api_key,
        ))
    }

    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let Payload::Chat(ChatEngine::Gemini, p) = task.payload else {
            return Err(EngineError::Fatal {
                code: "INTERNAL_SERVER_ERROR".into(),
                message: format!(
                    "the Gemini engine serves GEMINI tasks, not {}",
                    task.task_type.as_str()
                ),
            });
        };
        let on = |f: Option<bool>| f == Some(true);
        let opts = p
            .include
            .as_ref()
            .map_or_else(normalize::Options::default, |i| normalize::Options {
                markdown: on(i.markdown),
                html: on(i.html),
                raw_response: on(i.raw_response),
                search_queries: on(i.search_queries),
            });
        let req = self
            .client
            .post(&self.url)
            .header("x-goog-api-key", &self.api_key)
            .json(&request::body(&p.prompt));
        let reply = upstream::send(req, self.max_body, &self.api_key).await?;
        if !reply.status.is_success() {
            return Err(normalize::error(
                reply.status,
                &reply.headers,
                &reply.body,
                &self.api_key,
            ));
        }
        // Parsed off the runtime (`cpu`): the closure owns what it reads.
        let (pages, key) = (task.pages.clone(), self.api_key.clone());
        let (result, usage) = super::cpu::off_runtime(move || {
            normalize::normalize(&reply.body, opts, &pages, &key)
                .map(|(result, usage)| (super::ResultText::of(&result), usage))
        })
        .await?;
        Ok(EngineOutput {
            result,
            extra_credits: 0,
            usage,
        })
    }
}
