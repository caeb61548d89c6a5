//! The SerpApi-format adapter (`kind = "serpapi"`): GOOGLE, GOOGLE_NEWS and AIMODE through
//! `GET {base_url}/search.json?engine=…&api_key=…` (serpapi.com, or any server speaking its
//! format behind `base_url`).
//!
//! * GOOGLE: `engine=google`, one call per requested page (`start` = 10·(page−1), plus the
//!   url form's own `start`), results merged with continuous positions; when `aioverview` is
//!   requested and the first page holds only `ai_overview.page_token`, one follow-up
//!   `engine=google_ai_overview&page_token=…` at once (the token expires within ~4 minutes).
//!   A later page Google answers with nothing ends the paging.
//! * GOOGLE_NEWS: `engine=google&tbm=nws`, paged the same way.
//! * AIMODE: `engine=google_ai_mode`, one call.
//!
//! Layout: `request.rs` builds the query strings, `normalize.rs` reads replies and maps them
//! onto cloro's shapes (both pure); this file holds the configuration and the HTTP calls.
//!
//! Secrets: the key is SerpApi's `api_key` QUERY parameter, so it is in every request URL.
//! Transport errors are rendered without their URL ([`upstream::send`]), provider messages go
//! through [`upstream::redact`], nothing here logs a URL, and the result is scrubbed of the key
//! before it leaves. SerpApi's echoed `search_parameters` and `search_metadata.json_endpoint`
//! do not carry the key (serpapi.com/search-api, "JSON structure overview") and are not copied
//! into results anyway (none of these task types has `rawResponse`).
//!
//! Credits: no extra credits. The simulator bills AI Mode's `expandProducts` per product
//! cluster in `productResults`; SerpApi's AI Mode answer has no such clusters in this mapping,
//! so `productResults` is absent and nothing extra is billed.

#[cfg(test)]
mod cpu_tests;
mod normalize;
mod request;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::upstream;
use super::{Engine, EngineError, EngineOutput, EngineTask, Usage};
use crate::domain::request::Payload;
use crate::pages::PageLinks;
use normalize::Flags;
use request::Params;

/// One SerpApi-format engine.
#[derive(Debug, Clone)]
pub(crate) struct SerpApiConfig {
    /// e.g. `https://serpapi.com` (the adapter calls `{base_url}/search.json`).
    pub(crate) base_url: String,
    /// The `api_key` query parameter.
    pub(crate) api_key: String,
    /// The time limit of each upstream call.
    pub(crate) timeout: Duration,
    /// The largest reply body read.
    pub(crate) max_body: usize,
}

impl SerpApiConfig {
    pub(crate) fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> SerpApiConfig {
        SerpApiConfig {
            base_url: base_url.into(),
            api_key: api_key.into(),
            timeout: Duration::from_secs(90),
            max_body: upstream::MAX_BODY_BYTES,
        }
    }
}

pub(crate) struct SerpApiEngine {
    cfg: SerpApiConfig,
    search_url: url::Url,
    client: reqwest::Client,
}

impl std::fmt::Debug for SerpApiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerpApiEngine")
            .field("search_url", &self.search_url.as_str())
            .field("api_key", &"[redacted]")
            .finish()
    }
}

impl SerpApiEngine {
    pub(crate) fn new(cfg: SerpApiConfig) -> Result<SerpApiEngine, String> {
        if cfg.api_key.trim().is_empty() {
            return Err("the SerpApi engine needs an API key".into());
        }
        let base = url::Url::parse(cfg.base_url.trim())
            .map_err(|e| format!("invalid SerpApi base URL {:?}: {e}", cfg.base_url))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err(format!(
                "invalid SerpApi base URL {:?}: expected http(s)://host[/path]",
                cfg.base_url
            ));
        }
        let search_url = url::Url::parse(&format!(
            "{}/search.json",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| format!("invalid SerpApi base URL {:?}: {e}", cfg.base_url))?;
        let client = upstream::client(cfg.timeout)?;
        Ok(SerpApiEngine {
            cfg,
            search_url,
            client,
        })
    }

    /// One `search.json` call: the answer, or the error it means (the key never in it).
    /// One `search.json` call; `searches` counts the ones SerpApi answered with a result (the
    /// searches it bills: errors are not charged).
    async fn call(&self, params: &Params, searches: &mut u64) -> Result<Value, EngineError> {
        let mut url = self.search_url.clone();
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .append_pair("api_key", &self.cfg.api_key);
        let reply =
            upstream::send(self.client.get(url), self.cfg.max_body, &self.cfg.api_key).await?;
        // Parsed off the runtime (`cpu`): SerpApi's pages are tens to hundreds of kilobytes.
        let key = self.cfg.api_key.clone();
        let answer = super::cpu::off_runtime(move || normalize::read_reply(reply, &key)).await?;
        *searches += 1;
        Ok(answer)
    }

    /// Every page's answer, stopping at the first page with no results (Google has no more).
    async fn pages(
        &self,
        calls: &[Params],
        results_key: &str,
        searches: &mut u64,
    ) -> Result<Vec<Value>, EngineError> {
        let mut pages = Vec::with_capacity(calls.len());
        for params in calls {
            let page = self.call(params, searches).await?;
            let empty = page
                .get(results_key)
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            pages.push(page);
            if empty {
                break;
            }
        }
        Ok(pages)
    }

