//! The chat engine family: CHATGPT, GEMINI, GROK, COPILOT and PERPLEXITY (reference
//! §5.1–§5.5). One payload shape (`prompt`, `country`, `state`, `include`; ChatGPT adds
//! `legacy` and `disableWebSearch` and four more include flags), its validation and its typed
//! form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::countries::{self, CountryModel};
use super::super::types::TaskType;
use super::payload::{Payload, put_opt_bool, put_opt_str, put_str};
use super::pricing;
use super::validator::{Flags, Validator, country_problem, expected};

const CHATGPT_FIELDS: &[&str] = &[
    "prompt",
    "country",
    "include",
    "legacy",
    "disableWebSearch",
    "state",
];
const CHATGPT_INCLUDE: &[&str] = &[
    "html",
    "markdown",
    "rawResponse",
    "searchQueries",
    "ads",
    "shopping",
];
const LLM_FIELDS: &[&str] = &["prompt", "country", "include", "state"];
const LLM_INCLUDE: &[&str] = &["html", "markdown", "rawResponse"];

/// Which chat engine a [`ChatPayload`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ChatEngine {
    Chatgpt,
    Gemini,
    Grok,
    Copilot,
    Perplexity,
}

impl ChatEngine {
    pub(crate) fn task_type(self) -> TaskType {
        match self {
            ChatEngine::Chatgpt => TaskType::Chatgpt,
            ChatEngine::Gemini => TaskType::Gemini,
            ChatEngine::Grok => TaskType::Grok,
            ChatEngine::Copilot => TaskType::Copilot,
            ChatEngine::Perplexity => TaskType::Perplexity,
        }
    }

    /// The chat engine of `task_type`, `None` for the Google family.
    pub(crate) fn of(task_type: TaskType) -> Option<ChatEngine> {
        match task_type {
            TaskType::Chatgpt => Some(ChatEngine::Chatgpt),
            TaskType::Gemini => Some(ChatEngine::Gemini),
            TaskType::Grok => Some(ChatEngine::Grok),
            TaskType::Copilot => Some(ChatEngine::Copilot),
            TaskType::Perplexity => Some(ChatEngine::Perplexity),
            TaskType::Aimode | TaskType::Google | TaskType::GoogleNews => None,
        }
    }

    /// The engine's country list.
    fn country_model(self) -> CountryModel {
        match self {
            ChatEngine::Chatgpt => CountryModel::Chatgpt,
            ChatEngine::Gemini => CountryModel::Gemini,
            ChatEngine::Grok => CountryModel::Grok,
            ChatEngine::Copilot => CountryModel::Copilot,
            ChatEngine::Perplexity => CountryModel::Perplexity,
        }
    }
}

/// A validated chat payload (stored as `{prompt, country, state?, include?, legacy?,
/// disableWebSearch?}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatPayload {
    /// Trimmed, 1–10,000 characters.
    pub(crate) prompt: String,
    /// Uppercase ISO code, allowed for the engine.
    pub(crate) country: String,
    /// Uppercase US state code (only with country `US`; costs 2 credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) include: Option<ChatInclude>,
    /// ChatGPT only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) legacy: Option<bool>,
    /// ChatGPT only: answer without searching the web.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) disable_web_search: Option<bool>,
}

/// The `include` flags a chat request sent (the last three and `searchQueries` are ChatGPT's
/// only). A flag left out is `None`; [`ChatInclude::on`] reads one as a plain boolean.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatInclude {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) html: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) markdown: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) raw_response: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) search_queries: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ads: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shopping: Option<bool>,
}

impl ChatInclude {
    fn from_flags(f: &Flags) -> ChatInclude {
        ChatInclude {
            html: f.get("html"),
            markdown: f.get("markdown"),
            raw_response: f.get("rawResponse"),
            search_queries: f.get("searchQueries"),
            ads: f.get("ads"),
            shopping: f.get("shopping"),
        }
    }

    /// `true` when the flag was sent as `true`.
    pub(crate) fn on(flag: Option<bool>) -> bool {
        flag == Some(true)
    }

