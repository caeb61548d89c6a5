//! The shared field-error machinery of the request validators: a [`Validator`] that collects
//! every [`FieldError`] under a path prefix, the field checks several engine families share
//! (text, optional strings and booleans, `device`, `pages`, `include`, the Google family's
//! `gl`/`country`/`hl` trio, `location`/`uule`), and zod's message wording.
//!
//! The family validators (`chat.rs`, `aimode.rs`, `google.rs`, `news.rs`) add their own
//! `impl Validator` blocks on top of this one. Every message and path here is part of the wire
//! format: change none of them.

use serde_json::{Map, Value};

use super::super::countries::{self, CountryModel};
use super::super::google_url::MAX_PAGES;
use super::super::types::{FieldError, TaskType};
use super::google::{Aioverview, AioverviewOptions};
use super::payload::Device;

pub(crate) use super::super::google_url::trim_text;

/// Maximum length of `prompt` / `query` after trimming, in characters.
pub(crate) const MAX_TEXT_CHARS: usize = 10_000;
/// Maximum length of `hl`, in characters.
pub(crate) const MAX_HL_CHARS: usize = 35;

pub(super) const MSG_BLOCKED_COUNTRY: &str =
    "This model is not available in this country. Please select a different country.";
const MSG_UNKNOWN_COUNTRY: &str = "We currently do not support this country code. If you'd like us to add support, please reach out to our support team and we will implement it.";
pub(super) const MSG_PROMPT_EMPTY: &str = "Prompt cannot be empty";
pub(super) const MSG_PROMPT_LONG: &str = "Prompt is too long (max 10,000 characters)";
pub(super) const MSG_QUERY_EMPTY: &str = "Query cannot be empty";
pub(super) const MSG_QUERY_LONG: &str = "Query is too long (max 10,000 characters)";
pub(super) const MSG_PROVIDE_GL: &str = "Provide gl (or country, which is deprecated)";
const MSG_LOCATION_AND_UULE: &str = "Cannot set both location and uule; provide only one";
/// A string holding U+0000. PostgreSQL refuses NUL in `text` (and in `jsonb` strings), so one
/// would fail the write (a 500, and the whole batch with it); SQLite would keep it. Refusing it
/// here gives both stores the same answer: a 400 at the field's path.
pub(crate) const MSG_NUL: &str = "Must not contain NUL characters (U+0000)";

const AIOVERVIEW_FIELDS: &[&str] = &["markdown"];

/// The geo trio of the Google family after field-level validation.
pub(super) struct Geo {
    /// `gl` as sent (trimmed), when it was a string.
    pub(super) gl: Option<String>,
    /// `country` as sent, when it was a string.
    pub(super) country: Option<String>,
    /// `gl` / `country` passed their own checks (or were absent).
    pub(super) gl_ok: bool,
    pub(super) country_ok: bool,
    /// `hl`, trimmed and lower-cased, when valid.
    pub(super) hl: Option<String>,
}

impl Geo {
    /// The explicitly requested country (gl first), uppercase.
    pub(super) fn explicit(&self) -> Option<String> {
        self.gl
            .as_ref()
            .or(self.country.as_ref())
            .map(|s| s.to_uppercase())
    }

    /// The field that supplied `explicit()`.
    pub(super) fn explicit_field(&self) -> &'static str {
        if self.gl.is_some() { "gl" } else { "country" }
    }
}

/// A validated `include` object: the boolean flags that were sent (in the order of the
/// engine's flag list, `googleGoto` dropped) and Google's `aioverview`.
pub(super) struct Flags {
    set: Vec<(&'static str, bool)>,
    pub(super) aioverview: Option<Aioverview>,
}

impl Flags {
    /// The flag's value when it was sent.
    pub(super) fn get(&self, name: &str) -> Option<bool> {
        self.set.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

/// Collects the errors of one payload (or request) under `prefix`.
pub(super) struct Validator<'a> {
    pub(super) prefix: &'a str,
    pub(super) errors: Vec<FieldError>,
}

impl Validator<'_> {
    pub(super) fn path(&self, field: &str) -> String {
        join(self.prefix, field)
    }

    pub(super) fn err(&mut self, field: &str, message: impl Into<String>) {
        let path = self.path(field);
        self.errors.push(FieldError::new(path, message));
    }

    pub(super) fn unknown(&mut self, obj: &Map<String, Value>, allowed: &[&str]) {
        let base = self.prefix.to_string();
        unknown_keys(&mut self.errors, obj, allowed, &base);
    }

    /// `prompt` (LLM engines and AI Mode): required.
    pub(super) fn prompt(&mut self, obj: &Map<String, Value>) -> Option<String> {
        self.text(obj, "prompt", MSG_PROMPT_EMPTY, MSG_PROMPT_LONG)
    }

