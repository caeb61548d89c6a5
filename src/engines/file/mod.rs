//! The engines file (SPEC §5): which engine runs each task type, read from TOML.
//!
//! ```toml
//! [engines.openai]                 # a name of the operator's choice
//! kind = "openai-responses"        # openai-responses | gemini | serpapi | simulated
//! api_key_env = "OPENAI_API_KEY"   # the key itself never goes in the file
//! model = "gpt-5-mini"
//!
//! [task_types]                     # task types not listed run on the default simulator
//! CHATGPT = "openai"
//! ```
//!
//! [`load`] reads and checks the whole file and builds every engine; any error stops start-up
//! with a message naming the file and the line (`engines.toml:7: unknown key "modle" in
//! [engines.openai]`). Every key, default and error is documented in `docs/ENGINES.md` and
//! shown in `engines.example.toml` at the repository root.
//!
//! Rules chosen here (documented in `docs/ENGINES.md`):
//! * every engine in the file is checked and built, used or not; an engine that no task type
//!   uses is a warning ([`EngineSet::warnings`], also logged), not an error;
//! * `openai-responses`: `provider` may be omitted when the host of `base_url` tells it
//!   (`api.openai.com`, `api.x.ai`, `api.perplexity.ai`, `*.openai.azure.com`,
//!   `*.cognitiveservices.azure.com`, `*.services.ai.azure.com`); with neither `provider` nor
//!   `base_url` the engine is OpenAI's; any other host (a proxy, a local fake) needs
//!   `provider`;
//! * `model` is required for `openai-responses` and `gemini` (no provider documents a default
//!   model, and a silently chosen one would age badly); `serpapi` and `simulated` take none;
//! * Gemini's `base_url` may end in `/v1beta` or not (the adapter adds the version).
//!
//! Secrets: only the NAME of the environment variable is read from the file; its value goes
//! into the adapter and into no message, log line or listing.
//!
//! `cloro engines list|check` ([`cli`]) print what a file configures and check each engine
//! with one cheap real call ([`super::Engine::check`]).

#[cfg(test)]
mod check_tests;
pub mod cli;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::gemini::{GeminiConfig, GeminiEngine};
use super::responses::{Provider, ResponsesConfig, ResponsesEngine};
use super::serpapi::{SerpApiConfig, SerpApiEngine};
use super::{Engine, LatencyRange, SimulatedEngine, upstream};
use crate::domain::types::TaskType;

/// The time limit of one upstream call when the file sets no `timeout_ms`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads one environment variable (`None`: unset). [`process_env`] in production; tests pass
/// their own so they never touch the process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`load`].
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The kind of an engine: which adapter runs it (the file's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    OpenAiResponses,
    Gemini,
    SerpApi,
    Simulated,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [
        Kind::OpenAiResponses,
        Kind::Gemini,
        Kind::SerpApi,
        Kind::Simulated,
    ];

    /// The word the file uses.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::OpenAiResponses => "openai-responses",
            Kind::Gemini => "gemini",
            Kind::SerpApi => "serpapi",
            Kind::Simulated => "simulated",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The task types this kind of engine can run.
    pub(crate) fn serves(self) -> &'static [TaskType] {
        match self {
            Kind::OpenAiResponses => &[
                TaskType::Chatgpt,
                TaskType::Grok,
                TaskType::Perplexity,
                TaskType::Copilot,
            ],
            Kind::Gemini => &[TaskType::Gemini],
            Kind::SerpApi => &[TaskType::Google, TaskType::GoogleNews, TaskType::Aimode],
            Kind::Simulated => &TaskType::ALL,
        }
    }

    /// The keys an engine of this kind takes.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::OpenAiResponses => &[
                "kind",
                "base_url",
                "api_key_env",
                "model",
                "max_in_flight",
                "requests_per_minute",
                "timeout_ms",
                "provider",
                "user_location",
                "web_search_tool",
                "include_sources",
            ],
            Kind::Gemini => &[
                "kind",
                "base_url",
                "api_key_env",
                "model",
                "max_in_flight",
                "requests_per_minute",
                "timeout_ms",
            ],
            Kind::SerpApi => &[
                "kind",
                "base_url",
                "api_key_env",
                "max_in_flight",
                "requests_per_minute",
                "timeout_ms",
            ],
            Kind::Simulated => &[
                "kind",
                "max_in_flight",
                "requests_per_minute",
                "timeout_ms",
                "latency_ms",
                "failure_rate",
            ],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an engines file configures: its engines, and which one runs each task type.
