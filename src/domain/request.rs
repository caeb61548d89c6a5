//! Parsing and validation of one async task request (`BatchTaskRequest`, reference §1.5; also
//! used for every item of a batch) and of an engine payload alone (the sync `/v1/monitor/*`
//! bodies, reference §5.1–§5.8), plus the price of the task (reference §5.9, SPEC §3 decisions
//! 6 and 7).
//!
//! Every invalid field is reported (not only the first one), as a [`FieldError`] whose `field` is
//! a dotted path (`taskType`, `payload.country`, `payload.include.html`, `webhook.url`). Messages
//! follow the public API (its zod schemas) where it publishes them, and zod's default wording
//! otherwise (`Invalid input: expected string, received undefined`, `Too big: expected number to
//! be <=10`, `Unrecognized key "foo"`).
//!
//! Choices made where the reference is silent (strict and explicit):
//! - Unknown keys are rejected at every level (SPEC §3 decision 14): top level, `payload`,
//!   `payload.include`, Google's `payload.include.aioverview` object and `webhook`; one error per
//!   unknown key, at the key's own path.
//! - A body (or batch item) that is not a JSON object gives a single error with the empty path
//!   `""` (the root).
//! - An invalid or missing `taskType` gives one message listing the allowed values; the payload
//!   is then only checked for being an object (its schema depends on the task type).
//! - A missing or non-string `prompt`/`query` gets the engine's own message (`Prompt cannot be
//!   empty` / `Query cannot be empty`), as the public zod schema declares it; every other missing
//!   required field gets zod's `Invalid input: expected <type>, received undefined`.
//! - Integers (`priority`, `pages`) accept any JSON number with an integral value (`5` and `5.0`
//!   are the same number in JSON); fractions, strings, booleans and `null` are rejected.
//! - `null` is never a stand-in for "absent": an optional field set to `null` is a type error.
//! - `idempotencyKey` is taken verbatim (not trimmed), 1–256 characters.
//! - `webhook.url` is trimmed, at most 2,048 characters, and must be an absolute `http`/`https`
//!   URL with a host.
//! - `hl` is trimmed and lower-cased, 1–35 characters. `location` and `uule` are trimmed and must
//!   not be empty.
//! - `state` is compared case-insensitively (as the public schema does) and stored uppercase.
//! - Google `include.aioverview` counts as enabled when it is `true` or an object (the object
//!   form carries options such as `markdown`); `false` disables it. When it is enabled, the
//!   resolved country must also be in the `aioverview` country list.
//! - A country blocked for an engine always gets the "not available in this country" message
//!   (also for AI Mode, whose list is "all minus blocked"); a code outside the 250 gets the
//!   "do not support this country code" message. `gl` is compared case-insensitively, `country`
//!   is case-sensitive (lowercase `us` is rejected).
//! - `include.googleGoto` (AI Mode and Google only) is accepted as a boolean and dropped from
//!   the normalised payload.
//! - String lengths are counted in Unicode scalar values (`char`s), never bytes.
//!
//! The normalised payload is idempotent: validating it again yields the same payload and price.
//! It carries the defaults (`device: "desktop"`, `pages: 1`), trimmed text, `gl` lowercase plus
//! `country` uppercase for the Google family, and in Google `url` mode the values derived from
//! the URL (`query`, `gl`/`country`, `hl`, `uule`, `pages`), as the public API's transform does.

use serde_json::{Map, Value};

use super::countries::{self, CountryModel};
use super::types::{FieldError, TaskType};

/// Default task priority.
pub const DEFAULT_PRIORITY: u8 = 1;
/// Lowest and highest priority.
pub const MIN_PRIORITY: u8 = 1;
pub const MAX_PRIORITY: u8 = 10;
/// Maximum length of `prompt` / `query` after trimming, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Maximum length of `idempotencyKey`, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;
/// Maximum length of `webhook.url`, in characters.
pub const MAX_WEBHOOK_URL_CHARS: usize = 2048;
/// Maximum length of `hl`, in characters.
pub const MAX_HL_CHARS: usize = 35;
/// Google / Google News page depth.
pub const MAX_PAGES: i64 = 10;
/// Extra credits of a sync `/v1/monitor/*` call over the async price (not added here).
pub const SYNC_SURCHARGE: u32 = 2;

const MSG_BLOCKED_COUNTRY: &str =
    "This model is not available in this country. Please select a different country.";
const MSG_UNKNOWN_COUNTRY: &str = "We currently do not support this country code. If you'd like us to add support, please reach out to our support team and we will implement it.";
const MSG_PROMPT_EMPTY: &str = "Prompt cannot be empty";
const MSG_PROMPT_LONG: &str = "Prompt is too long (max 10,000 characters)";
const MSG_QUERY_EMPTY: &str = "Query cannot be empty";
const MSG_QUERY_LONG: &str = "Query is too long (max 10,000 characters)";
const MSG_PROVIDE_GL: &str = "Provide gl (or country, which is deprecated)";
const MSG_LOCATION_AND_UULE: &str = "Cannot set both location and uule; provide only one";
const MSG_QUERY_OR_URL: &str = "Provide either query or url";
const MSG_PROVIDE_GL_OR_URL_GL: &str = "Provide gl, or include gl= in the url so it can be derived";
const MSG_BAD_HTTP_URL: &str = "url must be a valid absolute http(s) URL";

const TOP_LEVEL_FIELDS: &[&str] = &[
    "taskType",
    "payload",
    "priority",
    "idempotencyKey",
    "webhook",
];
const WEBHOOK_FIELDS: &[&str] = &["url"];

/// One validated task request.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    pub task_type: TaskType,
    /// Normalised payload (see the module docs).
    pub payload: Value,
    /// 1..=10, default 1.
    pub priority: u8,
    pub idempotency_key: Option<String>,
    pub webhook_url: Option<String>,
    /// Async price: engine base + add-ons (no sync surcharge).
    pub credits_to_charge: u32,
}

/// Parses and validates one task request. `value` is one already-parsed JSON value (the request
/// body, or one batch item). On error returns every invalid field, with paths like `taskType`,
/// `priority`, `payload.country`, `payload.include.html`, `webhook.url`.
pub fn parse_task_request(value: &Value) -> Result<TaskRequest, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("", expected("object", Some(value)))]);
    };
    let mut errors: Vec<FieldError> = Vec::new();
    unknown_keys(&mut errors, obj, TOP_LEVEL_FIELDS, "");

    let task_type = match obj.get("taskType") {
        Some(Value::String(s)) => TaskType::parse(s),
        _ => None,
    };
    if task_type.is_none() {
        errors.push(FieldError::new("taskType", task_type_message()));
    }

    let mut validated_payload = None;
    match obj.get("payload") {
        Some(payload @ Value::Object(_)) => {
            if let Some(task_type) = task_type {
                match validate_payload(task_type, payload, "payload") {
                    Ok(ok) => validated_payload = Some(ok),
                    Err(mut errs) => errors.append(&mut errs),
                }
            }
        }
        other => errors.push(FieldError::new("payload", expected("object", other))),
    }

    let priority = match obj.get("priority") {
        None => Some(DEFAULT_PRIORITY),
        Some(v) => match integer_in_range(v, i64::from(MIN_PRIORITY), i64::from(MAX_PRIORITY)) {
            Ok(p) => u8::try_from(p).ok(),
            Err(msg) => {
                errors.push(FieldError::new("priority", msg));
                None
            }
        },
    };

    let idempotency_key = match obj.get("idempotencyKey") {
        None => None,
        Some(Value::String(s)) => {
            if s.is_empty() {
                errors.push(FieldError::new("idempotencyKey", too_small_string(1)));
            } else if longer_than(s, MAX_IDEMPOTENCY_KEY_CHARS) {
                errors.push(FieldError::new(
                    "idempotencyKey",
                    too_big_string(MAX_IDEMPOTENCY_KEY_CHARS),
                ));
            }
            Some(s.clone())
        }
        Some(other) => {
            errors.push(FieldError::new(
                "idempotencyKey",
                expected("string", Some(other)),
            ));
            None
        }
    };

    let webhook_url = match obj.get("webhook") {
        None => None,
        Some(Value::Object(hook)) => {
            unknown_keys(&mut errors, hook, WEBHOOK_FIELDS, "webhook");
            validate_webhook_url(&mut errors, hook.get("url"))
        }
        Some(other) => {
            errors.push(FieldError::new("webhook", expected("object", Some(other))));
            None
        }
    };

    match (task_type, validated_payload, priority) {
        (Some(task_type), Some((payload, credits_to_charge)), Some(priority))
            if errors.is_empty() =>
        {
            Ok(TaskRequest {
                task_type,
                payload,
                priority,
                idempotency_key,
                webhook_url,
                credits_to_charge,
            })
        }
        _ => Err(errors),
    }
}

/// Validates a payload alone (the same rules as the engine's sync endpoint). Field paths are
/// prefixed with `prefix` (e.g. `"payload"`; `""` for a sync body). Returns the normalised
/// payload and its async price in credits.
pub fn validate_payload(
    task_type: TaskType,
    payload: &Value,
    prefix: &str,
) -> Result<(Value, u32), Vec<FieldError>> {
    let Some(obj) = payload.as_object() else {
        return Err(vec![FieldError::new(
            prefix,
            expected("object", Some(payload)),
        )]);
    };
    let mut v = Validator {
        prefix,
        errors: Vec::new(),
    };
    let result = match task_type {
        TaskType::Chatgpt => v.llm(obj, CountryModel::Chatgpt, Llm::Chatgpt),
        TaskType::Gemini => v.llm(obj, CountryModel::Gemini, Llm::Basic),
        TaskType::Grok => v.llm(obj, CountryModel::Grok, Llm::Basic),
        TaskType::Copilot => v.llm(obj, CountryModel::Copilot, Llm::Basic),
        TaskType::Perplexity => v.llm(obj, CountryModel::Perplexity, Llm::Basic),
        TaskType::Aimode => v.aimode(obj),
        TaskType::Google => v.google(obj),
        TaskType::GoogleNews => v.google_news(obj),
    };
    match result {
        Some((out, credits)) if v.errors.is_empty() => Ok((Value::Object(out), credits)),
        _ => Err(v.errors),
    }
}

/// Why a Google search URL was refused (reference §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleUrlRejection {
    Malformed,
    Host,
    Path,
    Vertical,
    MissingQuery,
}

impl GoogleUrlRejection {
    pub fn message(self) -> &'static str {
        match self {
            GoogleUrlRejection::Malformed => MSG_BAD_HTTP_URL,
            GoogleUrlRejection::Host => {
                "url must be a Google web search host, e.g. www.google.com or google.co.uk"
            }
            GoogleUrlRejection::Path => "url path must be /search",
            GoogleUrlRejection::Vertical => {
                "url must not set tbm; use the vertical-specific endpoint instead (POST /v1/monitor/google/news for tbm=nws)"
            }
            GoogleUrlRejection::MissingQuery => "url must include a non-empty q parameter",
        }
    }
}