    fn into_map(self) -> Map<String, Value> {
        let mut out = Map::new();
        put_opt_bool(&mut out, "html", self.html);
        put_opt_bool(&mut out, "markdown", self.markdown);
        put_opt_bool(&mut out, "rawResponse", self.raw_response);
        put_opt_bool(&mut out, "searchQueries", self.search_queries);
        put_opt_bool(&mut out, "ads", self.ads);
        put_opt_bool(&mut out, "shopping", self.shopping);
        out
    }
}

impl ChatPayload {
    pub(super) fn into_map(self) -> Map<String, Value> {
        let mut out = Map::new();
        put_str(&mut out, "prompt", self.prompt);
        put_str(&mut out, "country", self.country);
        put_opt_str(&mut out, "state", self.state);
        if let Some(include) = self.include {
            out.insert("include".into(), Value::Object(include.into_map()));
        }
        put_opt_bool(&mut out, "legacy", self.legacy);
        put_opt_bool(&mut out, "disableWebSearch", self.disable_web_search);
        out
    }
}

impl Validator<'_> {
    /// A chat engine's payload and its price.
    pub(super) fn chat(
        &mut self,
        obj: &Map<String, Value>,
        engine: ChatEngine,
    ) -> Option<(Payload, u32)> {
        let chatgpt = engine == ChatEngine::Chatgpt;
        let (fields, flags) = if chatgpt {
            (CHATGPT_FIELDS, CHATGPT_INCLUDE)
        } else {
            (LLM_FIELDS, LLM_INCLUDE)
        };
        self.unknown(obj, fields);
        let prompt = self.prompt(obj);
        let country = self.llm_country(obj, engine.country_model());
        let include = self.include(obj, flags);
        let state = self.state(obj);
        let mut legacy = Ok(None);
        let mut disable_web_search = Ok(None);
        if chatgpt {
            legacy = self.opt_bool(obj.get("legacy"), "legacy");
            disable_web_search = self.opt_bool(obj.get("disableWebSearch"), "disableWebSearch");
        }
        let (prompt, country, include, state, legacy, disable_web_search) =
            match (prompt, country, include, state, legacy, disable_web_search) {
                (Some(p), Some(c), Ok(i), Ok(s), Ok(l), Ok(d)) => (p, c, i, s, l, d),
                _ => return None,
            };
        let payload = ChatPayload {
            prompt,
            country,
            state,
            include: include.as_ref().map(ChatInclude::from_flags),
            legacy,
            disable_web_search,
        };
        let credits = pricing::chat(engine, &payload);
        Some((Payload::Chat(engine, payload), credits))
    }

    /// `country` for the five LLM engines: required, uppercase, allowed for `model`.
    fn llm_country(&mut self, obj: &Map<String, Value>, model: CountryModel) -> Option<String> {
        match obj.get("country") {
            Some(Value::String(code)) => match country_problem(code, model) {
                Some(msg) => {
                    self.err("country", msg);
                    None
                }
                None => Some(code.clone()),
            },
            other => {
                self.err("country", expected("string", other));
                None
            }
        }
    }

    /// `state` (LLM engines): only with country US, a code of `US_STATES`. `Ok(None)` when
    /// absent.
    fn state(&mut self, obj: &Map<String, Value>) -> Result<Option<String>, ()> {
        let Some(state) = self.opt_str(obj, "state")? else {
            return Ok(None);
        };
        let country = match obj.get("country") {
            Some(Value::String(c)) => c.to_uppercase(),
            _ => String::new(),
        };
        if country != "US" {
            let shown = if country.is_empty() {
                "(none)"
            } else {
                country.as_str()
            };
            self.err(
                "state",
                format!("`state` is not supported for country {shown}."),
            );
            return Err(());
        }
        let code = state.to_uppercase();
        if !countries::is_us_state(&code) {
            self.err(
                "state",
                format!(
                    "Invalid `state` for {country}. Use a code from `GET /v1/states?country={country}`."
                ),
            );
            return Err(());
        }
        Ok(Some(code))
    }
}