pub(crate) struct EngineSet {
    /// In the order of the file.
    pub(crate) engines: Vec<ConfiguredEngine>,
    /// Indexed like `TaskType::ALL`: the engine (index into `engines`) of each task type; None:
    /// not listed in [task_types] (the caller runs it on the default simulator).
    pub(crate) route: [Option<usize>; 8],
    /// What is allowed but probably a mistake (an engine no task type uses), each naming the
    /// file and the line; [`load`] logs them too.
    pub(crate) warnings: Vec<String>,
}

impl EngineSet {
    /// No engines file: every task type on the default simulator.
    pub(crate) fn empty() -> EngineSet {
        EngineSet {
            engines: Vec::new(),
            route: [None; 8],
            warnings: Vec::new(),
        }
    }

    /// The configured engine of `task_type` (None: the default simulator).
    pub(crate) fn engine_for(&self, task_type: TaskType) -> Option<&ConfiguredEngine> {
        let i = TaskType::ALL.iter().position(|t| *t == task_type)?;
        self.route[i].and_then(|e| self.engines.get(e))
    }
}

impl fmt::Debug for EngineSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineSet")
            .field("engines", &self.engines)
            .field("route", &self.route)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// One engine of the file, built and ready to run.
pub(crate) struct ConfiguredEngine {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// What the adapter sends, e.g. `gpt-5-mini` (None for `serpapi` and `simulated`).
    pub(crate) model: Option<String>,
    /// The base URL in use, defaults applied (None for `simulated`).
    pub(crate) base_url: Option<String>,
    /// The NAME of the variable holding the key (never its value).
    pub(crate) api_key_env: Option<String>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) requests_per_minute: Option<u32>,
    /// `timeout_ms`, default [`DEFAULT_TIMEOUT`].
    pub(crate) timeout: Duration,
    pub(crate) engine: Arc<dyn Engine>,
}

impl fmt::Debug for ConfiguredEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredEngine")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("max_in_flight", &self.max_in_flight)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Reads, checks and builds the engines file at `path`, taking API keys from `env`
/// ([`process_env`] in production). The error names the file and the line; it never holds a
/// key. Warnings are logged and returned in [`EngineSet::warnings`].
pub(crate) fn load(path: &Path, env: Env<'_>) -> Result<EngineSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the engines file {}: {e}", path.display()))?;
    let set = parse(&path.display().to_string(), &text, env)?;
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    Ok(set)
}

/// [`load`] on the text of a file named `file` (used in messages).
pub(crate) fn parse(file: &str, text: &str, env: Env<'_>) -> Result<EngineSet, String> {
    Parser { file, text, env }.run()
}

type Table = BTreeMap<Spanned<String>, Spanned<Value>>;

/// The file's two sections; any other top-level key is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    engines: Option<BTreeMap<Spanned<String>, Spanned<Table>>>,
    #[serde(default)]
    task_types: Option<Table>,
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    env: Env<'a>,
}

/// One engine's table with the position of its name.
struct RawEngine<'t> {
    name: &'t Spanned<String>,
    table: &'t Table,
}

impl RawEngine<'_> {
    fn get(&self, key: &str) -> Option<&Spanned<Value>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    /// `[engines.NAME]`
    fn section(&self) -> String {
        format!("[engines.{}]", self.name.get_ref())
    }
}