/// The parts of a Google web-search URL the scraper honours (`q, gl, hl, uule, num, start, tbs,
/// safe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleSearchUrl {
    /// `q`, trimmed, never empty.
    pub query: String,
    /// `gl`, uppercased; `None` when absent or blank.
    pub country: Option<String>,
    /// `hl`, lower-cased; `None` when absent or blank.
    pub language: Option<String>,
    /// `uule`, percent-decoded without turning `+` into a space.
    pub uule: Option<String>,
    /// `start` (default 0; junk or negative values fall back to 0).
    pub start_offset: u64,
    /// `ceil(num / 10)` capped to 1..=10 (default `num` 10 → 1 page).
    pub pages: u32,
    pub tbs: Option<String>,
    pub safe: Option<String>,
}

/// Parses a caller-supplied Google web-search URL (Google `url` mode, reference §5.7).
pub fn parse_google_search_url(raw: &str) -> Result<GoogleSearchUrl, GoogleUrlRejection> {
    let url = url::Url::parse(raw).map_err(|_| GoogleUrlRejection::Malformed)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(GoogleUrlRejection::Malformed);
    }
    if !is_google_search_host(url.host_str().unwrap_or("")) {
        return Err(GoogleUrlRejection::Host);
    }
    if url.path() != "/search" {
        return Err(GoogleUrlRejection::Path);
    }
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let first = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let trimmed = |key: &str| {
        first(key)
            .map(trim_text)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if pairs.iter().any(|(k, _)| k == "tbm") {
        return Err(GoogleUrlRejection::Vertical);
    }
    let query = trimmed("q").ok_or(GoogleUrlRejection::MissingQuery)?;
    let num = first("num").and_then(parse_non_negative_int).unwrap_or(10);
    let pages = if num < 1 {
        1
    } else {
        num.div_ceil(10).min(MAX_PAGES as u64) as u32
    };
    Ok(GoogleSearchUrl {
        query,
        country: trimmed("gl").map(|s| s.to_uppercase()),
        language: trimmed("hl").map(|s| s.to_lowercase()),
        uule: url.query().and_then(|q| raw_query_param(q, "uule")),
        start_offset: first("start").and_then(parse_non_negative_int).unwrap_or(0),
        pages,
        tbs: trimmed("tbs"),
        safe: trimmed("safe"),
    })
}

// ---------------------------------------------------------------------------------------------
// Engines

#[derive(Clone, Copy, PartialEq, Eq)]
enum Llm {
    Chatgpt,
    Basic,
}

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
const AIMODE_FIELDS: &[&str] = &[
    "prompt", "country", "gl", "hl", "location", "uule", "device", "include",
];
const AIMODE_INCLUDE: &[&str] = &["html", "markdown", "expandProducts", "googleGoto"];
const AIMODE_DEVICES: &[&str] = &["desktop", "mobile"];
const GOOGLE_FIELDS: &[&str] = &[
    "query", "url", "country", "gl", "hl", "location", "uule", "device", "pages", "include",
];
const GOOGLE_INCLUDE: &[&str] = &["html", "aioverview", "paaAioverview", "googleGoto"];
const AIOVERVIEW_FIELDS: &[&str] = &["markdown"];
const GOOGLE_DEVICES: &[&str] = &["desktop", "mobile", "ios", "android"];
const NEWS_FIELDS: &[&str] = &["query", "country", "gl", "hl", "device", "pages", "include"];
const NEWS_INCLUDE: &[&str] = &["html"];

/// The geo trio of the Google family after field-level validation.
struct Geo {
    /// `gl` as sent (trimmed), when it was a string.
    gl: Option<String>,
    /// `country` as sent, when it was a string.
    country: Option<String>,
    /// `gl` / `country` passed their own checks (or were absent).
    gl_ok: bool,
    country_ok: bool,
    /// `hl`, trimmed and lower-cased, when valid.
    hl: Option<String>,
}

impl Geo {
    /// The explicitly requested country (gl first), uppercase.
    fn explicit(&self) -> Option<String> {
        self.gl
            .as_ref()
            .or(self.country.as_ref())
            .map(|s| s.to_uppercase())
    }

    /// The field that supplied `explicit()`.
    fn explicit_field(&self) -> &'static str {
        if self.gl.is_some() { "gl" } else { "country" }
    }
}

struct Validator<'a> {
    prefix: &'a str,
    errors: Vec<FieldError>,
}