    /// The result of `payload` and the searches it took; `links` makes its `html` URLs when
    /// `include.html` asks for them (one per page fetched for GOOGLE and GOOGLE_NEWS, one for
    /// AIMODE). A failure after some searches were answered carries them
    /// ([`EngineError::Billed`]): they were billed.
    pub(crate) async fn run(
        &self,
        payload: &Payload,
        links: &PageLinks,
    ) -> Result<(Value, Usage), EngineError> {
        let mut searches = 0;
        let usage = |searches: u64| Usage {
            searches: Some(searches),
            ..Usage::default()
        };
        match self.run_counted(payload, links, &mut searches).await {
            Ok(v) => Ok((v, usage(searches))),
            Err(e) => Err(EngineError::with_usage(
                e,
                (searches > 0).then(|| usage(searches)),
            )),
        }
    }

    async fn run_counted(
        &self,
        payload: &Payload,
        links: &PageLinks,
        searches: &mut u64,
    ) -> Result<Value, EngineError> {
        let calls = request::calls(payload);
        let mut html = None;
        let mut result = match payload {
            Payload::Google(g) => {
                let inc = g.include.clone().unwrap_or_default();
                let flags = Flags {
                    aioverview: inc.aioverview_enabled(),
                    aioverview_markdown: inc
                        .aioverview
                        .as_ref()
                        .is_some_and(crate::domain::request::Aioverview::markdown),
                    paa_aioverview: inc.paa_aioverview == Some(true),
                    ..Flags::default()
                };
                let pages = self.pages(&calls, "organic_results", searches).await?;
                if inc.html == Some(true) {
                    html = Some(links.urls(pages.len()));
                }
                let follow_up = match pages.first().and_then(normalize::ai_overview_token) {
                    Some(token) if flags.aioverview => {
                        Some(self.call(&request::ai_overview(token), searches).await?)
                    }
                    _ => None,
                };
                normalize::google(&pages, follow_up.as_ref(), flags)
            }
            Payload::News(n) => {
                let pages = self.pages(&calls, "news_results", searches).await?;
                if n.include.as_ref().and_then(|i| i.html) == Some(true) {
                    html = Some(links.urls(pages.len()));
                }
                normalize::news(&pages)
            }
            Payload::AiMode(a) => {
                let flags = Flags {
                    markdown: a.include.as_ref().and_then(|i| i.markdown) == Some(true),
                    ..Flags::default()
                };
                if a.include.as_ref().and_then(|i| i.html) == Some(true) {
                    html = Some(Value::String(links.url(1)));
                }
                let params = calls
                    .first()
                    .ok_or_else(|| EngineError::Retryable("no AI Mode request was built".into()))?;
                normalize::aimode(&self.call(params, searches).await?, flags)
            }
            Payload::Chat(..) => {
                return Err(EngineError::Fatal {
                    code: "ENGINE_NOT_SUPPORTED".into(),
                    message: format!(
                        "the SerpApi engine does not serve {}",
                        payload.task_type().as_str()
                    ),
                });
            }
        };
        if let Some(html) = html {
            result.insert("html".into(), html);
        }
        let mut v = Value::Object(std::mem::take(&mut result));
        normalize::scrub(&mut v, &self.cfg.api_key);
        Ok(v)
    }
}

#[async_trait]
impl Engine for SerpApiEngine {
    /// `GET {base}/account.json?api_key=…`, the Account API: "free of charge, and using it will
    /// not be counted toward your monthly quota" (serpapi.com/account-api). A plan with no
    /// searches left fails the check like a refused key. Its answer echoes the key
    /// (`api_key`), so only the plan's name and counters are read from it.
    async fn check(&self) -> Result<String, EngineError> {
        let mut url = self.search_url.clone();
        let path = self.search_url.path();
        url.set_path(&format!(
            "{}account.json",
            path.strip_suffix("search.json").unwrap_or(path)
        ));
        url.query_pairs_mut()
            .append_pair("api_key", &self.cfg.api_key);
        let secret = &self.cfg.api_key;
        let reply = upstream::send(self.client.get(url), 4 * 1024 * 1024, secret).await?;
        let account = normalize::read_reply(reply, secret)?;
        let plan = account
            .get("plan_name")
            .and_then(Value::as_str)
            .unwrap_or("unknown plan");
        let left = account.get("total_searches_left").and_then(Value::as_i64);
        let per_hour = account
            .get("account_rate_limit_per_hour")
            .and_then(Value::as_i64);
        if left.is_some_and(|n| n <= 0) {
            return Err(EngineError::Unauthorized {
                message: upstream::redact(&format!("{plan}: no searches left"), secret),
            });
        }
        let mut note = plan.to_owned();
        if let Some(n) = left {
            note.push_str(&format!(", {n} searches left"));
        }
        if let Some(n) = per_hour {
            note.push_str(&format!(", {n} per hour"));
        }
        Ok(upstream::redact(&note, secret))
    }

    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let (result, usage) = self.run(task.payload, task.pages).await?;
        // Serialized (and the tree dropped) off the runtime, like the pages were parsed.
        let result = super::cpu::off_runtime(move || super::ResultText::of(&result)).await;
        Ok(EngineOutput {
            result,
            extra_credits: 0,
            usage: Some(usage),
        })
    }
}