impl Parser<'_> {
    /// `file:line: message` for a position in the text.
    fn at(&self, span: Range<usize>, message: impl fmt::Display) -> String {
        let start = span.start.min(self.text.len());
        let line = self.text.as_bytes()[..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("{}:{line}: {message}", self.file)
    }

    fn run(&self) -> Result<EngineSet, String> {
        let raw: RawFile = toml::from_str(self.text).map_err(|e| self.toml_error(&e))?;
        let mut errors = Vec::new();
        let mut raw_engines: Vec<RawEngine<'_>> = raw
            .engines
            .iter()
            .flatten()
            .map(|(name, table)| RawEngine {
                name,
                table: table.get_ref(),
            })
            .collect();
        raw_engines.sort_by_key(|e| e.name.span().start);

        let mut engines = Vec::new();
        // Names defined in the file, valid or not (a task type naming an engine whose own
        // table is wrong is not reported twice).
        let mut kinds: BTreeMap<&str, Option<Kind>> = BTreeMap::new();
        for raw in &raw_engines {
            kinds.insert(raw.name.get_ref(), self.kind_of(raw).ok());
            match self.engine(raw) {
                Ok(e) => engines.push(e),
                Err(e) => errors.push(e),
            }
        }

        let mut route = [None; 8];
        let mut used = BTreeSet::new();
        let mut task_types: Vec<_> = raw.task_types.iter().flatten().collect();
        task_types.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in task_types {
            match self.route(key, value, &kinds) {
                Ok(None) => {}
                Ok(Some((task_type, engine))) => {
                    used.insert(engine.to_owned());
                    if let Some(i) = engines.iter().position(|e| e.name == engine) {
                        let t = TaskType::ALL.iter().position(|t| *t == task_type);
                        if let Some(t) = t {
                            route[t] = Some(i);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let warnings = raw_engines
            .iter()
            .filter(|r| !used.contains(r.name.get_ref().as_str()))
            .map(|r| {
                self.at(
                    r.name.span(),
                    format!(
                        "engine \"{}\" is not used by any task type in [task_types]",
                        r.name.get_ref()
                    ),
                )
            })
            .collect();
        Ok(EngineSet {
            engines,
            route,
            warnings,
        })
    }

    /// A TOML syntax error or a section the file does not have, with its line.
    fn toml_error(&self, e: &toml::de::Error) -> String {
        let message = e.message().trim();
        let message = match message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((key, _)) => format!(
                "unknown key \"{key}\" at the top level: expected [engines.NAME] tables and [task_types]"
            ),
            None => message.replace('\n', "; "),
        };
        match e.span() {
            Some(span) => self.at(span, message),
            None => format!("{}: {message}", self.file),
        }
    }

    fn kind_of(&self, raw: &RawEngine<'_>) -> Result<Kind, String> {
        let expected = Kind::ALL.map(Kind::as_str).join(", ");
        let Some(kind) = raw.get("kind") else {
            return Err(self.at(
                raw.name.span(),
                format!("{} has no kind: expected one of {expected}", raw.section()),
            ));
        };
        let word = kind.get_ref().as_str().ok_or_else(|| {
            self.at(
                kind.span(),
                format!("kind in {} must be a string", raw.section()),
            )
        })?;
        Kind::parse(word).ok_or_else(|| {
            self.at(
                kind.span(),
                format!(
                    "unknown kind \"{word}\" in {}: expected one of {expected}",
                    raw.section()
                ),
            )
        })
    }

    /// Checks one engine's table and builds the engine.
    fn engine(&self, raw: &RawEngine<'_>) -> Result<ConfiguredEngine, String> {
        let name = raw.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.at(
                raw.name.span(),
                format!(
                    "engine name \"{name}\" in {}: use letters, digits, '-' and '_'",
                    raw.section()
                ),
            ));
        }
        let kind = self.kind_of(raw)?;
        let all_keys: BTreeSet<&str> = Kind::ALL.iter().flat_map(|k| k.keys()).copied().collect();
        let mut keys: Vec<_> = raw.table.keys().collect();
        keys.sort_by_key(|k| k.span().start);
        for key in keys {
            let k = key.get_ref().as_str();
            if !kind.keys().contains(&k) {
                let why = if all_keys.contains(k) {
                    format!(
                        "key \"{k}\" does not apply to kind \"{kind}\" in {}; it takes {}",
                        raw.section(),
                        kind.keys().join(", ")
                    )
                } else {
                    format!(
                        "unknown key \"{k}\" in {}; kind \"{kind}\" takes {}",
                        raw.section(),
                        kind.keys().join(", ")
                    )
                };
                return Err(self.at(key.span(), why));
            }
        }
        let max_in_flight = self.limit(raw, "max_in_flight")?;
        let requests_per_minute = self.limit(raw, "requests_per_minute")?;
        let timeout = self
            .limit(raw, "timeout_ms")?
            .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(u64::from(ms)));
        let mut configured = ConfiguredEngine {
            name: name.clone(),
            kind,
            model: None,
            base_url: None,
            api_key_env: None,
            max_in_flight,
            requests_per_minute,
            timeout,
            engine: Arc::new(SimulatedEngine {
                latency: LatencyRange {
                    min_ms: 0,
                    max_ms: 0,
                },
                failure_rate: 0.0,
            }),
        };
        let built = |e: String| {
            self.at(
                raw.name.span(),
                format!("engine \"{name}\": {}", e.replace('\n', " ")),
            )
        };
        match kind {
            Kind::Simulated => {
                let latency = match raw.get("latency_ms") {
                    None => LatencyRange {
                        min_ms: 0,
                        max_ms: 0,
                    },
                    Some(v) => self.latency(raw, v)?,
                };
                let failure_rate = match raw.get("failure_rate") {
                    None => 0.0,
                    Some(v) => {
                        let rate = match v.get_ref() {
                            Value::Float(f) => Some(*f),
                            Value::Integer(i) => Some(*i as f64),
                            _ => None,
                        };
                        match rate {
                            Some(r) if (0.0..=1.0).contains(&r) => r,
                            _ => {
                                return Err(self.at(
                                    v.span(),
                                    format!(
                                        "failure_rate in {} must be a number from 0 to 1",
                                        raw.section()
                                    ),
                                ));
                            }
                        }
                    }
                };
                configured.engine = Arc::new(SimulatedEngine {
                    latency,
                    failure_rate,
                });
            }
            Kind::OpenAiResponses => {
                let base = self.opt_url(raw)?;
                let provider = match raw.get("provider") {
                    Some(v) => {
                        let s = self.string(raw, "provider", v)?;
                        Provider::parse(&s).map_err(|e| {
                            self.at(v.span(), format!("{e} (provider in {})", raw.section()))
                        })?
                    }
                    None => match &base {
                        None => Provider::OpenAi,
                        Some((url, span)) => infer_provider(url).ok_or_else(|| {
                            self.at(
                                span.clone(),
                                format!(
                                    "{}: cannot tell the provider from base_url \"{url}\"; add provider = \"openai\", \"xai\", \"perplexity\" or \"azure\"",
                                    raw.section()
                                ),
                            )
                        })?,
                    },
                };
                let base = match base {
                    Some((url, _)) => url,
                    None => default_responses_base(provider)
                        .ok_or_else(|| {
                            self.at(
                                raw.name.span(),
                                format!(
                                    "{} needs base_url for provider \"azure\" (https://RESOURCE.openai.azure.com/openai/v1)",
                                    raw.section()
                                ),
                            )
                        })?
                        .to_owned(),
                };
                let model = self.required_string(raw, "model", "gpt-5-mini")?;
                let key = self.api_key(raw)?;
                let mut cfg = ResponsesConfig::new(provider, &base, &key, &model);
                cfg.timeout = timeout;
                if let Some(v) = raw.get("user_location") {
                    cfg.user_location = Some(self.boolean(raw, "user_location", v)?);
                }
                if let Some(v) = raw.get("include_sources") {
                    cfg.include_sources = Some(self.boolean(raw, "include_sources", v)?);
                }
                if let Some(v) = raw.get("web_search_tool") {
                    let tool = self.string(raw, "web_search_tool", v)?;
                    if tool.trim().is_empty() {
                        return Err(self.at(
                            v.span(),
                            format!("web_search_tool in {} is empty", raw.section()),
                        ));
                    }
                    cfg.web_search_tool = tool;
                }
                configured.engine = Arc::new(ResponsesEngine::new(cfg).map_err(built)?);
                configured.model = Some(model);
                configured.base_url = Some(base);
                configured.api_key_env = self.env_name(raw);
            }
            Kind::Gemini => {
                let base = self
                    .opt_url(raw)?
                    .map_or_else(|| GEMINI_DEFAULT_BASE.to_owned(), |(url, _)| url);
                let model = self.required_string(raw, "model", "gemini-2.5-flash")?;
                let key = self.api_key(raw)?;
                let root = base.trim_end_matches('/');
                let root = root.strip_suffix("/v1beta").unwrap_or(root);
                let cfg = GeminiConfig {
                    base_url: root.to_owned(),
                    api_key: key,
                    model: model.clone(),
                    timeout,
                    max_body: upstream::MAX_BODY_BYTES,
                };
                configured.engine = Arc::new(GeminiEngine::new(cfg).map_err(built)?);
                configured.model = Some(model);
                configured.base_url = Some(base);
                configured.api_key_env = self.env_name(raw);
            }
            Kind::SerpApi => {
                let base = self
                    .opt_url(raw)?
                    .map_or_else(|| SERPAPI_DEFAULT_BASE.to_owned(), |(url, _)| url);
                let key = self.api_key(raw)?;
                let mut cfg = SerpApiConfig::new(base.clone(), key);
                cfg.timeout = timeout;
                configured.engine = Arc::new(SerpApiEngine::new(cfg).map_err(built)?);
                configured.base_url = Some(base);
                configured.api_key_env = self.env_name(raw);
            }
        }
        Ok(configured)
    }

    fn string(&self, raw: &RawEngine<'_>, key: &str, v: &Spanned<Value>) -> Result<String, String> {
        v.get_ref().as_str().map(str::to_owned).ok_or_else(|| {
            self.at(
                v.span(),
                format!("{key} in {} must be a string", raw.section()),
            )
        })
    }

    fn boolean(&self, raw: &RawEngine<'_>, key: &str, v: &Spanned<Value>) -> Result<bool, String> {
        v.get_ref().as_bool().ok_or_else(|| {
            self.at(
                v.span(),
                format!("{key} in {} must be true or false", raw.section()),
            )
        })
    }

    fn required_string(
        &self,
        raw: &RawEngine<'_>,
        key: &str,
        example: &str,
    ) -> Result<String, String> {
        let Some(v) = raw.get(key) else {
            return Err(self.at(
                raw.name.span(),
                format!("{} needs {key} (e.g. {key} = \"{example}\")", raw.section()),
            ));
        };
        let s = self.string(raw, key, v)?;
        if s.trim().is_empty() {
            return Err(self.at(v.span(), format!("{key} in {} is empty", raw.section())));
        }
        Ok(s.trim().to_owned())
    }

    /// A limit: a whole number from 1 to 4294967295.
    fn limit(&self, raw: &RawEngine<'_>, key: &str) -> Result<Option<u32>, String> {
        let Some(v) = raw.get(key) else {
            return Ok(None);
        };
        match v.get_ref() {
            Value::Integer(i) if *i >= 1 => u32::try_from(*i).map(Some).map_err(|_| {
                self.at(
                    v.span(),
                    format!(
                        "{key} in {} is too large (at most {})",
                        raw.section(),
                        u32::MAX
                    ),
                )
            }),
            Value::Integer(_) => Err(self.at(
                v.span(),
                format!("{key} in {} must be at least 1", raw.section()),
            )),
            _ => Err(self.at(
                v.span(),
                format!("{key} in {} must be a whole number", raw.section()),
            )),
        }
    }

    fn latency(&self, raw: &RawEngine<'_>, v: &Spanned<Value>) -> Result<LatencyRange, String> {
        let parsed = match v.get_ref() {
            Value::Integer(i) if *i >= 0 => Ok(LatencyRange {
                min_ms: *i as u64,
                max_ms: *i as u64,
            }),
            Value::String(s) => s.parse::<LatencyRange>(),
            _ => Err("expected N or \"MIN..MAX\" milliseconds".to_owned()),
        };
        parsed.map_err(|e| self.at(v.span(), format!("latency_ms in {}: {e}", raw.section())))
    }

    /// The file's `base_url`, checked (http or https, a host, no credentials, query or
    /// fragment), without a trailing slash.
    fn opt_url(&self, raw: &RawEngine<'_>) -> Result<Option<(String, Range<usize>)>, String> {
        let Some(v) = raw.get("base_url") else {
            return Ok(None);
        };
        let s = self.string(raw, "base_url", v)?;
        let s = s.trim().trim_end_matches('/').to_owned();
        let bad = |why: &str| {
            self.at(
                v.span(),
                format!("bad base_url \"{s}\" in {}: {why}", raw.section()),
            )
        };
        let url = url::Url::parse(&s).map_err(|e| {
            // The text may hold credentials the operator pasted: not echoed when it cannot be
            // parsed either.
            self.at(v.span(), format!("bad base_url in {}: {e}", raw.section()))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.at(
                v.span(),
                format!(
                    "bad base_url in {}: credentials do not belong in the URL (use api_key_env)",
                    raw.section()
                ),
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("expected an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        Ok(Some((s, v.span())))
    }

    fn env_name(&self, raw: &RawEngine<'_>) -> Option<String> {
        raw.get("api_key_env")
            .and_then(|v| v.get_ref().as_str())
            .map(|s| s.trim().to_owned())
    }

    /// The key, from the variable `api_key_env` names (which must be set and not empty).
    fn api_key(&self, raw: &RawEngine<'_>) -> Result<String, String> {
        let Some(v) = raw.get("api_key_env") else {
            return Err(self.at(
                raw.name.span(),
                format!(
                    "{} needs api_key_env, the name of the environment variable holding the key",
                    raw.section()
                ),
            ));
        };
        let name = self.string(raw, "api_key_env", v)?;
        let name = name.trim();
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(self.at(
                v.span(),
                format!(
                    "api_key_env in {} must name an environment variable",
                    raw.section()
                ),
            ));
        }
        match (self.env)(name) {
            None => Err(self.at(
                v.span(),
                format!(
                    "the environment variable {name} (api_key_env in {}) is not set",
                    raw.section()
                ),
            )),
            Some(key) if key.trim().is_empty() => Err(self.at(
                v.span(),
                format!(
                    "the environment variable {name} (api_key_env in {}) is empty",
                    raw.section()
                ),
            )),
            Some(key) => Ok(key.trim().to_owned()),
        }
    }

    /// One `[task_types]` line: `Ok(None)` when it names an engine whose own table is wrong
    /// (already reported).
    fn route<'k>(
        &self,
        key: &Spanned<String>,
        value: &'k Spanned<Value>,
        kinds: &BTreeMap<&str, Option<Kind>>,
    ) -> Result<Option<(TaskType, &'k str)>, String> {
        let word = key.get_ref();
        let Some(task_type) = TaskType::parse(word) else {
            let valid = TaskType::ALL.map(TaskType::as_str).join(", ");
            let hint = TaskType::parse(&word.to_ascii_uppercase())
                .map(|t| format!(" (task types are upper case: {})", t.as_str()))
                .unwrap_or_default();
            return Err(self.at(
                key.span(),
                format!(
                    "unknown task type \"{word}\" in [task_types]{hint}: expected one of {valid}"
                ),
            ));
        };
        let Some(engine) = value.get_ref().as_str() else {
            return Err(self.at(
                value.span(),
                format!("{word} in [task_types] must name an engine (a string)"),
            ));
        };
        let Some(kind) = kinds.get(engine) else {
            let defined: Vec<&str> = kinds.keys().copied().collect();
            let defined = if defined.is_empty() {
                "no engine is defined".to_owned()
            } else {
                format!("defined: {}", defined.join(", "))
            };
            return Err(self.at(
                value.span(),
                format!("{word} in [task_types] names engine \"{engine}\", which is not defined ({defined})"),
            ));
        };
        let Some(kind) = kind else {
            return Ok(None);
        };
        if !kind.serves().contains(&task_type) {
            let serves = kind.serves().iter().map(|t| t.as_str()).collect::<Vec<_>>();
            return Err(self.at(
                value.span(),
                format!(
                    "{word} in [task_types]: engine \"{engine}\" (kind {kind}) cannot serve {word}; {kind} serves {}",
                    serves.join(", ")
                ),
            ));
        }
        Ok(Some((task_type, engine)))
    }
}

/// Gemini's documented API root (the adapter adds `/models/{model}:generateContent`).
pub(crate) const GEMINI_DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";
/// SerpApi's documented host (the adapter adds `/search.json`).
pub(crate) const SERPAPI_DEFAULT_BASE: &str = "https://serpapi.com";

/// The documented base of each Responses provider (Azure's is per resource: none).
fn default_responses_base(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::OpenAi => Some("https://api.openai.com/v1"),
        Provider::Xai => Some("https://api.x.ai/v1"),
        Provider::Perplexity => Some("https://api.perplexity.ai/v1"),
        Provider::AzureOpenAi => None,
    }
}

/// The provider a Responses base URL's host names, if it is one of the documented ones.
fn infer_provider(base: &str) -> Option<Provider> {
    let url = url::Url::parse(base).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    match host.as_str() {
        "api.openai.com" => Some(Provider::OpenAi),
        "api.x.ai" => Some(Provider::Xai),
        "api.perplexity.ai" => Some(Provider::Perplexity),
        h if h.ends_with(".openai.azure.com")
            || h.ends_with(".cognitiveservices.azure.com")
            || h.ends_with(".services.ai.azure.com") =>
        {
            Some(Provider::AzureOpenAi)
        }
        _ => None,
    }
}