impl Validator<'_> {
    fn path(&self, field: &str) -> String {
        join(self.prefix, field)
    }

    fn err(&mut self, field: &str, message: impl Into<String>) {
        let path = self.path(field);
        self.errors.push(FieldError::new(path, message));
    }

    fn unknown(&mut self, obj: &Map<String, Value>, allowed: &[&str]) {
        let base = self.prefix.to_string();
        unknown_keys(&mut self.errors, obj, allowed, &base);
    }

    /// `prompt` (LLM engines and AI Mode): required.
    fn prompt(&mut self, obj: &Map<String, Value>) -> Option<String> {
        self.text(obj, "prompt", MSG_PROMPT_EMPTY, MSG_PROMPT_LONG)
    }

    /// A required trimmed text of 1..=10,000 characters.
    fn text(
        &mut self,
        obj: &Map<String, Value>,
        field: &str,
        empty: &str,
        long: &str,
    ) -> Option<String> {
        let Some(Value::String(raw)) = obj.get(field) else {
            self.err(field, empty);
            return None;
        };
        let text = trim_text(raw);
        if text.is_empty() {
            self.err(field, empty);
            None
        } else if longer_than(text, MAX_TEXT_CHARS) {
            self.err(field, long);
            None
        } else {
            Some(text.to_string())
        }
    }

    /// An optional string field, as sent. `Err(())` when present but not a string.
    fn opt_str<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        field: &str,
    ) -> Result<Option<&'v str>, ()> {
        match obj.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                self.err(field, expected("string", Some(other)));
                Err(())
            }
        }
    }

    /// An optional trimmed non-empty string (`location`, `uule`).
    fn opt_nonempty(
        &mut self,
        obj: &Map<String, Value>,
        field: &str,
    ) -> Result<Option<String>, ()> {
        match self.opt_str(obj, field)? {
            None => Ok(None),
            Some(s) => {
                let s = trim_text(s);
                if s.is_empty() {
                    self.err(field, too_small_string(1));
                    Err(())
                } else {
                    Ok(Some(s.to_string()))
                }
            }
        }
    }

    /// An optional boolean at `path` (relative to the prefix).
    fn opt_bool(&mut self, value: Option<&Value>, path: &str) -> Result<Option<bool>, ()> {
        match value {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                self.err(path, expected("boolean", Some(other)));
                Err(())
            }
        }
    }

    /// Optional enum string with a default.
    fn device(&mut self, obj: &Map<String, Value>, allowed: &[&str]) -> Option<String> {
        match obj.get("device") {
            None => Some("desktop".to_string()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s.clone()),
            Some(_) => {
                self.err("device", one_of(allowed));
                None
            }
        }
    }

    /// Optional `pages` (1..=10). `Ok(None)` when absent.
    fn pages(&mut self, obj: &Map<String, Value>) -> Result<Option<i64>, ()> {
        match obj.get("pages") {
            None => Ok(None),
            Some(v) => match integer_in_range(v, 1, MAX_PAGES) {
                Ok(p) => Ok(Some(p)),
                Err(msg) => {
                    self.err("pages", msg);
                    Err(())
                }
            },
        }
    }

    /// Validates `include` (all boolean flags listed in `flags`, except Google's `aioverview`,
    /// which is handled by the caller via `special`). Returns the normalised object (without
    /// `googleGoto`), or `None` when absent. `Err(())` on any error.
    fn include(
        &mut self,
        obj: &Map<String, Value>,
        flags: &[&str],
    ) -> Result<Option<Map<String, Value>>, ()> {
        let inc = match obj.get("include") {
            None => return Ok(None),
            Some(Value::Object(inc)) => inc,
            Some(other) => {
                self.err("include", expected("object", Some(other)));
                return Err(());
            }
        };
        let before = self.errors.len();
        let base = self.path("include");
        unknown_keys(&mut self.errors, inc, flags, &base);
        let mut out = Map::new();
        for flag in flags {
            let path = format!("include.{flag}");
            if *flag == "aioverview" {
                match inc.get("aioverview") {
                    None => {}
                    Some(Value::Bool(b)) => {
                        out.insert("aioverview".into(), Value::Bool(*b));
                    }
                    Some(Value::Object(aio)) => {
                        let aio_base = self.path(&path);
                        unknown_keys(&mut self.errors, aio, AIOVERVIEW_FIELDS, &aio_base);
                        let mut aio_out = Map::new();
                        if let Ok(Some(md)) =
                            self.opt_bool(aio.get("markdown"), "include.aioverview.markdown")
                        {
                            aio_out.insert("markdown".into(), Value::Bool(md));
                        }
                        out.insert("aioverview".into(), Value::Object(aio_out));
                    }
                    Some(other) => {
                        self.err(&path, expected("boolean or object", Some(other)));
                    }
                }
                continue;
            }
            if let Ok(Some(b)) = self.opt_bool(inc.get(*flag), &path)
                && *flag != "googleGoto"
            {
                out.insert((*flag).to_string(), Value::Bool(b));
            }
        }
        if self.errors.len() == before {
            Ok(Some(out))
        } else {
            Err(())
        }
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

    /// Field-level checks of `country`, `gl` and `hl` for the Google family, plus the
    /// country/gl disagreement rule. Presence is checked by the caller.
    fn geo_fields(&mut self, obj: &Map<String, Value>, model: CountryModel) -> Geo {
        let mut geo = Geo {
            gl: None,
            country: None,
            gl_ok: true,
            country_ok: true,
            hl: None,
        };
        match self.opt_str(obj, "country") {
            Ok(Some(code)) => {
                if let Some(msg) = country_problem(code, model) {
                    self.err("country", msg);
                    geo.country_ok = false;
                }
                geo.country = Some(code.to_string());
            }
            Ok(None) => {}
            Err(()) => geo.country_ok = false,
        }
        match self.opt_str(obj, "gl") {
            Ok(Some(gl)) => {
                let gl = trim_text(gl);
                if let Some(msg) = country_problem(&gl.to_uppercase(), model) {
                    self.err("gl", msg);
                    geo.gl_ok = false;
                }
                geo.gl = Some(gl.to_string());
            }
            Ok(None) => {}
            Err(()) => geo.gl_ok = false,
        }
        if let Ok(Some(hl)) = self.opt_str(obj, "hl") {
            let hl = trim_text(hl).to_lowercase();
            if hl.is_empty() {
                self.err("hl", too_small_string(1));
            } else if longer_than(&hl, MAX_HL_CHARS) {
                self.err("hl", too_big_string(MAX_HL_CHARS));
            } else {
                geo.hl = Some(hl);
            }
        }
        if let (Some(country), Some(gl)) = (&geo.country, &geo.gl)
            && !country.is_empty()
            && !gl.is_empty()
            && country.to_uppercase() != gl.to_uppercase()
        {
            self.err(
                "gl",
                format!(
                    "Cannot set both country and gl to different values (country: \"{country}\", gl: \"{gl}\"); country is deprecated — send gl alone"
                ),
            );
            geo.gl_ok = false;
        }
        geo
    }

    /// `location` XOR `uule`. Returns the valid values.
    fn location_uule(
        &mut self,
        obj: &Map<String, Value>,
    ) -> (Option<String>, Option<String>, bool) {
        let location = self.opt_nonempty(obj, "location");
        let uule = self.opt_nonempty(obj, "uule");
        let mut ok = location.is_ok() && uule.is_ok();
        let location = location.ok().flatten();
        let uule = uule.ok().flatten();
        if location.is_some() && uule.is_some() {
            self.err("uule", MSG_LOCATION_AND_UULE);
            ok = false;
        }
        (location, uule, ok)
    }

    fn llm(
        &mut self,
        obj: &Map<String, Value>,
        model: CountryModel,
        kind: Llm,
    ) -> Option<(Map<String, Value>, u32)> {
        let (fields, flags, base) = match kind {
            Llm::Chatgpt => (CHATGPT_FIELDS, CHATGPT_INCLUDE, 5),
            Llm::Basic => (
                LLM_FIELDS,
                LLM_INCLUDE,
                if model == CountryModel::Copilot { 5 } else { 4 },
            ),
        };
        self.unknown(obj, fields);
        let prompt = self.prompt(obj);
        let country = self.llm_country(obj, model);
        let include = self.include(obj, flags);
        let state = self.state(obj);
        let mut legacy = Ok(None);
        let mut disable_web_search = Ok(None);
        if kind == Llm::Chatgpt {
            legacy = self.opt_bool(obj.get("legacy"), "legacy");
            disable_web_search = self.opt_bool(obj.get("disableWebSearch"), "disableWebSearch");
        }
        let (prompt, country, include, state, legacy, disable_web_search) =
            match (prompt, country, include, state, legacy, disable_web_search) {
                (Some(p), Some(c), Ok(i), Ok(s), Ok(l), Ok(d)) => (p, c, i, s, l, d),
                _ => return None,
            };

        let mut credits = base;
        if kind == Llm::Chatgpt {
            let add_on = ["rawResponse", "searchQueries", "ads", "shopping"]
                .iter()
                .any(|f| flag(include.as_ref(), f));
            if add_on {
                credits += 2;
            }
        }
        let mut out = Map::new();
        out.insert("prompt".into(), Value::String(prompt));
        out.insert("country".into(), Value::String(country));
        if let Some(state) = state {
            out.insert("state".into(), Value::String(state));
            credits += 2;
        }
        if let Some(include) = include {
            out.insert("include".into(), Value::Object(include));
        }
        if let Some(l) = legacy {
            out.insert("legacy".into(), Value::Bool(l));
        }
        if let Some(d) = disable_web_search {
            out.insert("disableWebSearch".into(), Value::Bool(d));
        }
        Some((out, credits))
    }

    fn aimode(&mut self, obj: &Map<String, Value>) -> Option<(Map<String, Value>, u32)> {
        self.unknown(obj, AIMODE_FIELDS);
        let prompt = self.prompt(obj);
        let geo = self.geo_fields(obj, CountryModel::Aimode);
        if geo.gl.is_none() && geo.country.is_none() && geo.gl_ok && geo.country_ok {
            self.err("gl", MSG_PROVIDE_GL);
        }
        let (location, uule, loc_ok) = self.location_uule(obj);
        let device = self.device(obj, AIMODE_DEVICES);
        let include = self.include(obj, AIMODE_INCLUDE);
        let (prompt, device, include) = match (prompt, device, include) {
            (Some(p), Some(d), Ok(i)) if loc_ok && geo.gl_ok && geo.country_ok => (p, d, i),
            _ => return None,
        };
        let resolved = geo.explicit()?;
        let mut out = Map::new();
        out.insert("prompt".into(), Value::String(prompt));
        insert_geo(&mut out, &resolved, geo.hl);
        insert_opt(&mut out, "location", location);
        insert_opt(&mut out, "uule", uule);
        out.insert("device".into(), Value::String(device));
        if let Some(include) = include {
            out.insert("include".into(), Value::Object(include));
        }
        Some((out, 4))
    }

    fn google_news(&mut self, obj: &Map<String, Value>) -> Option<(Map<String, Value>, u32)> {
        self.unknown(obj, NEWS_FIELDS);
        let query = self.text(obj, "query", MSG_QUERY_EMPTY, MSG_QUERY_LONG);
        let geo = self.geo_fields(obj, CountryModel::Google);
        if geo.gl.is_none() && geo.country.is_none() && geo.gl_ok && geo.country_ok {
            self.err("gl", MSG_PROVIDE_GL);
        }
        let device = self.device(obj, GOOGLE_DEVICES);
        let pages = self.pages(obj);
        let include = self.include(obj, NEWS_INCLUDE);
        let (query, device, pages, include) = match (query, device, pages, include) {
            (Some(q), Some(d), Ok(p), Ok(i)) if geo.gl_ok && geo.country_ok => (q, d, p, i),
            _ => return None,
        };
        let resolved = geo.explicit()?;
        let pages = pages.unwrap_or(1);
        let mut out = Map::new();
        out.insert("query".into(), Value::String(query));
        insert_geo(&mut out, &resolved, geo.hl);
        out.insert("device".into(), Value::String(device));
        out.insert("pages".into(), Value::from(pages));
        if let Some(include) = include {
            out.insert("include".into(), Value::Object(include));
        }
        Some((out, page_price(pages)))
    }

    fn google(&mut self, obj: &Map<String, Value>) -> Option<(Map<String, Value>, u32)> {
        self.unknown(obj, GOOGLE_FIELDS);
        let mut ok = true;

        // Field-level checks.
        let query_present = obj.contains_key("query");
        let query = if query_present {
            let q = self.text(obj, "query", MSG_QUERY_EMPTY, MSG_QUERY_LONG);
            ok &= q.is_some();
            q
        } else {
            None
        };
        let url_present = obj.contains_key("url");
        let url = match self.opt_str(obj, "url") {
            Ok(u) => u.map(|u| trim_text(u).to_string()),
            Err(()) => {
                ok = false;
                None
            }
        };
        let geo = self.geo_fields(obj, CountryModel::Google);
        ok &= geo.gl_ok && geo.country_ok;
        let (location, uule, loc_ok) = self.location_uule(obj);
        ok &= loc_ok;
        let device = self.device(obj, GOOGLE_DEVICES);
        ok &= device.is_some();
        let pages = self.pages(obj);
        ok &= pages.is_ok();
        let include = self.include(obj, GOOGLE_INCLUDE);
        ok &= include.is_ok();

        // Mode-level checks.
        if !query_present && !url_present {
            self.err("query", MSG_QUERY_OR_URL);
            return None;
        }
        let mut derived: Option<GoogleSearchUrl> = None;
        if let Some(raw) = &url {
            let parsed = parse_google_search_url(raw);
            let p = parsed.as_ref().ok();
            // Fields the URL owns: an identical value is the URL's own value round-tripping.
            if query_present && query.is_some() && query.as_deref() != p.map(|p| p.query.as_str()) {
                self.err("query", url_owns("query"));
                ok = false;
            }
            if location.is_some() {
                self.err("location", url_owns("location"));
                ok = false;
            }
            if uule.is_some() && uule.as_deref() != p.and_then(|p| p.uule.as_deref()) {
                self.err("uule", url_owns("uule"));
                ok = false;
            }
            if let Ok(Some(n)) = pages
                && Some(n) != p.map(|p| i64::from(p.pages))
            {
                self.err("pages", url_owns("pages"));
                ok = false;
            }
            match parsed {
                Err(reason) => {
                    self.err("url", reason.message());
                    return None;
                }
                Ok(parsed) => {
                    if let (Some(hl), Some(lang)) = (&geo.hl, &parsed.language)
                        && hl != lang
                    {
                        self.err("hl", url_owns("hl"));
                        ok = false;
                    }
                    if let Some(explicit) = geo.explicit() {
                        if parsed.country.as_ref().is_some_and(|c| *c != explicit) {
                            let field = geo.explicit_field();
                            self.err(field, url_owns(field));
                            ok = false;
                        }
                    } else {
                        match &parsed.country {
                            None => {
                                self.err("gl", MSG_PROVIDE_GL_OR_URL_GL);
                                ok = false;
                            }
                            Some(c) if !countries::is_known_country(c) => {
                                self.err(
                                    "gl",
                                    format!(
                                        "Derived country \"{c}\" from the url's gl is not supported; pass a supported gl explicitly"
                                    ),
                                );
                                ok = false;
                            }
                            Some(_) => {}
                        }
                    }
                    derived = Some(parsed);
                }
            }
        } else if !url_present
            && geo.gl.is_none()
            && geo.country.is_none()
            && geo.gl_ok
            && geo.country_ok
        {
            self.err("gl", MSG_PROVIDE_GL);
            ok = false;
        }
        if !ok {
            return None;
        }
        let (device, include) = (device?, include.ok()?);

        // Resolve geo, pages and the query.
        let resolved = geo
            .explicit()
            .or_else(|| derived.as_ref().and_then(|d| d.country.clone()))?;
        let aioverview = include
            .as_ref()
            .and_then(|i| i.get("aioverview"))
            .is_some_and(|a| matches!(a, Value::Bool(true) | Value::Object(_)));
        let paa = flag(include.as_ref(), "paaAioverview");
        if aioverview && CountryModel::Aioverview.is_blocked(&resolved) {
            let field = if geo.explicit().is_some() {
                geo.explicit_field()
            } else {
                "gl"
            };
            self.err(field, MSG_BLOCKED_COUNTRY);
            return None;
        }
        let mut out = Map::new();
        let pages = match &derived {
            Some(d) => {
                out.insert("query".into(), Value::String(d.query.clone()));
                out.insert("url".into(), Value::String(url.unwrap_or_default()));
                i64::from(d.pages)
            }
            None => {
                out.insert("query".into(), Value::String(query?));
                pages.ok().flatten().unwrap_or(1)
            }
        };
        let hl = geo
            .hl
            .or_else(|| derived.as_ref().and_then(|d| d.language.clone()));
        insert_geo(&mut out, &resolved, hl);
        insert_opt(&mut out, "location", location);
        let uule = uule.or_else(|| derived.as_ref().and_then(|d| d.uule.clone()));
        insert_opt(&mut out, "uule", uule);
        out.insert("device".into(), Value::String(device));
        out.insert("pages".into(), Value::from(pages));
        if let Some(include) = include {
            out.insert("include".into(), Value::Object(include));
        }
        let mut credits = page_price(pages);
        if aioverview || paa {
            credits += 2;
        }
        Some((out, credits))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else if field.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// One `Unrecognized key "k"` error per key of `obj` outside `allowed`, at `base.k`.
fn unknown_keys(
    errors: &mut Vec<FieldError>,
    obj: &Map<String, Value>,
    allowed: &[&str],
    base: &str,
) {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(
                join(base, key),
                format!("Unrecognized key \"{key}\""),
            ));
        }
    }
}

/// zod's name for the type of a (possibly missing) JSON value.
fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

fn expected(ty: &str, got: Option<&Value>) -> String {
    format!("Invalid input: expected {ty}, received {}", type_name(got))
}

fn too_small_string(min: usize) -> String {
    format!("Too small: expected string to have >={min} characters")
}

fn too_big_string(max: usize) -> String {
    format!("Too big: expected string to have <={max} characters")
}