    /// A required trimmed text of 1..=10,000 characters.
    pub(super) fn text(
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
    pub(super) fn opt_str<'v>(
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
    pub(super) fn opt_bool(
        &mut self,
        value: Option<&Value>,
        path: &str,
    ) -> Result<Option<bool>, ()> {
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
    pub(super) fn device(&mut self, obj: &Map<String, Value>, allowed: &[&str]) -> Option<Device> {
        match obj.get("device") {
            None => Some(Device::Desktop),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Device::parse(s),
            Some(_) => {
                self.err("device", one_of(allowed));
                None
            }
        }
    }

    /// Optional `pages` (1..=10). `Ok(None)` when absent.
    pub(super) fn pages(&mut self, obj: &Map<String, Value>) -> Result<Option<i64>, ()> {
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
    /// a boolean or an options object). Returns the flags that were sent (without
    /// `googleGoto`), or `None` when absent. `Err(())` on any error.
    pub(super) fn include(
        &mut self,
        obj: &Map<String, Value>,
        flags: &[&'static str],
    ) -> Result<Option<Flags>, ()> {
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
        let mut out = Flags {
            set: Vec::new(),
            aioverview: None,
        };
        for flag in flags {
            let path = format!("include.{flag}");
            if *flag == "aioverview" {
                match inc.get("aioverview") {
                    None => {}
                    Some(Value::Bool(b)) => out.aioverview = Some(Aioverview::Flag(*b)),
                    Some(Value::Object(aio)) => {
                        let aio_base = self.path(&path);
                        unknown_keys(&mut self.errors, aio, AIOVERVIEW_FIELDS, &aio_base);
                        let markdown = self
                            .opt_bool(aio.get("markdown"), "include.aioverview.markdown")
                            .ok()
                            .flatten();
                        out.aioverview = Some(Aioverview::Options(AioverviewOptions { markdown }));
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
                out.set.push((flag, b));
            }
        }
        if self.errors.len() == before {
            Ok(Some(out))
        } else {
            Err(())
        }
    }

    /// Field-level checks of `country`, `gl` and `hl` for the Google family, plus the
    /// country/gl disagreement rule. Presence is checked by the caller.
    pub(super) fn geo_fields(&mut self, obj: &Map<String, Value>, model: CountryModel) -> Geo {
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
    pub(super) fn location_uule(
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
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub(super) fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else if field.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// One `Unrecognized key "k"` error per key of `obj` outside `allowed`, at `base.k`.
pub(crate) fn unknown_keys(
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

pub(crate) fn expected(ty: &str, got: Option<&Value>) -> String {
    format!("Invalid input: expected {ty}, received {}", type_name(got))
}

pub(super) fn too_small_string(min: usize) -> String {
    format!("Too small: expected string to have >={min} characters")
}

pub(super) fn too_big_string(max: usize) -> String {
    format!("Too big: expected string to have <={max} characters")
}

fn one_of(allowed: &[&str]) -> String {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    format!("Invalid option: expected one of {}", list.join("|"))
}

pub(super) fn task_type_message() -> String {
    let names: Vec<&str> = TaskType::ALL.iter().map(|t| t.as_str()).collect();
    one_of(&names)
}

/// An integer in `min..=max`; any JSON number with an integral value counts as an integer.
pub(super) fn integer_in_range(value: &Value, min: i64, max: i64) -> Result<i64, String> {
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
pub(super) fn country_problem(code: &str, model: CountryModel) -> Option<&'static str> {
    if model.is_blocked(code) {
        Some(MSG_BLOCKED_COUNTRY)
    } else if !countries::is_known_country(code) {
        Some(MSG_UNKNOWN_COUNTRY)
    } else {
        None
    }
}

/// Whether `s` holds a NUL character (see [`MSG_NUL`]).
pub(crate) fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// Adds a [`MSG_NUL`] error for every string under `value` (at `path`, dotted; array items by
/// index) that holds a NUL, unless that path already has an error: a field already refused for
/// another reason (an unknown key, a wrong option) keeps its more specific message. Walking the
/// whole value, rather than checking each text field, also covers fields added later.
pub(super) fn nul_errors(errors: &mut Vec<FieldError>, value: &Value, path: &str) {
    match value {
        Value::String(s) if has_nul(s) && !errors.iter().any(|e| e.field == path) => {
            errors.push(FieldError::new(path, MSG_NUL));
        }
        Value::Object(obj) => {
            for (key, v) in obj {
                nul_errors(errors, v, &join(path, key));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                nul_errors(errors, v, &join(path, &i.to_string()));
            }
        }
        _ => {}
    }
}

/// Whether `s` has more than `max` characters (counted as `char`s).
pub(super) fn longer_than(s: &str, max: usize) -> bool {
    s.chars().nth(max).is_some()
}
