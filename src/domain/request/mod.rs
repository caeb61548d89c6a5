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
//! - No string may hold a NUL (U+0000): PostgreSQL cannot store one, so both stores refuse it
//!   alike, at the field's path (`idempotencyKey`, `webhook.url`, `payload.prompt`, …), unless
//!   that field already has another error.
//!
//! The normalised payload is idempotent: validating it again yields the same payload and price.
//! It carries the defaults (`device: "desktop"`, `pages: 1`), trimmed text, `gl` lowercase plus
//! `country` uppercase for the Google family, and in Google `url` mode the values derived from
//!
//! Layout: this file holds the request envelope (`taskType`, `payload`, `priority`,
//! `idempotencyKey`, `webhook`) and the dispatch by task type; `validator.rs` the shared
//! field-error machinery; one file per engine family (`chat.rs`, `aimode.rs`, `google.rs`,
//! `news.rs`) with its payload's validation and typed form; `payload.rs` the typed [`Payload`]
//! and its stored JSON; `pricing.rs` the credits. Their public types are re-exported here. The
//! Google URL parser and the percent-decoder are in `domain::google_url`. Tests sit beside
//! them in `*_tests.rs` files (`tests.rs` for the envelope).

use serde_json::Value;

use super::types::{FieldError, TaskType};
use validator::{
    MSG_NUL, Validator, expected, has_nul, integer_in_range, longer_than, nul_errors,
    task_type_message, too_big_string, too_small_string, trim_text, unknown_keys,
};

mod aimode;
mod chat;
mod google;
mod news;
mod payload;
mod pricing;
mod validator;

pub(crate) use chat::ChatEngine;
pub(crate) use google::Aioverview;
pub(crate) use payload::Payload;
pub(crate) use pricing::{
    MAX_PRODUCT_CLUSTERS, SYNC_SURCHARGE, max_add_ons_stored, max_add_ons_text,
};
/// zod's wording, shared with the goto body (`domain::goto`).
pub(crate) use validator::{expected as expected_message, unknown_keys as unknown_key_errors};

use super::google_url::MSG_BAD_HTTP_URL;

/// Default task priority.
pub(crate) const DEFAULT_PRIORITY: u8 = 1;
/// Lowest and highest priority.
pub(crate) const MIN_PRIORITY: u8 = 1;
pub(crate) const MAX_PRIORITY: u8 = 10;
/// Maximum length of `idempotencyKey`, in characters.
pub(crate) const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;
/// Maximum length of `webhook.url`, in characters.
pub(crate) const MAX_WEBHOOK_URL_CHARS: usize = 2048;

const TOP_LEVEL_FIELDS: &[&str] = &[
    "taskType",
    "payload",
    "priority",
    "idempotencyKey",
    "webhook",
];
const WEBHOOK_FIELDS: &[&str] = &["url"];

/// One validated task request, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRequest {
    pub(crate) task_type: TaskType,
    /// The normalised payload in its stored form (see the module docs): the typed [`Payload`]
    /// turned into JSON by [`Payload::into_stored`] (read it back with
    /// [`Payload::from_stored`]).
    pub(crate) payload: Value,
    /// 1..=10, default 1.
    pub(crate) priority: u8,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) webhook_url: Option<String>,
    /// Async price: engine base + add-ons (no sync surcharge).
    pub(crate) credits_to_charge: u32,
}

/// Parses and validates one task request. `value` is one already-parsed JSON value (the request
/// body, or one batch item). On error returns every invalid field, with paths like `taskType`,
/// `priority`, `payload.country`, `payload.include.html`, `webhook.url`.
pub(crate) fn parse_task_request(value: &Value) -> Result<TaskRequest, Vec<FieldError>> {
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
            } else if has_nul(s) {
                errors.push(FieldError::new("idempotencyKey", MSG_NUL));
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
                payload: payload.into_stored(),
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
/// prefixed with `prefix` (e.g. `"payload"`; `""` for a sync body). Returns the typed payload
/// and its async price in credits.
pub(crate) fn validate_payload(
    task_type: TaskType,
    payload: &Value,
    prefix: &str,
) -> Result<(Payload, u32), Vec<FieldError>> {
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
    let result = match (ChatEngine::of(task_type), task_type) {
        (Some(engine), _) => v.chat(obj, engine),
        (None, TaskType::Aimode) => v.aimode(obj),
        (None, TaskType::Google) => v.google(obj),
        (None, _) => v.google_news(obj),
    };
    nul_errors(&mut v.errors, payload, prefix);
    match result {
        Some(ok) if v.errors.is_empty() => Ok(ok),
        _ => Err(v.errors),
    }
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
    if has_nul(trimmed) {
        errors.push(FieldError::new("webhook.url", MSG_NUL));
        return None;
    }
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

#[cfg(test)]
mod chat_tests;
#[cfg(test)]
mod google_tests;
#[cfg(test)]
mod pricing_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod validator_tests;