fn one_of(allowed: &[&str]) -> String {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    format!("Invalid option: expected one of {}", list.join("|"))
}

fn task_type_message() -> String {
    let names: Vec<&str> = TaskType::ALL.iter().map(|t| t.as_str()).collect();
    one_of(&names)
}

fn url_owns(field: &str) -> String {
    format!("Cannot set both url and {field}; the URL owns this value")
}

/// An integer in `min..=max`; any JSON number with an integral value counts as an integer.
fn integer_in_range(value: &Value, min: i64, max: i64) -> Result<i64, String> {
    let Value::Number(n) = value else {
        return Err(expected("number", Some(value)));
    };
    let too_small = || format!("Too small: expected number to be >={min}");
    let too_big = || format!("Too big: expected number to be <={max}");
    if let Some(i) = n.as_i64() {
        if i < min {
            Err(too_small())
        } else if i > max {
            Err(too_big())
        } else {
            Ok(i)
        }
    } else if n.is_u64() {
        Err(too_big())
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            Err("Invalid input: expected int, received number".to_string())
        } else if f < min as f64 {
            Err(too_small())
        } else if f > max as f64 {
            Err(too_big())
        } else {
            Ok(f as i64)
        }
    }
}

/// The problem with a country code for `model`, if any (blocked first, then unknown).
fn country_problem(code: &str, model: CountryModel) -> Option<&'static str> {
    if model.is_blocked(code) {
        Some(MSG_BLOCKED_COUNTRY)
    } else if !countries::is_known_country(code) {
        Some(MSG_UNKNOWN_COUNTRY)
    } else {
        None
    }
}

/// Trims whitespace the way JavaScript's `String.prototype.trim` does (incl. U+FEFF).
fn trim_text(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
}

/// Whether `s` has more than `max` characters (counted as `char`s).
fn longer_than(s: &str, max: usize) -> bool {
    s.chars().nth(max).is_some()
}

