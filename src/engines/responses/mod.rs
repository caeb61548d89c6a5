//! The Responses-format adapter (`kind = "openai-responses"`): one HTTP call to
//! `POST {base_url}/responses` with the `web_search` tool, normalised into the cloro result of
//! the task's chat engine. One adapter, four providers (reference `engines.md`):
//!
//! | task type  | provider                                | auth header             |
//! |------------|-----------------------------------------|-------------------------|
//! | CHATGPT    | OpenAI (`https://api.openai.com/v1`)     | `Authorization: Bearer` |
//! | GROK       | xAI (`https://api.x.ai/v1`)              | `Authorization: Bearer` |
//! | PERPLEXITY | Perplexity Agent API (`https://api.perplexity.ai/v1`, `/v1/responses` is the documented alias of `/v1/agent`) | `Authorization: Bearer` |
//! | COPILOT    | Azure OpenAI v1 (`https://{resource}.openai.azure.com/openai/v1`) | `api-key` |
//!
//! COPILOT: Microsoft publishes no API that returns Copilot's answers. Azure OpenAI's Responses
//! API with web search (Bing grounding) is the documented stand-in, and the result's `model`
//! names the model that actually answered (the deployment's `response.model`), never "copilot".
//!
//! Layout: this file holds the configuration, the engine and the HTTP exchange;
//! [`request`] builds the body (pure), [`normalize`] reads the provider's answer and shapes the
//! cloro result (pure); `tests.rs` drives both on fixtures and through a local fake upstream.

#[cfg(test)]
mod golden;
mod normalize;
mod request;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::upstream::{self, Reply};
use super::{Engine, EngineError, EngineOutput, EngineTask};
use crate::domain::request::{ChatEngine, Payload};

/// The chat payload fields this adapter reads (the typed chat payload, flattened).
#[derive(Debug, Clone, Default)]
pub(crate) struct Chat<'a> {
    pub(crate) prompt: &'a str,
    pub(crate) country: &'a str,
    pub(crate) state: Option<&'a str>,
    pub(crate) disable_web_search: bool,
    pub(crate) markdown: bool,
    /// `include.html`: link the result page cloro renders from the answer.
    pub(crate) html: bool,
    pub(crate) raw_response: bool,
    pub(crate) search_queries: bool,
    pub(crate) shopping: bool,
    pub(crate) ads: bool,
}

impl<'a> Chat<'a> {
    /// The include flags alone, without the payload's text (all that shaping an answer reads),
    /// free of the payload's lifetime.
    pub(crate) fn flags(&self) -> Chat<'static> {
        Chat {
            disable_web_search: self.disable_web_search,
            markdown: self.markdown,
            html: self.html,
            raw_response: self.raw_response,
            search_queries: self.search_queries,
            shopping: self.shopping,
            ads: self.ads,
            ..Chat::default()
        }
    }

    /// The chat engine and fields of a chat payload (`None` for the Google family).
    pub(crate) fn of(payload: &'a Payload) -> Option<(ChatEngine, Chat<'a>)> {
        let Payload::Chat(engine, p) = payload else {
            return None;
        };
        let on = |f: Option<bool>| f == Some(true);
        let inc = p.include.as_ref();
        Some((
            *engine,
            Chat {
                prompt: &p.prompt,
                country: &p.country,
                state: p.state.as_deref(),
                disable_web_search: on(p.disable_web_search),
                markdown: on(inc.and_then(|i| i.markdown)),
                html: on(inc.and_then(|i| i.html)),
                raw_response: on(inc.and_then(|i| i.raw_response)),
                search_queries: on(inc.and_then(|i| i.search_queries)),
                shopping: on(inc.and_then(|i| i.shopping)),
                ads: on(inc.and_then(|i| i.ads)),
            },
        ))
    }
}

/// Which service speaks the Responses format behind `base_url`: it decides the auth header and
/// the request's provider-specific fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Xai,
    Perplexity,
    AzureOpenAi,
}

impl Provider {
    /// `openai`, `xai`, `perplexity`, `azure` (the engines file's `provider` key).
    pub(crate) fn parse(s: &str) -> Result<Provider, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Provider::OpenAi),
            "xai" | "grok" => Ok(Provider::Xai),
            "perplexity" => Ok(Provider::Perplexity),
            "azure" | "azure-openai" => Ok(Provider::AzureOpenAi),
            other => Err(format!(
                "unknown Responses provider {other:?}: expected openai, xai, perplexity or azure"
            )),
        }
    }

    /// Whether the provider documents `user_location` on its `web_search` tool (OpenAI, Azure
    /// and Perplexity do; xAI documents none, so it is not sent there unless the
    /// configuration says so).
    fn documents_user_location(self) -> bool {
        !matches!(self, Provider::Xai)
    }

    /// Whether the provider documents `include: ["web_search_call.action.sources"]`.
    fn documents_include_sources(self) -> bool {
        matches!(self, Provider::OpenAi | Provider::AzureOpenAi)
    }
}

/// The configuration of one Responses-format engine.
#[derive(Debug, Clone)]
pub(crate) struct ResponsesConfig {
    pub(crate) provider: Provider,
    /// Up to and including the API version segment, e.g. `https://api.openai.com/v1`; the
    /// adapter appends `/responses`.
    pub(crate) base_url: String,
    /// The key's value (read from `api_key_env` by the engines file loader).
    pub(crate) api_key: String,
    /// e.g. `gpt-5-mini`, `grok-4`, `perplexity/sonar`, or the Azure deployment name.
    pub(crate) model: String,
    /// The whole exchange (connect, answer, body).
    pub(crate) timeout: Duration,
    /// Largest answer body read ([`upstream::MAX_BODY_BYTES`] by default).
    pub(crate) max_body_bytes: usize,
    /// Send `user_location` (from the payload's `country`/`state`) on the `web_search` tool;
    /// `None`: only where the provider documents it (OpenAI, Azure, Perplexity).
    pub(crate) user_location: Option<bool>,
    /// The search tool's `type` (`web_search`; Azure deployments that only know the preview
    /// tool: `web_search_preview`).
    pub(crate) web_search_tool: String,
    /// Ask for every consulted URL with `include: ["web_search_call.action.sources"]`; `None`:
    /// where the provider documents it (OpenAI, Azure).
    pub(crate) include_sources: Option<bool>,
}

impl ResponsesConfig {
    /// A configuration with the defaults (120 s timeout, 32 MiB body cap, `user_location` per
    /// provider).
    pub(crate) fn new(provider: Provider, base_url: &str, api_key: &str, model: &str) -> Self {
        ResponsesConfig {
            provider,
            base_url: base_url.to_owned(),
            api_key: api_key.to_owned(),
            model: model.to_owned(),
            timeout: Duration::from_secs(120),
            max_body_bytes: upstream::MAX_BODY_BYTES,
            user_location: None,
            web_search_tool: "web_search".into(),
            include_sources: None,
        }
    }
}

/// A Responses-format engine: one provider, one model.
pub(crate) struct ResponsesEngine {
    cfg: ResponsesConfig,
    url: String,
    client: reqwest::Client,
    /// The request's auth header, built once (marked sensitive).
    auth: (reqwest::header::HeaderName, HeaderValue),
}

impl std::fmt::Debug for ResponsesEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponsesEngine")
            .field("provider", &self.cfg.provider)
            .field("url", &self.url)
            .field("model", &self.cfg.model)
            .finish_non_exhaustive()
    }
}

impl ResponsesEngine {
    pub(crate) fn new(cfg: ResponsesConfig) -> Result<ResponsesEngine, String> {
        let base = cfg.base_url.trim().trim_end_matches('/');
        let parsed =
            reqwest::Url::parse(base).map_err(|e| format!("invalid base_url {base:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "invalid base_url {base:?}: expected an http(s) URL"
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "invalid base_url {base:?}: no query or fragment allowed"
            ));
        }
        if cfg.api_key.trim().is_empty() {
            return Err("the API key is empty".into());
        }
        if cfg.model.trim().is_empty() {
            return Err("the model is empty".into());
        }
        if cfg.timeout.is_zero() {
            return Err("the timeout must be above zero".into());
        }
        if cfg.web_search_tool.trim().is_empty() {
            return Err("the web search tool type is empty".into());
        }
        if cfg.max_body_bytes == 0 {
            return Err("the body cap must be above zero".into());
        }
        let auth = match cfg.provider {
            Provider::AzureOpenAi => (
                reqwest::header::HeaderName::from_static("api-key"),
                HeaderValue::from_str(cfg.api_key.trim()),
            ),
            _ => (
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {}", cfg.api_key.trim())),
            ),
        };
        let (name, value) = auth;
        let mut value =
            value.map_err(|_| "the API key holds characters a header cannot carry".to_owned())?;
        value.set_sensitive(true);
        let client = upstream::client(cfg.timeout)?;
        Ok(ResponsesEngine {
            url: format!("{base}/responses"),
            cfg,
            client,
            auth: (name, value),
        })
    }

    /// One call: the request for `payload`; the body of a 2xx answer, else the error kind its
    /// status and error body say.
    async fn call(&self, body: &Value) -> Result<Reply, EngineError> {
        let secret = self.cfg.api_key.trim();
        let req = self
            .client
            .post(&self.url)
            .header(self.auth.0.clone(), self.auth.1.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).map_err(|e| EngineError::Fatal {
                code: "INTERNAL_SERVER_ERROR".into(),
                message: format!("cannot encode the request: {e}"),
            })?);
        let reply = upstream::send(req, self.cfg.max_body_bytes, secret).await?;
        if !reply.status.is_success() {
            return Err(normalize::classify_error(&reply, secret));
        }
        Ok(reply)
    }
}

/// The provider's JSON answer, or the error kind its status and error body say.
pub(super) fn read_reply(reply: &Reply, secret: &str) -> Result<Value, EngineError> {
    if !reply.status.is_success() {
        return Err(normalize::classify_error(reply, secret));
    }
    normalize::json_object(&reply.body)
}

/// Largest answer read by [`ResponsesEngine::check`] (a model list).
const CHECK_MAX_BODY: usize = 4 * 1024 * 1024;