fn flag(include: Option<&Map<String, Value>>, name: &str) -> bool {
    include
        .and_then(|i| i.get(name))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn insert_geo(out: &mut Map<String, Value>, resolved: &str, hl: Option<String>) {
    out.insert("gl".into(), Value::String(resolved.to_lowercase()));
    out.insert("country".into(), Value::String(resolved.to_uppercase()));
    insert_opt(out, "hl", hl);
}

fn insert_opt(out: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value {
        out.insert(key.to_string(), Value::String(v));
    }
}

/// 3 credits + 2 per page beyond the first (Google / Google News).
fn page_price(pages: i64) -> u32 {
    let extra = u32::try_from(pages.clamp(1, MAX_PAGES) - 1).unwrap_or(0);
    3 + 2 * extra
}

fn validate_webhook_url(errors: &mut Vec<FieldError>, value: Option<&Value>) -> Option<String> {
    let raw = match value {
        Some(Value::String(s)) => s,
        other => {
            errors.push(FieldError::new("webhook.url", expected("string", other)));
            return None;
        }
    };
    let trimmed = trim_text(raw);
    if longer_than(trimmed, MAX_WEBHOOK_URL_CHARS) {
        errors.push(FieldError::new(
            "webhook.url",
            too_big_string(MAX_WEBHOOK_URL_CHARS),
        ));
        return None;
    }
    let valid = url::Url::parse(trimmed).is_ok_and(|u| {
        (u.scheme() == "http" || u.scheme() == "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if valid {
        Some(trimmed.to_string())
    } else {
        errors.push(FieldError::new("webhook.url", MSG_BAD_HTTP_URL));
        None
    }
}

/// `^(www\.)?google(\.[a-z]{2,3})+$`
fn is_google_search_host(host: &str) -> bool {
    let host = host.strip_prefix("www.").unwrap_or(host);
    let Some(rest) = host.strip_prefix("google") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    rest.split('.').all(|label| {
        (2..=3).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_lowercase())
    })
}

/// JavaScript `parseInt(raw, 10)` restricted to non-negative results (`None` when it would be
/// `NaN` or negative). Saturates instead of overflowing.
fn parse_non_negative_int(raw: &str) -> Option<u64> {
    let s = raw.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits: &str = &digits[..digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len())];
    if digits.is_empty() {
        return None;
    }
    let value = digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    if negative && value > 0 {
        None
    } else {
        Some(value)
    }
}

/// The first value of `key` in a raw query string, percent-decoded WITHOUT turning `+` into a
/// space (a UULE token contains literal `+`), trimmed; `None` when absent or blank.
fn raw_query_param(query: &str, key: &str) -> Option<String> {
    for pair in query.split('&') {
        let (name, value) = match pair.find('=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        if percent_decode(name) != key {
            continue;
        }
        let value = percent_decode(value);
        let value = trim_text(&value);
        return if value.is_empty() {
            None
        } else {
            Some(value.to_string())
        };
    }
    None
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `decodeURIComponent`, falling back to the input when it is malformed.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = match bytes.get(i + 1..i + 3) {
                Some(&[hi, lo]) => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h * 16 + l),
                _ => None,
            };
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => return s.to_string(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<TaskRequest, Vec<FieldError>> {
        parse_task_request(&v)
    }

    fn ok(v: Value) -> TaskRequest {
        match parse(v.clone()) {
            Ok(r) => r,
            Err(e) => panic!("expected {v} to be valid, got {e:?}"),
        }
    }

    fn errs(v: Value) -> Vec<FieldError> {
        match parse(v.clone()) {
            Ok(r) => panic!("expected {v} to be invalid, got {r:?}"),
            Err(e) => e,
        }
    }

    fn task(task_type: &str, payload: Value) -> Value {
        json!({ "taskType": task_type, "payload": payload })
    }

    fn price(task_type: &str, payload: Value) -> u32 {
        ok(task(task_type, payload)).credits_to_charge
    }

    /// The only error of an invalid request, as `(field, message)`.
    fn single(v: Value) -> (String, String) {
        let e = errs(v);
        assert_eq!(e.len(), 1, "expected exactly one error, got {e:?}");
        (e[0].field.clone(), e[0].message.clone())
    }

    fn has(e: &[FieldError], field: &str, message: &str) -> bool {
        e.iter().any(|x| x.field == field && x.message == message)
    }

    fn fields(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|x| x.field.as_str()).collect()
    }

    const UNKNOWN: &str = "We currently do not support this country code. If you'd like us to add support, please reach out to our support team and we will implement it.";
    const BLOCKED: &str =
        "This model is not available in this country. Please select a different country.";
    const UNDEFINED_STRING: &str = "Invalid input: expected string, received undefined";

    // ---- top level ---------------------------------------------------------------------------

    #[test]
    fn a_minimal_chatgpt_request_is_accepted_with_defaults() {
        let r = ok(task("CHATGPT", json!({"prompt": "hi", "country": "US"})));
        assert_eq!(r.task_type, TaskType::Chatgpt);
        assert_eq!(r.priority, 1);
        assert_eq!(r.idempotency_key, None);
        assert_eq!(r.webhook_url, None);
        assert_eq!(r.credits_to_charge, 5);
        assert_eq!(r.payload, json!({"prompt": "hi", "country": "US"}));
    }

    #[test]
    fn all_optional_top_level_fields_are_kept() {
        let r = ok(json!({
            "taskType": "GEMINI",
            "payload": {"prompt": "hi", "country": "DE"},
            "priority": 7,
            "idempotencyKey": "key-1",
            "webhook": {"url": "https://example.com/hook"}
        }));
        assert_eq!(r.priority, 7);
        assert_eq!(r.idempotency_key.as_deref(), Some("key-1"));
        assert_eq!(r.webhook_url.as_deref(), Some("https://example.com/hook"));
        assert_eq!(r.credits_to_charge, 4);
    }

    #[test]
    fn a_body_that_is_not_an_object_is_rejected_at_the_root() {
        for body in [json!([]), json!("x"), json!(1), json!(null), json!(true)] {
            let (field, message) = single(body.clone());
            assert_eq!(field, "");
            assert!(message.starts_with("Invalid input: expected object, received"));
        }
        assert_eq!(
            single(json!([1])).1,
            "Invalid input: expected object, received array"
        );
    }

    #[test]
    fn unknown_top_level_fields_are_rejected_one_error_each() {
        let mut body = task("CHATGPT", json!({"prompt": "hi", "country": "US"}));
        body["foo"] = json!(1);
        body["bar"] = json!(null);
        let e = errs(body);
        assert_eq!(e.len(), 2);
        assert!(has(&e, "foo", "Unrecognized key \"foo\""));
        assert!(has(&e, "bar", "Unrecognized key \"bar\""));
    }

    #[test]
    fn a_missing_task_type_lists_the_allowed_values() {
        let (field, message) = single(json!({"payload": {}}));
        assert_eq!(field, "taskType");
        assert_eq!(
            message,
            "Invalid option: expected one of \"AIMODE\"|\"GOOGLE\"|\"GOOGLE_NEWS\"|\"GEMINI\"|\"CHATGPT\"|\"COPILOT\"|\"PERPLEXITY\"|\"GROK\""
        );
    }

    #[test]
    fn an_unknown_or_lowercase_task_type_is_rejected() {
        for t in [
            json!("chatgpt"),
            json!("BING"),
            json!(3),
            json!(null),
            json!(""),
        ] {
            let (field, _) = single(json!({"taskType": t, "payload": {}}));
            assert_eq!(field, "taskType");
        }
    }

    #[test]
    fn every_task_type_is_accepted() {
        for (t, p) in [
            ("CHATGPT", json!({"prompt": "a", "country": "US"})),
            ("GEMINI", json!({"prompt": "a", "country": "US"})),
            ("GROK", json!({"prompt": "a", "country": "US"})),
            ("COPILOT", json!({"prompt": "a", "country": "US"})),
            ("PERPLEXITY", json!({"prompt": "a", "country": "US"})),
            ("AIMODE", json!({"prompt": "a", "gl": "us"})),
            ("GOOGLE", json!({"query": "a", "gl": "us"})),
            ("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})),
        ] {
            assert_eq!(ok(task(t, p)).task_type.as_str(), t);
        }
    }

    #[test]
    fn a_missing_payload_is_rejected_as_undefined() {
        let (field, message) = single(json!({"taskType": "CHATGPT"}));
        assert_eq!(field, "payload");
        assert_eq!(
            message,
            "Invalid input: expected object, received undefined"
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_rejected() {
        for (p, got) in [
            (json!([]), "array"),
            (json!("x"), "string"),
            (json!(null), "null"),
            (json!(2), "number"),
        ] {
            let (field, message) = single(task("CHATGPT", p));
            assert_eq!(field, "payload");
            assert_eq!(
                message,
                format!("Invalid input: expected object, received {got}")
            );
        }
    }

    #[test]
    fn with_an_invalid_task_type_the_payload_is_only_checked_for_being_an_object() {
        let e = errs(json!({"taskType": "NOPE", "payload": {"anything": 1}}));
        assert_eq!(fields(&e), ["taskType"]);
        let e = errs(json!({"taskType": "NOPE", "payload": 1}));
        assert_eq!(fields(&e), ["taskType", "payload"]);
    }

    #[test]
    fn priority_accepts_integers_from_1_to_10() {
        for p in 1..=10u8 {
            let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
            body["priority"] = json!(p);
            assert_eq!(ok(body).priority, p);
        }
    }

    #[test]
    fn an_integral_float_priority_counts_as_an_integer() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["priority"] = json!(5.0);
        assert_eq!(ok(body).priority, 5);
    }

    #[test]
    fn priority_out_of_range_fractional_string_or_null_is_rejected() {
        for (p, message) in [
            (json!(0), "Too small: expected number to be >=1"),
            (json!(-3), "Too small: expected number to be >=1"),
            (json!(11), "Too big: expected number to be <=10"),
            (json!(u64::MAX), "Too big: expected number to be <=10"),
            (json!(1e300), "Too big: expected number to be <=10"),
            (json!(-1e300), "Too small: expected number to be >=1"),
            (json!(1.5), "Invalid input: expected int, received number"),
            (
                json!("5"),
                "Invalid input: expected number, received string",
            ),
            (json!(null), "Invalid input: expected number, received null"),
            (
                json!(true),
                "Invalid input: expected number, received boolean",
            ),
        ] {
            let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
            body["priority"] = p.clone();
            assert_eq!(single(body), ("priority".into(), message.into()), "{p}");
        }
    }

    #[test]
    fn an_empty_idempotency_key_is_rejected() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["idempotencyKey"] = json!("");
        assert_eq!(
            single(body),
            (
                "idempotencyKey".into(),
                "Too small: expected string to have >=1 characters".into()
            )
        );
    }

    #[test]
    fn an_idempotency_key_longer_than_256_characters_is_rejected() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["idempotencyKey"] = json!("k".repeat(256));
        assert_eq!(ok(body.clone()).idempotency_key.map(|k| k.len()), Some(256));
        body["idempotencyKey"] = json!("k".repeat(257));
        assert_eq!(
            single(body),
            (
                "idempotencyKey".into(),
                "Too big: expected string to have <=256 characters".into()
            )
        );
    }

    #[test]
    fn idempotency_key_length_is_counted_in_characters_not_bytes() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["idempotencyKey"] = json!("é".repeat(256));
        assert!(parse(body.clone()).is_ok());
        body["idempotencyKey"] = json!("🦀".repeat(257));
        assert_eq!(errs(body).len(), 1);
    }

    #[test]
    fn a_non_string_idempotency_key_is_rejected() {
        for k in [json!(12), json!(null), json!(["a"])] {
            let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
            body["idempotencyKey"] = k;
            assert_eq!(single(body).0, "idempotencyKey");
        }
    }

    #[test]
    fn a_webhook_needs_an_object_with_a_url() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["webhook"] = json!({});
        assert_eq!(
            single(body.clone()),
            ("webhook.url".into(), UNDEFINED_STRING.into())
        );
        body["webhook"] = json!("https://example.com");
        assert_eq!(
            single(body.clone()),
            (
                "webhook".into(),
                "Invalid input: expected object, received string".into()
            )
        );
        body["webhook"] = json!(null);
        assert_eq!(single(body).0, "webhook");
    }

    #[test]
    fn unknown_webhook_fields_are_rejected() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["webhook"] = json!({"url": "https://example.com", "secret": "x"});
        assert_eq!(
            single(body),
            (
                "webhook.secret".into(),
                "Unrecognized key \"secret\"".into()
            )
        );
    }

    #[test]
    fn a_webhook_url_must_be_an_absolute_http_or_https_url() {
        for url in [
            "ftp://example.com/x",
            "/relative/path",
            "example.com",
            "mailto:a@example.com",
            "http://",
            "",
            "https://exa mple.com",
        ] {
            let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
            body["webhook"] = json!({ "url": url });
            assert_eq!(
                single(body),
                (
                    "webhook.url".into(),
                    "url must be a valid absolute http(s) URL".into()
                ),
                "{url}"
            );
        }
        for url in [
            "http://example.com",
            "https://hooks.example.com:8443/a?b=c",
            "http://10.0.0.1/x",
        ] {
            let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
            body["webhook"] = json!({ "url": url });
            assert_eq!(ok(body).webhook_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn a_webhook_url_is_trimmed_and_limited_to_2048_characters() {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["webhook"] = json!({"url": "  https://example.com/x  "});
        assert_eq!(
            ok(body.clone()).webhook_url.as_deref(),
            Some("https://example.com/x")
        );
        let base = "https://example.com/";
        body["webhook"] = json!({ "url": format!("{base}{}", "a".repeat(2048 - base.len())) });
        assert!(parse(body.clone()).is_ok());
        body["webhook"] = json!({ "url": format!("{base}{}", "a".repeat(2049 - base.len())) });
        assert_eq!(
            single(body),
            (
                "webhook.url".into(),
                "Too big: expected string to have <=2048 characters".into()
            )
        );
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let e = errs(json!({
            "taskType": "CHATGPT",
            "payload": {"prompt": " ", "country": "us", "include": {"ads": "yes"}, "extra": 1},
            "priority": 0,
            "idempotencyKey": "",
            "webhook": {"url": "nope"},
            "other": true
        }));
        for (field, message) in [
            ("other", "Unrecognized key \"other\""),
            ("payload.extra", "Unrecognized key \"extra\""),
            ("payload.prompt", "Prompt cannot be empty"),
            ("payload.country", UNKNOWN),
            (
                "payload.include.ads",
                "Invalid input: expected boolean, received string",
            ),
            ("priority", "Too small: expected number to be >=1"),
            (
                "idempotencyKey",
                "Too small: expected string to have >=1 characters",
            ),
            ("webhook.url", "url must be a valid absolute http(s) URL"),
        ] {
            assert!(has(&e, field, message), "missing {field}: {e:?}");
        }
        assert_eq!(e.len(), 8, "{e:?}");
    }

    #[test]
    fn a_missing_country_is_reported_like_the_batch_example() {
        assert_eq!(
            single(task("CHATGPT", json!({"prompt": "a"}))),
            ("payload.country".into(), UNDEFINED_STRING.into())
        );
    }

    // ---- validate_payload --------------------------------------------------------------------

    #[test]
    fn validate_payload_uses_the_given_prefix() {
        let e = validate_payload(TaskType::Chatgpt, &json!({"prompt": ""}), "")
            .err()
            .unwrap_or_default();
        assert_eq!(fields(&e), ["prompt", "country"]);
        let e = validate_payload(TaskType::Chatgpt, &json!({"include": {"x": true}}), "item")
            .err()
            .unwrap_or_default();
        assert!(has(&e, "item.include.x", "Unrecognized key \"x\""));
        let e = validate_payload(TaskType::Google, &json!(7), "")
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            [FieldError::new(
                "",
                "Invalid input: expected object, received number"
            )]
        );
    }

    #[test]
    fn validate_payload_returns_the_normalised_payload_and_price() {
        let (payload, credits) = validate_payload(
            TaskType::Google,
            &json!({"query": " shoes ", "gl": "GB", "hl": "EN-gb", "pages": 2}),
            "",
        )
        .unwrap_or_default();
        assert_eq!(
            payload,
            json!({"query": "shoes", "gl": "gb", "country": "GB", "hl": "en-gb",
                   "device": "desktop", "pages": 2})
        );
        assert_eq!(credits, 5);
    }

    // ---- prompt / query ----------------------------------------------------------------------

    #[test]
    fn an_empty_or_blank_prompt_is_rejected() {
        for p in ["", "   ", "\n\t", "\u{feff}"] {
            assert_eq!(
                single(task("GEMINI", json!({"prompt": p, "country": "US"}))),
                ("payload.prompt".into(), "Prompt cannot be empty".into())
            );
        }
    }

    #[test]
    fn a_missing_or_non_string_prompt_gets_the_prompt_message() {
        for payload in [
            json!({"country": "US"}),
            json!({"prompt": 5, "country": "US"}),
            json!({"prompt": null, "country": "US"}),
        ] {
            assert_eq!(
                single(task("PERPLEXITY", payload)),
                ("payload.prompt".into(), "Prompt cannot be empty".into())
            );
        }
    }

    #[test]
    fn a_prompt_is_trimmed() {
        let r = ok(task(
            "GROK",
            json!({"prompt": "  hello world \n", "country": "US"}),
        ));
        assert_eq!(r.payload["prompt"], "hello world");
    }

    #[test]
    fn a_prompt_of_10000_characters_is_accepted_and_10001_rejected() {
        let p = "a".repeat(10_000);
        assert!(parse(task("COPILOT", json!({"prompt": p, "country": "US"}))).is_ok());
        let padded = format!("  {p}  ");
        assert!(parse(task("COPILOT", json!({"prompt": padded, "country": "US"}))).is_ok());
        let p = "a".repeat(10_001);
        assert_eq!(
            single(task("COPILOT", json!({"prompt": p, "country": "US"}))),
            (
                "payload.prompt".into(),
                "Prompt is too long (max 10,000 characters)".into()
            )
        );
    }

    #[test]
    fn prompt_length_is_counted_in_characters_not_bytes() {
        let p = "日".repeat(10_000);
        assert!(parse(task("CHATGPT", json!({"prompt": p, "country": "US"}))).is_ok());
        let p = "🦀".repeat(10_001);
        assert_eq!(
            single(task("CHATGPT", json!({"prompt": p, "country": "US"}))).1,
            "Prompt is too long (max 10,000 characters)"
        );
    }

    #[test]
    fn query_messages_are_used_for_the_google_family() {
        assert_eq!(
            single(task("GOOGLE_NEWS", json!({"query": " ", "gl": "us"}))),
            ("payload.query".into(), "Query cannot be empty".into())
        );
        assert_eq!(
            single(task("GOOGLE_NEWS", json!({"gl": "us"}))),
            ("payload.query".into(), "Query cannot be empty".into())
        );
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "q".repeat(10_001), "gl": "us"})
            )),
            (
                "payload.query".into(),
                "Query is too long (max 10,000 characters)".into()
            )
        );
        assert_eq!(
            single(task("GOOGLE", json!({"query": "", "gl": "us"}))),
            ("payload.query".into(), "Query cannot be empty".into())
        );
    }

    // ---- country -----------------------------------------------------------------------------

    #[test]
    fn a_lowercase_country_is_rejected() {
        for t in ["CHATGPT", "GEMINI", "AIMODE", "GOOGLE_NEWS"] {
            let text = if t.starts_with("GOOGLE") {
                "query"
            } else {
                "prompt"
            };
            let e = errs(task(t, json!({ text: "a", "country": "us" })));
            assert!(has(&e, "payload.country", UNKNOWN), "{t}: {e:?}");
        }
    }

    #[test]
    fn an_unknown_country_code_is_rejected_with_the_support_message() {
        for c in ["ZZ", "USA", "", "U"] {
            assert_eq!(
                single(task("CHATGPT", json!({"prompt": "a", "country": c}))),
                ("payload.country".into(), UNKNOWN.into())
            );
        }
    }

    #[test]
    fn a_non_string_country_is_a_type_error() {
        assert_eq!(
            single(task("CHATGPT", json!({"prompt": "a", "country": 1}))),
            (
                "payload.country".into(),
                "Invalid input: expected string, received number".into()
            )
        );
    }

    #[test]
    fn a_country_blocked_for_the_engine_is_not_available() {
        for (t, c) in [
            ("CHATGPT", "RU"),
            ("CHATGPT", "CN"),
            ("CHATGPT", "HK"),
            ("CHATGPT", "IR"),
            ("CHATGPT", "MO"),
            ("CHATGPT", "VE"),
            ("PERPLEXITY", "CN"),
            ("COPILOT", "SY"),
            ("COPILOT", "BY"),
            ("GEMINI", "BY"),
            ("GROK", "HK"),
        ] {
            assert_eq!(
                single(task(t, json!({"prompt": "a", "country": c}))),
                ("payload.country".into(), BLOCKED.into()),
                "{t} {c}"
            );
        }
    }

    #[test]
    fn countries_blocked_elsewhere_are_allowed_where_not_blocked() {
        assert!(parse(task("CHATGPT", json!({"prompt": "a", "country": "CZ"}))).is_ok());
        assert!(parse(task("PERPLEXITY", json!({"prompt": "a", "country": "RU"}))).is_ok());
        assert!(parse(task("GEMINI", json!({"prompt": "a", "country": "HK"}))).is_ok());
        assert!(parse(task("CHATGPT", json!({"prompt": "a", "country": "XK"}))).is_ok());
        assert!(parse(task("GOOGLE", json!({"query": "a", "gl": "cn"}))).is_ok());
        assert!(parse(task("GOOGLE_NEWS", json!({"query": "a", "country": "KP"}))).is_ok());
    }

    // ---- include / engine-specific fields ----------------------------------------------------

    #[test]
    fn unknown_payload_fields_are_rejected_for_every_engine() {
        for (t, p) in [
            ("CHATGPT", json!({"prompt": "a", "country": "US"})),
            ("GEMINI", json!({"prompt": "a", "country": "US"})),
            ("GROK", json!({"prompt": "a", "country": "US"})),
            ("COPILOT", json!({"prompt": "a", "country": "US"})),
            ("PERPLEXITY", json!({"prompt": "a", "country": "US"})),
            ("AIMODE", json!({"prompt": "a", "gl": "us"})),
            ("GOOGLE", json!({"query": "a", "gl": "us"})),
            ("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})),
        ] {
            let mut p = p;
            p["model"] = json!("gpt-4");
            assert_eq!(
                single(task(t, p)),
                ("payload.model".into(), "Unrecognized key \"model\"".into()),
                "{t}"
            );
        }
    }

    #[test]
    fn unknown_include_flags_are_rejected_for_every_engine() {
        for (t, p) in [
            ("CHATGPT", json!({"prompt": "a", "country": "US"})),
            ("GEMINI", json!({"prompt": "a", "country": "US"})),
            ("AIMODE", json!({"prompt": "a", "gl": "us"})),
            ("GOOGLE", json!({"query": "a", "gl": "us"})),
            ("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})),
        ] {
            let mut p = p;
            p["include"] = json!({"html": true, "screenshot": true});
            assert_eq!(
                single(task(t, p)),
                (
                    "payload.include.screenshot".into(),
                    "Unrecognized key \"screenshot\"".into()
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn engine_specific_flags_are_unknown_on_other_engines() {
        let e = errs(task(
            "GEMINI",
            json!({"prompt": "a", "country": "US", "include": {"ads": true}, "legacy": true}),
        ));
        assert!(has(&e, "payload.include.ads", "Unrecognized key \"ads\""));
        assert!(has(&e, "payload.legacy", "Unrecognized key \"legacy\""));
        let e = errs(task(
            "GOOGLE_NEWS",
            json!({"query": "a", "gl": "us", "include": {"googleGoto": true}, "location": "Paris"}),
        ));
        assert!(has(
            &e,
            "payload.include.googleGoto",
            "Unrecognized key \"googleGoto\""
        ));
        assert!(has(&e, "payload.location", "Unrecognized key \"location\""));
        let e = errs(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "gl": "us"}),
        ));
        assert_eq!(fields(&e), ["payload.gl"]);
    }

    #[test]
    fn include_flags_must_be_booleans() {
        for v in [json!("true"), json!(1), json!(null), json!({})] {
            let e = errs(task(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "include": {"html": v}}),
            ));
            assert_eq!(fields(&e), ["payload.include.html"]);
            assert!(
                e[0].message
                    .starts_with("Invalid input: expected boolean, received")
            );
        }
    }

    #[test]
    fn include_must_be_an_object() {
        assert_eq!(
            single(task(
                "GEMINI",
                json!({"prompt": "a", "country": "US", "include": ["html"]})
            )),
            (
                "payload.include".into(),
                "Invalid input: expected object, received array".into()
            )
        );
    }

    #[test]
    fn chatgpt_legacy_and_disable_web_search_are_booleans() {
        let r = ok(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "legacy": true, "disableWebSearch": false}),
        ));
        assert_eq!(r.payload["legacy"], true);
        assert_eq!(r.payload["disableWebSearch"], false);
        let e = errs(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "legacy": "yes", "disableWebSearch": 0}),
        ));
        assert_eq!(fields(&e), ["payload.legacy", "payload.disableWebSearch"]);
    }

    #[test]
    fn all_chatgpt_include_flags_are_accepted() {
        let r = ok(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "include": {
                "html": true, "markdown": true, "rawResponse": false,
                "searchQueries": false, "ads": false, "shopping": false}}),
        ));
        assert_eq!(r.payload["include"]["html"], true);
        assert_eq!(r.credits_to_charge, 5);
    }

    // ---- state -------------------------------------------------------------------------------

    #[test]
    fn a_us_state_costs_two_more_credits() {
        let r = ok(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "state": "CA"}),
        ));
        assert_eq!(r.credits_to_charge, 7);
        assert_eq!(r.payload["state"], "CA");
        assert_eq!(
            price(
                "GEMINI",
                json!({"prompt": "a", "country": "US", "state": "DC"})
            ),
            6
        );
        assert_eq!(
            price(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "state": "NY", "include": {"ads": true}})
            ),
            9
        );
    }

    #[test]
    fn a_state_code_is_matched_case_insensitively_and_stored_uppercase() {
        let r = ok(task(
            "PERPLEXITY",
            json!({"prompt": "a", "country": "US", "state": "tx"}),
        ));
        assert_eq!(r.payload["state"], "TX");
    }

    #[test]
    fn a_state_with_a_non_us_country_is_rejected() {
        assert_eq!(
            single(task(
                "CHATGPT",
                json!({"prompt": "a", "country": "GB", "state": "CA"})
            )),
            (
                "payload.state".into(),
                "`state` is not supported for country GB.".into()
            )
        );
    }

    #[test]
    fn a_state_without_a_country_names_none() {
        let e = errs(task("CHATGPT", json!({"prompt": "a", "state": "CA"})));
        assert!(has(
            &e,
            "payload.state",
            "`state` is not supported for country (none)."
        ));
        assert!(has(&e, "payload.country", UNDEFINED_STRING));
    }

    #[test]
    fn an_unknown_us_state_is_rejected() {
        for s in ["XX", "", "PR", "California"] {
            assert_eq!(
                single(task(
                    "GROK",
                    json!({"prompt": "a", "country": "US", "state": s})
                )),
                (
                    "payload.state".into(),
                    "Invalid `state` for US. Use a code from `GET /v1/states?country=US`.".into()
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn a_non_string_state_is_a_type_error() {
        assert_eq!(
            single(task(
                "COPILOT",
                json!({"prompt": "a", "country": "US", "state": null})
            )),
            (
                "payload.state".into(),
                "Invalid input: expected string, received null".into()
            )
        );
    }

    #[test]
    fn state_is_not_a_field_of_the_google_family() {
        for (t, p) in [
            ("AIMODE", json!({"prompt": "a", "gl": "us", "state": "CA"})),
            ("GOOGLE", json!({"query": "a", "gl": "us", "state": "CA"})),
            (
                "GOOGLE_NEWS",
                json!({"query": "a", "gl": "us", "state": "CA"}),
            ),
        ] {
            assert_eq!(
                single(task(t, p)),
                ("payload.state".into(), "Unrecognized key \"state\"".into())
            );
        }
    }

    // ---- gl / country / hl (Google family) ---------------------------------------------------

    #[test]
    fn gl_is_case_insensitive_and_normalised() {
        let r = ok(task(
            "AIMODE",
            json!({"prompt": "a", "gl": " Fr ", "hl": " FR-ca "}),
        ));
        assert_eq!(r.payload["gl"], "fr");
        assert_eq!(r.payload["country"], "FR");
        assert_eq!(r.payload["hl"], "fr-ca");
        assert_eq!(r.payload["device"], "desktop");
    }

    #[test]
    fn country_is_a_deprecated_alias_of_gl() {
        let r = ok(task("GOOGLE_NEWS", json!({"query": "a", "country": "DE"})));
        assert_eq!(r.payload["gl"], "de");
        assert_eq!(r.payload["country"], "DE");
    }

    #[test]
    fn the_google_family_needs_gl_or_country() {
        for (t, p) in [
            ("AIMODE", json!({"prompt": "a"})),
            ("GOOGLE", json!({"query": "a"})),
            ("GOOGLE_NEWS", json!({"query": "a"})),
        ] {
            assert_eq!(
                single(task(t, p)),
                (
                    "payload.gl".into(),
                    "Provide gl (or country, which is deprecated)".into()
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn different_country_and_gl_are_rejected() {
        assert_eq!(
            single(task("AIMODE", json!({"prompt": "a", "country": "US", "gl": "gb"}))),
            (
                "payload.gl".into(),
                "Cannot set both country and gl to different values (country: \"US\", gl: \"gb\"); country is deprecated — send gl alone".into()
            )
        );
    }

    #[test]
    fn equal_country_and_gl_are_accepted() {
        let r = ok(task(
            "GOOGLE",
            json!({"query": "a", "country": "US", "gl": "us"}),
        ));
        assert_eq!(r.payload["gl"], "us");
    }

    #[test]
    fn aimode_uses_its_own_country_list() {
        for gl in ["cn", "CU", "ir", "kp"] {
            assert_eq!(
                single(task("AIMODE", json!({"prompt": "a", "gl": gl}))),
                ("payload.gl".into(), BLOCKED.into()),
                "{gl}"
            );
        }
        assert_eq!(
            single(task("AIMODE", json!({"prompt": "a", "country": "CN"}))),
            ("payload.country".into(), BLOCKED.into())
        );
        assert_eq!(
            single(task("AIMODE", json!({"prompt": "a", "gl": "zz"}))),
            ("payload.gl".into(), UNKNOWN.into())
        );
        assert!(parse(task("AIMODE", json!({"prompt": "a", "gl": "ru"}))).is_ok());
    }

    #[test]
    fn gl_and_hl_must_be_strings() {
        let e = errs(task("GOOGLE", json!({"query": "a", "gl": 1, "hl": false})));
        assert!(has(
            &e,
            "payload.gl",
            "Invalid input: expected string, received number"
        ));
        assert!(has(
            &e,
            "payload.hl",
            "Invalid input: expected string, received boolean"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn an_empty_or_overlong_hl_is_rejected() {
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "hl": "  "})
            )),
            (
                "payload.hl".into(),
                "Too small: expected string to have >=1 characters".into()
            )
        );
        assert!(
            parse(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "hl": "x".repeat(35)})
            ))
            .is_ok()
        );
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "hl": "x".repeat(36)})
            )),
            (
                "payload.hl".into(),
                "Too big: expected string to have <=35 characters".into()
            )
        );
    }

    #[test]
    fn hl_is_not_a_field_of_the_llm_engines() {
        assert_eq!(
            single(task(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "hl": "en"})
            ))
            .0,
            "payload.hl"
        );
    }

    // ---- location / uule / device ------------------------------------------------------------

    #[test]
    fn location_and_uule_together_are_rejected_at_uule() {
        for t in ["AIMODE", "GOOGLE"] {
            let text = if t == "AIMODE" { "prompt" } else { "query" };
            assert_eq!(
                single(task(
                    t,
                    json!({ text: "a", "gl": "us", "location": "Austin,Texas,United States", "uule": "w+CAIQICI" })
                )),
                (
                    "payload.uule".into(),
                    "Cannot set both location and uule; provide only one".into()
                )
            );
        }
    }

    #[test]
    fn location_or_uule_alone_is_accepted_and_trimmed() {
        let r = ok(task(
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "location": " Austin,Texas,United States "}),
        ));
        assert_eq!(r.payload["location"], "Austin,Texas,United States");
        let r = ok(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "uule": "w+CAIQICI"}),
        ));
        assert_eq!(r.payload["uule"], "w+CAIQICI");
    }

    #[test]
    fn an_empty_location_or_a_non_string_uule_is_rejected() {
        let e = errs(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "location": " ", "uule": 3}),
        ));
        assert!(has(
            &e,
            "payload.location",
            "Too small: expected string to have >=1 characters"
        ));
        assert!(has(
            &e,
            "payload.uule",
            "Invalid input: expected string, received number"
        ));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn device_values_depend_on_the_engine() {
        for d in ["desktop", "mobile"] {
            assert_eq!(
                ok(task(
                    "AIMODE",
                    json!({"prompt": "a", "gl": "us", "device": d})
                ))
                .payload["device"],
                d
            );
        }
        assert_eq!(
            single(task(
                "AIMODE",
                json!({"prompt": "a", "gl": "us", "device": "ios"})
            )),
            (
                "payload.device".into(),
                "Invalid option: expected one of \"desktop\"|\"mobile\"".into()
            )
        );
        for d in ["desktop", "mobile", "ios", "android"] {
            assert!(
                parse(task(
                    "GOOGLE",
                    json!({"query": "a", "gl": "us", "device": d})
                ))
                .is_ok()
            );
            assert!(
                parse(task(
                    "GOOGLE_NEWS",
                    json!({"query": "a", "gl": "us", "device": d})
                ))
                .is_ok()
            );
        }
        for d in [json!("tablet"), json!("DESKTOP"), json!(1), json!(null)] {
            assert_eq!(
                single(task(
                    "GOOGLE",
                    json!({"query": "a", "gl": "us", "device": d})
                )),
                (
                    "payload.device".into(),
                    "Invalid option: expected one of \"desktop\"|\"mobile\"|\"ios\"|\"android\""
                        .into()
                )
            );
        }
        assert_eq!(
            single(task(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "device": "mobile"})
            ))
            .0,
            "payload.device"
        );
    }

    #[test]
    fn google_goto_is_accepted_and_ignored() {
        let r = ok(task(
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "include": {"googleGoto": true, "html": true}}),
        ));
        assert_eq!(r.payload["include"], json!({"html": true}));
        let r = ok(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "include": {"googleGoto": false}}),
        ));
        assert_eq!(r.payload["include"], json!({}));
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "include": {"googleGoto": "yes"}})
            ))
            .0,
            "payload.include.googleGoto"
        );
    }

    // ---- pages -------------------------------------------------------------------------------

    #[test]
    fn pages_must_be_an_integer_from_1_to_10() {
        for (p, message) in [
            (json!(0), "Too small: expected number to be >=1"),
            (json!(11), "Too big: expected number to be <=10"),
            (json!(1.5), "Invalid input: expected int, received number"),
            (
                json!("2"),
                "Invalid input: expected number, received string",
            ),
            (json!(null), "Invalid input: expected number, received null"),
        ] {
            for t in ["GOOGLE", "GOOGLE_NEWS"] {
                assert_eq!(
                    single(task(t, json!({"query": "a", "gl": "us", "pages": p}))),
                    ("payload.pages".into(), message.into()),
                    "{t} {p}"
                );
            }
        }
    }

    #[test]
    fn pages_defaults_to_one() {
        let r = ok(task("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})));
        assert_eq!(r.payload["pages"], 1);
        assert_eq!(r.payload["device"], "desktop");
        assert_eq!(r.credits_to_charge, 3);
    }

    #[test]
    fn pages_is_not_a_field_of_ai_mode() {
        assert_eq!(
            single(task(
                "AIMODE",
                json!({"prompt": "a", "gl": "us", "pages": 2})
            ))
            .0,
            "payload.pages"
        );
    }

    // ---- prices ------------------------------------------------------------------------------

    #[test]
    fn base_prices_match_the_credit_table() {
        let llm = json!({"prompt": "a", "country": "US"});
        assert_eq!(price("CHATGPT", llm.clone()), 5);
        assert_eq!(price("GEMINI", llm.clone()), 4);
        assert_eq!(price("GROK", llm.clone()), 4);
        assert_eq!(price("COPILOT", llm.clone()), 5);
        assert_eq!(price("PERPLEXITY", llm), 4);
        assert_eq!(price("AIMODE", json!({"prompt": "a", "gl": "us"})), 4);
        assert_eq!(price("GOOGLE", json!({"query": "a", "gl": "us"})), 3);
        assert_eq!(price("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})), 3);
    }

    #[test]
    fn chatgpt_with_include_ads_costs_7() {
        assert_eq!(
            price(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "include": {"ads": true}})
            ),
            7
        );
    }

    #[test]
    fn chatgpt_full_response_add_ons_cost_one_flat_two() {
        for flag in ["rawResponse", "searchQueries", "ads", "shopping"] {
            assert_eq!(
                price(
                    "CHATGPT",
                    json!({"prompt": "a", "country": "US", "include": { flag: true }})
                ),
                7,
                "{flag}"
            );
        }
        assert_eq!(
            price(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "include": {
                    "rawResponse": true, "searchQueries": true, "ads": true, "shopping": true}})
            ),
            7
        );
        assert_eq!(
            price(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "include": {"html": true, "markdown": true, "ads": false}})
            ),
            5
        );
    }

    #[test]
    fn html_markdown_and_raw_response_are_free_for_the_other_llms() {
        for (t, base) in [
            ("GEMINI", 4),
            ("GROK", 4),
            ("COPILOT", 5),
            ("PERPLEXITY", 4),
        ] {
            assert_eq!(
                price(
                    t,
                    json!({"prompt": "a", "country": "US", "include": {
                        "html": true, "markdown": true, "rawResponse": true}})
                ),
                base
            );
        }
    }

    #[test]
    fn ai_mode_expand_products_does_not_change_the_upfront_price() {
        assert_eq!(
            price(
                "AIMODE",
                json!({"prompt": "a", "gl": "us", "include": {"expandProducts": true}})
            ),
            4
        );
    }

    #[test]
    fn google_3_pages_with_aioverview_costs_9() {
        assert_eq!(
            price(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "pages": 3, "include": {"aioverview": true}})
            ),
            9
        );
    }

    #[test]
    fn google_10_pages_with_aioverview_costs_23() {
        assert_eq!(
            price(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "pages": 10, "include": {"aioverview": {"markdown": true}}})
            ),
            23
        );
    }

    #[test]
    fn google_aioverview_and_paa_aioverview_cost_one_flat_two() {
        let p = |include: Value| {
            price(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "include": include}),
            )
        };
        assert_eq!(p(json!({"aioverview": true})), 5);
        assert_eq!(p(json!({"paaAioverview": true})), 5);
        assert_eq!(p(json!({"aioverview": true, "paaAioverview": true})), 5);
        assert_eq!(p(json!({"aioverview": {}})), 5);
        assert_eq!(p(json!({"aioverview": false, "paaAioverview": false})), 3);
        assert_eq!(p(json!({"html": true})), 3);
    }

    #[test]
    fn google_news_costs_two_per_extra_page() {
        for pages in 1..=10u32 {
            assert_eq!(
                price(
                    "GOOGLE_NEWS",
                    json!({"query": "a", "gl": "us", "pages": pages})
                ),
                3 + 2 * (pages - 1)
            );
        }
    }

    // ---- Google aioverview -------------------------------------------------------------------

    #[test]
    fn google_aioverview_accepts_a_boolean_or_a_markdown_object() {
        let r = ok(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "include": {"aioverview": {"markdown": true}}}),
        ));
        assert_eq!(
            r.payload["include"]["aioverview"],
            json!({"markdown": true})
        );
        let e = errs(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "include": {"aioverview": {"markdown": "x", "text": true}}}),
        ));
        assert!(has(
            &e,
            "payload.include.aioverview.text",
            "Unrecognized key \"text\""
        ));
        assert!(has(
            &e,
            "payload.include.aioverview.markdown",
            "Invalid input: expected boolean, received string"
        ));
        assert_eq!(e.len(), 2);
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "include": {"aioverview": "yes"}})
            )),
            (
                "payload.include.aioverview".into(),
                "Invalid input: expected boolean or object, received string".into()
            )
        );
    }

    #[test]
    fn google_aioverview_checks_the_aioverview_country_list() {
        assert!(parse(task("GOOGLE", json!({"query": "a", "gl": "is"}))).is_ok());
        assert!(parse(task(
            "GOOGLE",
            json!({"query": "a", "gl": "is", "include": {"aioverview": false, "paaAioverview": true}})
        ))
        .is_ok());
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "gl": "is", "include": {"aioverview": true}})
            )),
            ("payload.gl".into(), BLOCKED.into())
        );
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "country": "RE", "include": {"aioverview": {}}})
            )),
            ("payload.country".into(), BLOCKED.into())
        );
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"url": "https://www.google.com/search?q=x&gl=lk", "include": {"aioverview": true}})
            )),
            ("payload.gl".into(), BLOCKED.into())
        );
    }

    // ---- Google url mode ---------------------------------------------------------------------

    #[test]
    fn google_needs_query_or_url() {
        assert_eq!(
            single(task("GOOGLE", json!({"gl": "us"}))),
            ("payload.query".into(), "Provide either query or url".into())
        );
    }

    #[test]
    fn a_google_url_is_decomposed_into_the_structured_fields() {
        let r = ok(task(
            "GOOGLE",
            json!({"url": " https://www.google.co.uk/search?q=best+shoes&gl=gb&hl=EN&num=30&start=10 "}),
        ));
        assert_eq!(
            r.payload,
            json!({
                "query": "best shoes",
                "url": "https://www.google.co.uk/search?q=best+shoes&gl=gb&hl=EN&num=30&start=10",
                "gl": "gb", "country": "GB", "hl": "en",
                "device": "desktop", "pages": 3
            })
        );
        assert_eq!(r.credits_to_charge, 7);
    }

    #[test]
    fn url_num_is_converted_to_pages() {
        for (num, pages) in [
            ("", 1),
            ("&num=10", 1),
            ("&num=11", 2),
            ("&num=0", 1),
            ("&num=-5", 1),
            ("&num=abc", 1),
            ("&num=25xyz", 3),
            ("&num=100", 10),
            ("&num=99999999999999999999999", 10),
        ] {
            let url = format!("https://google.com/search?q=a&gl=us{num}");
            let r = ok(task("GOOGLE", json!({ "url": url })));
            assert_eq!(r.payload["pages"], pages, "{num}");
        }
    }

    #[test]
    fn an_invalid_google_url_is_rejected_with_the_matching_message() {
        for (url, message) in [
            ("not a url", "url must be a valid absolute http(s) URL"),
            ("", "url must be a valid absolute http(s) URL"),
            (
                "ftp://google.com/search?q=a",
                "url must be a valid absolute http(s) URL",
            ),
            (
                "https://news.google.com/search?q=a",
                "url must be a Google web search host, e.g. www.google.com or google.co.uk",
            ),
            (
                "https://www.bing.com/search?q=a",
                "url must be a Google web search host, e.g. www.google.com or google.co.uk",
            ),
            (
                "https://google.example/search?q=a",
                "url must be a Google web search host, e.g. www.google.com or google.co.uk",
            ),
            (
                "https://www.google.com/webhp?q=a",
                "url path must be /search",
            ),
            (
                "https://www.google.com/search/?q=a",
                "url path must be /search",
            ),
            (
                "https://www.google.com/search?q=a&tbm=nws",
                "url must not set tbm; use the vertical-specific endpoint instead (POST /v1/monitor/google/news for tbm=nws)",
            ),
            (
                "https://www.google.com/search?gl=us",
                "url must include a non-empty q parameter",
            ),
            (
                "https://www.google.com/search?q=+++&gl=us",
                "url must include a non-empty q parameter",
            ),
        ] {
            assert_eq!(
                single(task("GOOGLE", json!({ "url": url, "gl": "us" }))),
                ("payload.url".into(), message.into()),
                "{url}"
            );
        }
    }

    #[test]
    fn google_hosts_follow_the_host_pattern() {
        for host in [
            "google.com",
            "www.google.com",
            "google.co.uk",
            "www.google.com.br",
            "google.de",
        ] {
            assert!(is_google_search_host(host), "{host}");
        }
        for host in [
            "news.google.com",
            "google",
            "google.",
            "google.c",
            "google.info",
            "wwwgoogle.com",
            "google.com.",
            "googlex.com",
        ] {
            assert!(!is_google_search_host(host), "{host}");
        }
    }

    #[test]
    fn url_owned_fields_conflict_unless_identical() {
        let url = "https://www.google.com/search?q=shoes&gl=us&num=20&uule=w+CAIQ";
        let e = errs(task(
            "GOOGLE",
            json!({"url": url, "query": "boots", "location": "Paris", "pages": 3, "uule": "other"}),
        ));
        for f in ["query", "location", "pages", "uule"] {
            assert!(
                has(
                    &e,
                    &format!("payload.{f}"),
                    &format!("Cannot set both url and {f}; the URL owns this value")
                ),
                "{f}: {e:?}"
            );
        }
        let r = ok(task(
            "GOOGLE",
            json!({"url": url, "query": " shoes ", "pages": 2, "uule": "w+CAIQ"}),
        ));
        assert_eq!(r.payload["uule"], "w+CAIQ");
        assert_eq!(r.credits_to_charge, 5);
    }

    #[test]
    fn url_fields_conflict_when_the_url_itself_is_invalid() {
        let e = errs(task(
            "GOOGLE",
            json!({"url": "https://bing.com/search?q=a", "query": "a", "gl": "us"}),
        ));
        assert!(has(
            &e,
            "payload.query",
            "Cannot set both url and query; the URL owns this value"
        ));
        assert!(has(
            &e,
            "payload.url",
            "url must be a Google web search host, e.g. www.google.com or google.co.uk"
        ));
    }

    #[test]
    fn a_url_without_gl_needs_an_explicit_gl() {
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"url": "https://www.google.com/search?q=a"})
            )),
            (
                "payload.gl".into(),
                "Provide gl, or include gl= in the url so it can be derived".into()
            )
        );
        let r = ok(task(
            "GOOGLE",
            json!({"url": "https://www.google.com/search?q=a", "gl": "FR"}),
        ));
        assert_eq!(r.payload["gl"], "fr");
        assert_eq!(r.payload["country"], "FR");
    }

    #[test]
    fn an_unsupported_gl_in_the_url_is_rejected() {
        assert_eq!(
            single(task("GOOGLE", json!({"url": "https://www.google.com/search?q=a&gl=zz"}))),
            (
                "payload.gl".into(),
                "Derived country \"ZZ\" from the url's gl is not supported; pass a supported gl explicitly".into()
            )
        );
    }

    #[test]
    fn an_explicit_gl_or_country_must_agree_with_the_url() {
        let url = "https://www.google.com/search?q=a&gl=de&hl=de";
        assert_eq!(
            single(task("GOOGLE", json!({"url": url, "gl": "fr"}))),
            (
                "payload.gl".into(),
                "Cannot set both url and gl; the URL owns this value".into()
            )
        );
        assert_eq!(
            single(task("GOOGLE", json!({"url": url, "country": "FR"}))),
            (
                "payload.country".into(),
                "Cannot set both url and country; the URL owns this value".into()
            )
        );
        assert_eq!(
            single(task("GOOGLE", json!({"url": url, "hl": "en"}))),
            (
                "payload.hl".into(),
                "Cannot set both url and hl; the URL owns this value".into()
            )
        );
        assert!(parse(task("GOOGLE", json!({"url": url, "gl": "DE", "hl": "DE"}))).is_ok());
    }

    #[test]
    fn a_url_uule_keeps_its_plus_signs() {
        let r = ok(task(
            "GOOGLE",
            json!({"url": "https://www.google.com/search?q=a+b&gl=us&uule=w+CAIQICIN%3D%3D"}),
        ));
        assert_eq!(r.payload["query"], "a b");
        assert_eq!(r.payload["uule"], "w+CAIQICIN==");
    }

    #[test]
    fn parse_google_search_url_exposes_start_tbs_and_safe() {
        let p = parse_google_search_url(
            "https://www.google.com/search?q=a&start=20&tbs=qdr:d&safe=active&foo=bar",
        );
        assert_eq!(
            p,
            Ok(GoogleSearchUrl {
                query: "a".into(),
                country: None,
                language: None,
                uule: None,
                start_offset: 20,
                pages: 1,
                tbs: Some("qdr:d".into()),
                safe: Some("active".into()),
            })
        );
    }

    #[test]
    fn a_non_string_url_is_a_type_error() {
        assert_eq!(
            single(task("GOOGLE", json!({"url": 5, "gl": "us"}))),
            (
                "payload.url".into(),
                "Invalid input: expected string, received number".into()
            )
        );
    }

    // ---- normalisation -----------------------------------------------------------------------

    #[test]
    fn a_normalised_payload_validates_to_itself() {
        for (t, p) in [
            (
                TaskType::Chatgpt,
                json!({"prompt": " a ", "country": "US", "state": "ca", "legacy": true,
                       "include": {"ads": true}}),
            ),
            (TaskType::Gemini, json!({"prompt": "a", "country": "DE"})),
            (
                TaskType::Aimode,
                json!({"prompt": "a", "country": "US", "gl": "us", "hl": "EN",
                       "uule": "x", "include": {"googleGoto": true, "expandProducts": true}}),
            ),
            (
                TaskType::Google,
                json!({"query": "a", "gl": "us", "pages": 4, "location": "Austin,Texas,United States",
                       "include": {"aioverview": {"markdown": true}, "paaAioverview": true}}),
            ),
            (
                TaskType::Google,
                json!({"url": "https://google.com/search?q=x&gl=us&hl=en&num=50&uule=w+A"}),
            ),
            (
                TaskType::GoogleNews,
                json!({"query": "a", "country": "GB", "device": "ios"}),
            ),
        ] {
            let first = validate_payload(t, &p, "payload");
            let Ok((normal, credits)) = first else {
                panic!("{p} rejected: {first:?}");
            };
            assert_eq!(
                validate_payload(t, &normal, "payload"),
                Ok((normal.clone(), credits)),
                "{p}"
            );
        }
    }

    // ---- robustness --------------------------------------------------------------------------

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!({ "a": [v] });
        }
        v
    }

    #[test]
    fn odd_values_never_panic() {
        let oddities = [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e308),
            json!(-0.0),
            json!(""),
            json!(" "),
            json!("\u{0}"),
            json!("ÿ€🦀\u{202e}"),
            json!("%"),
            json!("https://www.google.com/search?q=%ZZ&uule=%E0%A4%A&gl=us"),
            json!("https://www.google.com/search?q=a&uule=%F0%9F%A6%80&gl=us"),
            json!("x".repeat(20_000)),
            json!([]),
            json!({}),
            json!({"markdown": {"deep": [1, 2]}}),
            nested(50),
        ];
        let keys = [
            "prompt",
            "query",
            "url",
            "country",
            "gl",
            "hl",
            "location",
            "uule",
            "device",
            "pages",
            "state",
            "include",
            "legacy",
            "disableWebSearch",
            "🦀",
            "",
        ];
        for t in TaskType::ALL {
            for key in keys {
                for odd in &oddities {
                    let base = if matches!(t, TaskType::Google | TaskType::GoogleNews) {
                        json!({"query": "a", "gl": "us"})
                    } else {
                        json!({"prompt": "a", "country": "US", "gl": "us"})
                    };
                    let mut payload = base.clone();
                    payload[key] = odd.clone();
                    let _ = validate_payload(t, &payload, "payload");
                    let mut payload = base;
                    payload["include"] = json!({ key: odd.clone(), "aioverview": odd.clone() });
                    let _ = validate_payload(t, &payload, "payload");
                }
            }
        }
        for key in [
            "taskType",
            "payload",
            "priority",
            "idempotencyKey",
            "webhook",
            "x",
        ] {
            for odd in &oddities {
                let mut body = task("GOOGLE", json!({"query": "a", "gl": "us"}));
                body[key] = odd.clone();
                let _ = parse(body.clone());
                body["webhook"] = json!({ "url": odd.clone() });
                let _ = parse(body);
            }
        }
        let _ = parse(nested(100));
    }

    #[test]
    fn percent_decoding_falls_back_to_the_raw_text_when_malformed() {
        assert_eq!(percent_decode("a%2Bb"), "a+b");
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%+1"), "%+1");
        assert_eq!(percent_decode("%E0%A4"), "%E0%A4");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn parse_int_mimics_javascript_for_non_negative_values() {
        assert_eq!(parse_non_negative_int("20"), Some(20));
        assert_eq!(parse_non_negative_int(" 20px"), Some(20));
        assert_eq!(parse_non_negative_int("+7"), Some(7));
        assert_eq!(parse_non_negative_int("-0"), Some(0));
        assert_eq!(parse_non_negative_int("-3"), None);
        assert_eq!(parse_non_negative_int("x"), None);
        assert_eq!(parse_non_negative_int(""), None);
        assert_eq!(parse_non_negative_int("é"), None);
    }
}