impl ResponsesEngine {
    /// `{base_url}/{segments…}`, each segment escaped (model ids may hold `/`).
    fn endpoint(&self, segments: &[&str]) -> Result<reqwest::Url, EngineError> {
        let base = self.url.strip_suffix("/responses").unwrap_or(&self.url);
        let mut url = reqwest::Url::parse(base).map_err(|e| EngineError::Fatal {
            code: "INTERNAL_SERVER_ERROR".into(),
            message: format!("invalid base_url: {e}"),
        })?;
        url.path_segments_mut()
            .map_err(|()| EngineError::Fatal {
                code: "INTERNAL_SERVER_ERROR".into(),
                message: "the base_url cannot take a path".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// The cheapest documented call that proves the key, per provider:
    /// * OpenAI: `GET {base}/models/{model}`, "Retrieve model" (free; 401 for a wrong key, 404
    ///   for a model the key cannot use) — developers.openai.com/api/reference/resources/models/methods/retrieve;
    /// * xAI: `GET {base}/models/{model_id}`, "Get model" (free) —
    ///   docs.x.ai/developers/rest-api-reference/inference/models;
    /// * Azure OpenAI v1: `GET {endpoint}/openai/v1/models`, "List models" (free; the configured
    ///   model is a deployment name, which that list does not hold, so only the key and the
    ///   resource are proven) — learn.microsoft.com/rest/api/microsoft-foundry/azureopenai/models;
    /// * Perplexity: its `GET /v1/models` is documented without authentication (`security: []`
    ///   in docs.perplexity.ai/api-reference/models-get), so it cannot prove a key: the smallest
    ///   real call instead, `POST {base}/responses` with `input: "ping"`, no tool (no search
    ///   fee) and `max_output_tokens: 16` (a field of the Agent API's request, per
    ///   perplexityai/perplexity-py `response_create_params.py`) — a few tokens are billed.
    async fn check_call(&self) -> Result<String, EngineError> {
        let secret = self.cfg.api_key.trim();
        let model = self.cfg.model.trim();
        let auth = (self.auth.0.clone(), self.auth.1.clone());
        match self.cfg.provider {
            Provider::OpenAi | Provider::Xai => {
                let url = self.endpoint(&["models", model])?;
                let req = self.client.get(url).header(auth.0, auth.1);
                let reply = upstream::send(req, CHECK_MAX_BODY, secret).await?;
                let json = read_reply(&reply, secret)?;
                let id = json.get("id").and_then(Value::as_str).unwrap_or(model);
                Ok(upstream::redact(
                    &format!("model {id} is available"),
                    secret,
                ))
            }
            Provider::AzureOpenAi => {
                let url = self.endpoint(&["models"])?;
                let req = self.client.get(url).header(auth.0, auth.1);
                let reply = upstream::send(req, CHECK_MAX_BODY, secret).await?;
                let json = read_reply(&reply, secret)?;
                let n = json
                    .get("data")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                Ok(format!(
                    "the key is accepted ({n} models listed; deployment {model} not checked)"
                ))
            }
            Provider::Perplexity => {
                let url = self.endpoint(&["responses"])?;
                let body = serde_json::json!({
                    "model": model,
                    "input": "ping",
                    "max_output_tokens": 16,
                });
                let req = self
                    .client
                    .post(url)
                    .header(auth.0, auth.1)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
                let reply = upstream::send(req, CHECK_MAX_BODY, secret).await?;
                let json = read_reply(&reply, secret)?;
                let answered = json.get("model").and_then(Value::as_str).unwrap_or(model);
                Ok(upstream::redact(
                    &format!("model {answered} answered a 16-token test call"),
                    secret,
                ))
            }
        }
    }
}

#[async_trait]
impl Engine for ResponsesEngine {
    async fn check(&self) -> Result<String, EngineError> {
        self.check_call().await
    }

    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let unsupported = || EngineError::Fatal {
            code: "ENGINE_NOT_SUPPORTED".into(),
            message: format!(
                "the Responses-format engine does not serve {}",
                task.task_type.as_str()
            ),
        };
        let (engine, payload) = Chat::of(task.payload).ok_or_else(unsupported)?;
        let shape = normalize::Shape::of(engine).ok_or_else(unsupported)?;
        let provider = self.cfg.provider;
        let opts = request::Options {
            provider,
            model: &self.cfg.model,
            tool: &self.cfg.web_search_tool,
            user_location: self
                .cfg
                .user_location
                .unwrap_or(provider.documents_user_location()),
            include_sources: self
                .cfg
                .include_sources
                .unwrap_or(provider.documents_include_sources()),
        };
        let body = request::body(&opts, &payload);
        let reply = self.call(&body).await?;
        // Parsed off the runtime (`cpu`): the closure owns what it reads.
        let (flags, pages) = (payload.flags(), task.pages.clone());
        let secret = self.cfg.api_key.trim().to_owned();
        let (result, usage) = super::cpu::off_runtime(move || {
            normalize::answer(&reply.body, shape, &flags, &pages, &secret)
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
